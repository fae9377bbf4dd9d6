"""`chiplofi render`, `demo` and `soundfont build` as a user runs them: a real process, real files."""

import stat
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

import soundfonts

pytestmark = pytest.mark.integration


def chiplofi(*args: str, umask: int = -1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], capture_output=True, text=True,
                          timeout=300, umask=umask)


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
        return wav.getframerate(), frames.astype(np.float64) / 32768.0


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """A 12-second, four-part song in the shape of an ordinary multi-track file."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=80.0)
    beat = 0.75
    piano = pretty_midi.Instrument(program=4, name="Rhodes")
    flute = pretty_midi.Instrument(program=73, name="Flute")
    bass = pretty_midi.Instrument(program=33, name="Bass")
    kit = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
    for bar in range(4):
        t = bar * 4 * beat
        for pitch in (60, 64, 67, 71):
            piano.notes.append(pretty_midi.Note(70, pitch, t, t + 3.5 * beat))
        bass.notes.append(pretty_midi.Note(100, 36, t, t + 2 * beat))
        for i in range(8):
            flute.notes.append(pretty_midi.Note(90, 72 + (i * 3) % 12, t + i * beat / 2, t + (i + 1) * beat / 2))
            kit.notes.append(pretty_midi.Note(90, (36, 42, 38, 42)[i % 4], t + i * beat / 2, t + i * beat / 2 + 0.1))
    midi.instruments += [piano, flute, bass, kit]
    path = tmp_path_factory.mktemp("midi") / "song.mid"
    midi.write(str(path))
    return path


def test_render_writes_a_wav_of_the_song(song, tmp_path):
    out = tmp_path / "song.wav"
    result = chiplofi("render", str(song), "-o", str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    rate, audio = read_wav(out)
    assert rate == 44100
    assert 12.0 <= len(audio) / rate <= 12.0 + 2.0  # the music, then a short release tail
    assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-4  # effects keep the peak under −1 dBFS
    for second in range(11):  # sound all the way through
        assert np.sqrt(np.mean(audio[second * rate:(second + 1) * rate] ** 2)) > 0.01
    assert "s/12 s" in result.stderr or "12/12" in result.stderr  # a progress bar for a 12 s song


def test_render_is_reproducible_and_effects_change_it(song, tmp_path):
    first, second, dry = tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "dry.wav"
    for out, extra in ((first, []), (second, []), (dry, ["--no-effects"])):
        assert chiplofi("render", str(song), "-o", str(out), "--seed", "5", "-q", *extra).returncode == 0
    assert first.read_bytes() == second.read_bytes()
    _, wet_audio = read_wav(first)
    _, dry_audio = read_wav(dry)
    assert not np.allclose(wet_audio[:44100], dry_audio[:44100], atol=1e-3)


@pytest.mark.parametrize("case", ["missing", "corrupt", "empty", "unwritable", "bad-config"])
def test_render_errors_are_one_line_naming_the_file(case, song, tmp_path):
    source, out, extra = song, tmp_path / "out.wav", []
    if case == "missing":
        source = tmp_path / "nothere.mid"
    elif case == "corrupt":
        source = tmp_path / "corrupt.mid"
        source.write_bytes(song.read_bytes()[:40])
    elif case == "empty":
        source = tmp_path / "empty.mid"
        source.write_bytes(b"")
    elif case == "unwritable":
        out = tmp_path / "no" / "such" / "dir" / "out.wav"
    else:
        config = tmp_path / "bad.toml"
        config.write_text("[effects]\nhiss_db = 'loud'\n")
        extra = ["--config", str(config)]
    result = chiplofi("render", str(source), "-o", str(out), *extra)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    named = {"unwritable": str(out), "bad-config": "effects.hiss_db"}.get(case, source.name)
    assert named in lines[0]
    if case == "empty":  # said as it is, not as a parser's EOFError
        assert lines[0] == f"chiplofi: error: {source}: the file is empty (0 bytes), not a MIDI file"
    assert not out.exists()


def test_soundfont_build_command_reproduces_the_shipped_file(tmp_path):
    out = tmp_path / "rebuilt.sf2"
    result = chiplofi("soundfont", "build", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == soundfonts.SOUNDFONT_PATH.read_bytes()


def test_demo_says_where_the_file_is(tmp_path):
    out = tmp_path / "demo.wav"
    result = chiplofi("demo", "-o", str(out), "--bars", "4")
    assert result.returncode == 0, result.stderr
    assert str(out.resolve()) in result.stdout
    rate, audio = read_wav(out)
    assert len(audio) / rate == pytest.approx(4 * 3.0 + 1.5, abs=0.01)  # 4 bars at 80 BPM + tail


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_follow_the_umask(song, tmp_path, umask, mode):
    demo, rendered = tmp_path / "demo.wav", tmp_path / "song.wav"
    assert chiplofi("demo", "-o", str(demo), "--bars", "1", umask=umask).returncode == 0
    assert chiplofi("render", str(song), "-o", str(rendered), "--no-effects", umask=umask).returncode == 0
    assert [stat.S_IMODE(p.stat().st_mode) for p in (demo, rendered)] == [mode, mode]


@pytest.mark.parametrize("args", [["--help"], ["render", "--help"], ["soundfont", "build", "--help"]])
def test_help_explains(args):
    result = chiplofi(*args)
    assert result.returncode == 0 and "usage: chiplofi" in result.stdout
