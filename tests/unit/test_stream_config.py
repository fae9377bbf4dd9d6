"""streamer.stream_config: the config `chiplofi stream` runs with — file, environment, flags —
and the checks across keys, each naming its key."""

import pytest

from streamer.config import load_config
from streamer.errors import ConfigError
from streamer.stream_config import CliOverrides, check_config, load_stream_config


def test_env_overrides_and_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[stream]\nbuffer_seconds = 20\noutputs = ["null"]\n[video]\npreset = "still"\n')
    env = {"CHIPLOFI_STREAM__BUFFER_SECONDS": "40", "CHIPLOFI_VIDEO__AUDIO_KBPS": "160",
           "CHIPLOFI_STREAM_KEY": "not-a-config-key"}
    config = load_stream_config(path, CliOverrides(speed=0.0, outputs=("a.wav",)), env)
    assert config.stream.buffer_seconds == 40.0 and config.video.audio_kbps == 160
    assert config.video.preset == "still" and config.stream.speed == 0.0 and config.stream.outputs == ("a.wav",)


@pytest.mark.parametrize("env,key", [
    ({"CHIPLOFI_STREAM__BUFFER_SECONDS": "1"}, "stream.buffer_seconds"),
    ({"CHIPLOFI_STREAM__SPEEED": "1"}, "stream.speeed"),
    ({"CHIPLOFI_VIDEO__PRESET": "4k"}, "video.preset"),
    ({"CHIPLOFI_STREAM__OUTPUTS": "3"}, "stream.outputs"),
])
def test_bad_env_overrides_name_the_key(env, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        load_stream_config(None, CliOverrides(), env)


@pytest.mark.parametrize("table,key", [
    ({"stream": {"ready_seconds": 50, "buffer_seconds": 30}}, "stream.ready_seconds"),
    ({"status": {"addr": "localhost"}}, "status.addr"),
    ({"stream": {"outputs": ["http://x/y"]}}, "stream.outputs"),
    ({"stream": {"outputs": ["out.mp3"]}}, "stream.outputs"),
    ({"video": {"background": "blue"}}, "video.background"),
    ({"video": {"font": "/no/such/font.ttf"}}, "video.font"),
])
def test_cross_checks_name_the_key(tmp_path, table, key):
    path = tmp_path / "c.toml"
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=f"^{key}:"):
        load_stream_config(path, CliOverrides(), {})


def test_default_config_checks_out():
    check_config(load_config(None))


@pytest.mark.parametrize("name", ["x.flv", "x.wav"])
def test_a_file_output_in_a_missing_directory_is_refused_naming_it(tmp_path, capsys, name):
    from streamer.cli import main

    missing = tmp_path / "missing"
    output = missing / name
    assert main(["stream", "--output", str(output), "--output", "null"]) == 2
    assert f"stream.outputs: {output}: the directory {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()  # nothing created
    missing.mkdir()
    assert load_stream_config(None, CliOverrides(outputs=(str(output),)), {}).stream.outputs == (str(output),)
