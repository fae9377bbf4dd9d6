"""Config loading: defaults, overrides, and errors that name the key and what is accepted."""

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import get_type_hints

import pytest

from streamer.cli import CONFIG_EXAMPLE_HEADER
from streamer.config import Config, RenderSettings, example_toml, load_config, settings_from_mapping
from streamer.errors import ConfigError, InputFileError


def test_no_file_gives_defaults():
    assert load_config(None) == Config()


def test_partial_tables_override_only_their_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[render]\nswing = 0.6\n[render.bass]\npan = -0.5\n[effects]\nhiss_db = -70\n")
    config = load_config(path)
    assert config.render.swing == 0.6
    assert config.render.bass.pan == -0.5
    assert config.render.bass.preset == RenderSettings().bass.preset  # untouched keys keep defaults
    assert config.effects.hiss_db == -70.0 and isinstance(config.effects.hiss_db, float)


@pytest.mark.parametrize("table,key,fragment", [
    ({"render": {"swing": 0.9}}, "render.swing", "from 0.5 to 0.75"),
    ({"render": {"swing": "lots"}}, "render.swing", "a number"),
    ({"render": {"sample_rate": 22050}}, "render.sample_rate", "one of 44100, 48000"),
    ({"render": {"lead": {"preset": "piano"}}}, "render.lead.preset", "'pulse12'"),
    ({"render": {"lead": "pulse12"}}, "render.lead", "a table"),
    ({"render": {"swng": 0.6}}, "render.swng", "unknown key"),
    ({"effects": {"enabled": "yes"}}, "effects.enabled", "true or false"),
    ({"effects": {"bitcrush_bits": 4.5}}, "effects.bitcrush_bits", "an integer"),
    ({"effects": {"hiss_db": float("nan")}}, "effects.hiss_db", "a number"),
    ({"colour": "blue"}, "colour", "unknown key"),
])
def test_bad_values_name_the_key(table, key, fragment):
    with pytest.raises(ConfigError) as error:
        settings_from_mapping(Config, table)
    message = str(error.value)
    assert message.startswith(f"{key}:") and fragment in message


def _all_fields(cls, prefix=""):
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        yield prefix + field.name, field
        if dataclasses.is_dataclass(hints[field.name]):
            yield from _all_fields(hints[field.name], f"{prefix}{field.name}.")


def test_every_setting_has_help_and_a_valid_default():
    keys = dict(_all_fields(Config))
    assert "effects.hiss_db" in keys and "render.lead.pan" in keys
    missing_help = [key for key, field in keys.items() if not field.metadata.get("help")]
    assert not missing_help
    # Round trip: the defaults written out as a table validate back to the same settings.
    assert settings_from_mapping(Config, dataclasses.asdict(Config())) == Config()


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[render\nswing = ")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(broken)


def test_shipped_example_documents_every_key_with_its_default():
    shipped = (Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml").read_text()
    assert shipped == CONFIG_EXAMPLE_HEADER + example_toml(), "regenerate: chiplofi config example"
    assert settings_from_mapping(Config, tomllib.loads(shipped)) == Config()
    for key in dict(_all_fields(Config)):
        name = key.rsplit('.', 1)[-1]
        assert f"\n{name} = " in shipped or f"\n# {name} =   (unset" in shipped or f"[{key}]" in shipped, key
    printed = subprocess.run([sys.executable, "-m", "streamer.cli", "config", "example"],
                             capture_output=True, text=True, check=True).stdout
    assert printed == shipped


def test_video_size_and_fps_replace_the_presets_and_valid_sizes_pass():
    from streamer.config import VideoSettings
    from streamer.video import preset_of
    from streamer.video_files import check_video_settings

    still = preset_of(VideoSettings(preset="still"))
    assert (still.width, still.height, still.fps, still.video_kbps) == (1280, 720, 5, 800)
    upright = preset_of(VideoSettings(preset="still", size="720x1280", fps=10, video_kbps=900))
    assert (upright.width, upright.height, upright.fps, upright.gop, upright.video_kbps) == (720, 1280, 10, 20, 900)
    for size in ("128x72", "72x128", "3840x2160", "2160x3840", "320x180"):
        check_video_settings(VideoSettings(size=size))
    for size in ("1281x720", "1280x720\n", "1280×720", "64x64", "4096x2160", "720p"):
        with pytest.raises(ConfigError, match=r"^video\.size: expected WIDTHxHEIGHT"):
            check_video_settings(VideoSettings(size=size))
