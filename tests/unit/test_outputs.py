"""streamer.outputs: the stream key (its sources, and keys that cannot be one), the output plans,
the state directory."""

import dataclasses
import os
import threading

import pytest

from streamer.config import Config, StreamSettings
from streamer.errors import ConfigError
from streamer.outputs import YOUTUBE_PRIMARY, plan_outputs, read_stream_key, state_directory
from streamer.stream_config import CliOverrides, apply_overrides


def test_stream_key_sources(tmp_path):
    config = Config()
    assert read_stream_key(config, {}) == ""
    assert read_stream_key(config, {"CHIPLOFI_STREAM_KEY": " abc-123 \n"}) == "abc-123"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    with_file = dataclasses.replace(config, stream=dataclasses.replace(config.stream, key_file=str(key_file)))
    assert read_stream_key(with_file, {}) == "from-file"
    assert read_stream_key(with_file, {"CHIPLOFI_STREAM_KEY": "env-wins"}) == "env-wins"
    key_file.write_text("")
    with pytest.raises(ConfigError, match="^stream.key_file:"):
        read_stream_key(with_file, {})
    missing = dataclasses.replace(config, stream=dataclasses.replace(config.stream, key_file=str(tmp_path / "no")))
    with pytest.raises(ConfigError, match="^stream.key_file:"):
        read_stream_key(missing, {})
    (tmp_path / "stream-key").write_text("credential\n")
    assert read_stream_key(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "credential"


KEY = "abcd-efgh_ijkl.mnop~qrst"


BAD_KEYS = {  # what a key holds → what the one-line error says
    KEY + "\n# primary channel": "more than one line",
    "abcd\refgh": "more than one line", "abcd\nefgh": "more than one line",
    "abcd efgh": "a space", "abcd\tefgh": "a space",
    "abcd?backup=1": "punctuation", "abcd;rm -rf ~": "a space", "ab$(id)cd": "punctuation",
    "abcd'efgh": "punctuation", "abcd/efgh": "punctuation", "clé-du-flux": "not ASCII",
    "abc": "3 characters long", "k" * 10_000: "10000 characters long",
}


@pytest.mark.parametrize("key", list(BAD_KEYS))
def test_a_stream_key_that_cannot_be_one_is_refused_naming_its_source_never_its_value(tmp_path, key):
    config = Config()
    key_file = tmp_path / "stream.key"
    key_file.write_text(key + "\n", encoding="utf-8")
    with_file = dataclasses.replace(config, stream=dataclasses.replace(config.stream, key_file=str(key_file)))
    (tmp_path / "stream-key").write_text(key, encoding="utf-8")
    for cfg, environ, source in ((config, {"CHIPLOFI_STREAM_KEY": key}, "CHIPLOFI_STREAM_KEY: "),
                                 (with_file, {}, f"stream.key_file ({key_file}): "),
                                 (config, {"CREDENTIALS_DIRECTORY": str(tmp_path)}, "systemd credential stream-key")):
        with pytest.raises(ConfigError) as caught:
            read_stream_key(cfg, environ)
        message = str(caught.value)
        assert message.startswith(source) and BAD_KEYS[key] in message and "\n" not in message
        after_source = message[len(source):]
        assert not [key[i:i + 5] for i in range(len(key) - 4) if key[i:i + 5] in after_source], message


def test_a_good_key_passes_with_blanks_around_it(tmp_path):
    assert read_stream_key(Config(), {"CHIPLOFI_STREAM_KEY": f" {KEY}\r\n"}) == KEY


def test_output_plans():
    config = Config()
    local = plan_outputs(config, "")
    assert local.record and not local.ffmpeg_urls and not local.speakers
    youtube = plan_outputs(config, "k")
    assert youtube.record and youtube.ffmpeg_urls == [YOUTUBE_PRIMARY]
    mixed = apply_overrides(config, CliOverrides(outputs=("rtmp://h/app", "x.wav", "y.mkv", "speakers", "null")))
    plan = plan_outputs(mixed, "")
    assert plan.ffmpeg_urls == ["rtmp://h/app", "y.mkv"] and [p.name for p in plan.wav_files] == ["x.wav"]
    assert plan.speakers and plan.null and not plan.record
    needs_key = apply_overrides(config, CliOverrides(outputs=("rtmp://h/app/{key}",)))
    with pytest.raises(ConfigError, match="stream key"):
        plan_outputs(needs_key, "")


def test_state_directory(tmp_path):
    assert state_directory(Config(), {"STATE_DIRECTORY": f"{tmp_path}:/other"}) == tmp_path
    explicit = dataclasses.replace(Config(), stream=StreamSettings(state_dir=str(tmp_path / "s")))
    assert state_directory(explicit, {"STATE_DIRECTORY": "/x"}) == tmp_path / "s"


def test_a_key_file_that_is_a_fifo_or_endless_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "key-fifo")
    (tmp_path / "key-zero").symlink_to("/dev/zero")
    for name in ("key-fifo", "key-zero"):
        config = dataclasses.replace(Config(), stream=dataclasses.replace(Config().stream,
                                                                          key_file=str(tmp_path / name)))
        outcome = []

        def read(config, outcome):  # bound per run: a blocked reader must not see the next run's config
            try:
                read_stream_key(config, {})
            except ConfigError as exc:
                outcome.append(str(exc))
        reader = threading.Thread(target=read, args=(config, outcome), daemon=True)
        reader.start()
        reader.join(10)  # a blocked open would never return
        assert outcome and outcome[0].startswith("stream.key_file: ") and "not a regular file" in outcome[0]
