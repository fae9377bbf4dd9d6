"""generate: MIDI files with the four named instruments, tempo, key, index.json; determinism; CLI."""

from __future__ import annotations

import argparse
import json

import pretty_midi
import pytest

from models.commands import add_model_commands
from models.debug import write_debug_checkpoint
from models.errors import ModelError
from models.generate import write_tracks


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_debug_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_tracks_index_and_determinism(checkpoint, tmp_path):
    paths = write_tracks(checkpoint, 0.5, 42, tmp_path / "a")
    again = write_tracks(checkpoint, 0.5, 42, tmp_path / "b")
    assert len(paths) == 1
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert (tmp_path / "a" / "index.json").read_bytes() == (tmp_path / "b" / "index.json").read_bytes()
    other = write_tracks(checkpoint, 0.5, 43, tmp_path / "c")
    assert other[0].read_bytes() != paths[0].read_bytes()

    midi = pretty_midi.PrettyMIDI(str(paths[0]))
    assert [(i.name, i.is_drum) for i in midi.instruments] == [
        ("lead", False), ("harmony", False), ("bass", False), ("drums", True)]
    assert all(i.notes for i in midi.instruments)
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    track = index["tracks"][0]
    assert {"track_id", "seed", "key", "tempo_bpm", "bars", "model_id", "file", "drums"} <= set(track)
    assert track["drums"] is True  # the default style keeps its beat in every track
    assert track["seed"] == 42 and track["file"] == paths[0].name
    assert track["model_id"].startswith("chiplofi-vae-")
    _, tempi = midi.get_tempo_changes()
    assert tempi[0] == pytest.approx(track["tempo_bpm"], abs=0.01)
    key_number = midi.key_signature_changes[0].key_number
    assert pretty_midi.key_number_to_key_name(key_number).replace(" ", "") .lower()[0] == track["key"][0].lower()
    assert midi.get_end_time() == pytest.approx(track["seconds"], abs=2.0)


def test_minutes_covers_several_tracks(checkpoint, tmp_path):
    paths = write_tracks(checkpoint, 4.5, 1, tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(paths) >= 2 and sum(t["seconds"] for t in index["tracks"]) >= 4.5 * 60
    with pytest.raises(ModelError):
        write_tracks(checkpoint, 0, 1, tmp_path)


def test_the_summary_says_which_nes_tracks_play_without_drums(checkpoint, tmp_path, capsys):
    parser = parser_with(None)
    args = parser.parse_args(["generate", "--minutes", "6", "--seed", "2", "--style", "1", "--out", str(tmp_path),
                              "--checkpoint", str(checkpoint)])
    assert args.func(args) == 0
    tracks = json.loads((tmp_path / "index.json").read_text())["tracks"]
    assert {track["drums"] for track in tracks} == {True, False}
    printed = capsys.readouterr().out
    for track in tracks:
        midi = pretty_midi.PrettyMIDI(str(tmp_path / track["file"]))
        assert any(i.is_drum and i.notes for i in midi.instruments) == track["drums"]
        line = next(line for line in printed.splitlines() if line.strip().startswith(track["file"]))
        assert line.endswith(" s, no drums") != track["drums"], line


def parser_with(render_wav):
    parser = argparse.ArgumentParser(prog="chiplofi")
    add_model_commands(parser.add_subparsers(dest="command"), render_wav)
    return parser


def test_generate_command_with_wav(checkpoint, tmp_path, capsys):
    rendered = []
    parser = parser_with(lambda midi, wav: rendered.append((midi, wav)))
    args = parser.parse_args(["generate", "--minutes", "0.5", "--seed", "3", "--out", str(tmp_path),
                              "--checkpoint", str(checkpoint), "--wav", "--key", "D minor", "--tempo", "75"])
    assert args.func(args) == 0
    assert len(rendered) == 1 and rendered[0][1].suffix == ".wav"
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["tracks"][0]["key"] == "D minor" and index["tracks"][0]["tempo_bpm"] == 75.0
    printed = capsys.readouterr().out  # says what it wrote
    track = index["tracks"][0]
    assert f"wrote 1 track ({track['seconds'] / 60:.1f} min) to {tmp_path.resolve()}" in printed
    assert f"{track['file']} + {track['file'][:-4]}.wav: D minor, 75 BPM" in printed


def test_wav_without_renderer_and_help(checkpoint, tmp_path, capsys):
    parser = parser_with(None)
    args = parser.parse_args(["generate", "--out", str(tmp_path), "--checkpoint", str(checkpoint), "--wav"])
    with pytest.raises(ModelError, match="--wav"):
        args.func(args)
    for command in ("train", "generate"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert "--out" in text and "--seed" in text and "--minutes" in text
    assert "torchrun" in parser_with(None)._subparsers._group_actions[0].choices["train"].format_help()
