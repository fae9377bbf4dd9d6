"""Pure timing helpers of the renderer and the MIDI reader (no FluidSynth)."""

from itertools import pairwise
from pathlib import Path

import pretty_midi
import pytest

from streamer.errors import InputFileError
from streamer.midifile import midi_to_bars, read_midi
from streamer.render import swing_position


@pytest.mark.parametrize("position", [0.0, 0.5, 1.0, 2.5, 3.0, 4.0, 5.5])
def test_swing_keeps_the_8th_note_grid(position):
    assert swing_position(position, 0.57) == pytest.approx(position)


def test_swing_moves_the_offbeat_16th():
    assert swing_position(0.25, 0.57) == pytest.approx(0.285)
    assert swing_position(1.75, 0.57) == pytest.approx(1.785)
    assert swing_position(0.25, 0.5) == pytest.approx(0.25)


def test_swing_is_monotonic():
    positions = [i / 64 for i in range(64 * 4)]
    moved = [swing_position(p, 0.66) for p in positions]
    assert all(b > a for a, b in pairwise(moved))


def _write_midi(path: Path, tempo: float = 100.0) -> Path:
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    beat = 60.0 / tempo
    lead = pretty_midi.Instrument(program=80, name="melody")
    bass = pretty_midi.Instrument(program=33, name="bass")
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    for i in range(8):  # two bars of quarter notes
        lead.notes.append(pretty_midi.Note(90, 72 + i % 5, i * beat, (i + 0.5) * beat))
        drums.notes.append(pretty_midi.Note(100, 36 if i % 2 == 0 else 38, i * beat, i * beat + 0.1))
    bass.notes.append(pretty_midi.Note(100, 36, 0.0, 6 * beat))  # rings over the bar line
    midi.instruments += [lead, bass, drums]
    midi.write(str(path))
    return path


def test_midi_to_bars_keeps_tempo_positions_and_voices(tmp_path):
    bars = midi_to_bars(read_midi(_write_midi(tmp_path / "song.mid")))
    assert len(bars) == 2
    assert all(bar.tempo_bpm == pytest.approx(100.0, abs=0.01) and bar.beats == 4.0 for bar in bars)
    lead_starts = sorted(n.start for n in bars[1].notes if n.voice == "lead")
    assert lead_starts == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-6)
    (bass,) = [n for n in bars[0].notes if n.voice == "bass"]
    assert bass.duration == pytest.approx(6.0, abs=1e-6)  # kept whole, past the bar line
    assert {n.voice for n in bars[0].notes} == {"lead", "bass", "drums"}


def test_read_midi_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.mid"
    with pytest.raises(InputFileError, match="missing.mid"):
        read_midi(missing)
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(InputFileError, match="corrupt.mid"):
        read_midi(corrupt)
    empty = tmp_path / "empty.mid"
    pretty_midi.PrettyMIDI().write(str(empty))
    with pytest.raises(InputFileError, match="empty.mid.*no notes"):
        read_midi(empty)
