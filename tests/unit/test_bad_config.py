"""Every invalid value of every config key is a ConfigError naming that key — never a traceback.

The keys and what each accepts come from the settings metadata in streamer.config (the same
metadata the validator reads; testkit.config_cases walks it): for each leaf key, hypothesis draws
values of the wrong type, outside `min`/`max`, or outside `choices`; keys whose format only the stream checks (colours,
`status.addr`, `stream.outputs`) go through `load_stream_config`. Arbitrary TOML documents and
`CHIPLOFI_*` environment variables may be valid or not, but never raise anything else.
`tests/integration/test_bad_input.py` runs `chiplofi config check` on a sample of these.
"""

from __future__ import annotations

import re
from typing import Any, get_origin

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from streamer.config import Config, load_config, settings_from_mapping
from streamer.errors import ConfigError
from streamer.stream_config import CliOverrides, load_stream_config
from testkit.config_cases import (
    LEAVES,
    TABLES,
    dotted,
    invalid_values,
    leaf_and_invalid_value,
    nest,
    toml_document,
    toml_scalars,
    toml_values,
)


def _holds_items(path: tuple[str | int, ...]) -> bool:
    """[schedule.mood]-like tables take any name; [[schedule.program]] is an array."""
    return any(t[:-1] == path and t[-1] in ("fuzzed", 0) for t in TABLES)


def _merge_into(document: dict[str, Any], addition: dict[str, Any]) -> None:
    for key, value in addition.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            _merge_into(document[key], value)
        else:
            document[key] = value

def assert_names(error: ConfigError, key: str) -> None:
    message = str(error)
    assert message.startswith(f"{key}: "), message
    assert "\n" not in message and "Traceback" not in message, message


def test_the_walk_covers_every_key():
    keys = {leaf.key for leaf in LEAVES}
    assert {"render.lead.pan", "effects.hiss_db", "stream.outputs", "video.preset", "status.max_clients"} <= keys
    assert len(keys) == len(LEAVES) > 60


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: leaf.key)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_every_invalid_value_of_every_key_names_the_key(leaf, data):
    value = data.draw(invalid_values(leaf))
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping(Config, nest(leaf.path, value))
    assert_names(raised.value, leaf.key)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(TABLES), toml_scalars)
def test_a_table_given_a_value_names_the_table(table, value):
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping(Config, nest(table, value))
    assert_names(raised.value, dotted(table))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([()] + [t for t in TABLES if not _holds_items(t)]), st.text(min_size=1, max_size=20),
       toml_values)
def test_an_unknown_key_is_named(table, name, value):
    known = {leaf.path for leaf in LEAVES} | set(TABLES)
    if (*table, name) in known:
        return
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping(Config, nest((*table, name), value))
    assert_names(raised.value, dotted((*table, name if name.isprintable() else repr(name))))


def size_is_valid(width: int, height: int) -> bool:
    """video.size's rule, restated: even sides, 128x72 to 3840x2160 either way up."""
    long_side, short_side = max(width, height), min(width, height)
    return (width % 2 == 0 and height % 2 == 0 and 128 <= long_side <= 3840 and 72 <= short_side <= 2160)


# Keys whose strings only the stream checks: (key, a strategy of values it must reject).
HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
STREAM_CHECKED = [
    *[(f"video.{name}", st.text(max_size=12).filter(lambda v: not HEX.match(v)))
      for name in ("background", "wave_colour", "text_colour")],
    ("video.font", st.text(min_size=1, max_size=20).map(lambda v: f"/nonexistent/{v}.ttf")),
    ("video.size", st.one_of(
        st.text(min_size=1, max_size=12).filter(lambda v: not re.fullmatch(r"[0-9]{2,4}x[0-9]{2,4}", v)),
        st.tuples(st.integers(10, 9999), st.integers(10, 9999)).filter(lambda wh: not size_is_valid(*wh))
        .map(lambda wh: f"{wh[0]}x{wh[1]}"))),
    ("status.addr", st.one_of(st.text(max_size=20).filter(lambda v: ":" not in v),
                              st.integers(65536, 10**9).map(lambda p: f"127.0.0.1:{p}"),
                              st.text(max_size=8).filter(lambda v: not v.isdigit()).map(lambda p: f"localhost:{p}"))),
    ("stream.outputs", st.one_of(
        st.from_regex(r"\A(http|udp|srt|file)://[a-z0-9./]{0,12}\Z").map(lambda v: [v]),
        st.from_regex(r"\A[a-z0-9_]{1,10}\.(mp3|ogg|txt|avi|)\Z").map(lambda v: [v]))),
]


@pytest.mark.parametrize("key,values", STREAM_CHECKED, ids=[key for key, _ in STREAM_CHECKED])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_formats_the_stream_checks_name_their_key(tmp_path, key, values, data):
    value = data.draw(values)
    path = tmp_path / "c.toml"
    path.write_text(toml_document(nest(tuple(key.split(".")), value)), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_stream_config(path, CliOverrides(), {})
    assert_names(raised.value, key)


def test_ready_seconds_above_the_buffer_names_the_key():
    with pytest.raises(ConfigError) as raised:
        load_stream_config(None, CliOverrides(), {"CHIPLOFI_STREAM__BUFFER_SECONDS": "10",
                                                  "CHIPLOFI_STREAM__READY_SECONDS": "20"})
    assert_names(raised.value, "stream.ready_seconds")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leaf_and_invalid_value())
def test_invalid_values_in_a_toml_file_name_the_key(tmp_path, case):
    leaf, value = case
    path = tmp_path / "c.toml"
    path.write_text(toml_document(nest(leaf.path, value)), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert_names(raised.value, leaf.key)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(TABLES + [leaf.path for leaf in LEAVES]), toml_values), max_size=6))
@example([(("schedule", "mood"), {"\n": False})])  # a named table's name with a newline: quoted in its line
def test_any_toml_document_is_a_config_or_a_config_error(tmp_path, entries):
    document: dict[str, Any] = {}
    for path, value in entries:
        _merge_into(document, nest(path, value))
    path = tmp_path / "c.toml"
    path.write_text(toml_document(document), encoding="utf-8")
    try:
        load_stream_config(path, CliOverrides(), {})
    except ConfigError as error:  # every bad key on a line of its own, each naming it
        lines = str(error).split("\n")  # not splitlines(): a key may hold U+0085 or U+2028
        assert lines and all(line.split(": ", 1)[0] and ": " in line for line in lines), str(error)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(LEAVES), st.text(max_size=30))
def test_any_environment_override_is_a_config_or_an_error_naming_the_key(leaf, raw):
    if any(isinstance(part, int) for part in leaf.path):  # arrays of tables have no variable
        return
    name = "CHIPLOFI_" + "__".join(str(part).upper() for part in leaf.path)
    try:
        config = load_stream_config(None, CliOverrides(), {name: raw})
    except ConfigError as error:
        message = str(error)
        assert message.startswith((f"{leaf.key}: ", f"{name}: ")) or _cross_key(message), message
        assert "\n" not in message, message
    else:
        assert isinstance(config, Config)


def _cross_key(message: str) -> bool:
    """A valid value can break a check across keys (ready_seconds ≤ buffer_seconds)."""
    return message.startswith("stream.ready_seconds: ")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=0, max_size=12), min_size=2, max_size=4),
       st.text(max_size=10))
def test_malformed_environment_names_are_named(parts, raw):
    name = "CHIPLOFI_" + "__".join(parts)
    try:
        load_stream_config(None, CliOverrides(), {name: raw})
    except ConfigError as error:  # every bad key on a line of its own, each naming it
        lines = str(error).split("\n")  # not splitlines(): a key may hold U+0085 or U+2028
        assert lines and all(line.split(": ", 1)[0] and ": " in line for line in lines), str(error)
        split = name[len("CHIPLOFI_"):].split("__")  # how the loader reads the name
        assert str(error).split(":")[0] in (name, *(_dotted(split, n) for n in range(1, len(split) + 1))), str(error)


def _dotted(parts: list[str], n: int) -> str:
    return ".".join(part.lower() for part in parts[:n])


def test_an_unreadable_file_and_bad_toml_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[render\nswing = \n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(bad)
    assert str(raised.value).startswith(f"{bad}: ")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError) as raised:
        load_config(binary)
    assert str(raised.value).startswith(f"{binary}: ")


def test_nothing_here_is_left_unchecked():
    """A new kind of setting needs a strategy above: fail loudly rather than test nothing."""
    for leaf in LEAVES:
        assert leaf.kind in (bool, int, float, str) or get_origin(leaf.kind) is tuple, leaf


def test_config_check_reports_every_bad_key_one_a_line(tmp_path, capsys):
    from streamer.cli import main

    path = tmp_path / "bad.toml"
    path.write_text('[stream]\nspeed = "fast"\nbuffer_seconds = 8\nready_seconds = 9\nspeeed = 1\n'
                    '[video]\npreset = "4k"\n[status]\naddr = "localhost"\n', encoding="utf-8")
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    keys = [line.removeprefix("chiplofi: config error: ").split(":", 1)[0] for line in lines]
    assert keys == ["stream.speed", "stream.speeed", "video.preset"]  # the values, all at once
    # Once the values are right, the checks across keys report all of theirs too.
    path.write_text('[stream]\nbuffer_seconds = 8\nready_seconds = 9\noutputs = ["x.mp3", "rtmp://h/a"]\n'
                    '[status]\naddr = "localhost"\n', encoding="utf-8")
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == ["stream.ready_seconds", "status.addr", "stream.outputs"]
