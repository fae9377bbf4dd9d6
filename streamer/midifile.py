"""Read an ordinary MIDI file into chiplofi `Bar`s, its parts mapped onto the four voices.

Bars follow the file's own downbeats and tempo map: each bar gets the average tempo of its
span, so the rendered timing matches the file to within a sample at every bar line.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from models.midi_lib import implausible_timing, pretty_midi
from models.voices import assign_voices
from streamer.errors import InputFileError
from streamer.types import VOICES, Bar, Note

log = logging.getLogger(__name__)


def read_midi(path: str | Path) -> pretty_midi.PrettyMIDI:
    """Parse `path`; missing, unreadable, corrupt or note-less files raise InputFileError."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such MIDI file")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: the file is empty (0 bytes), not a MIDI file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about odd but usable files
            midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido/pretty_midi raise many kinds (OSError, EOFError, KeyError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path}: not a readable MIDI file ({reason})") from exc
    if not any(instrument.notes for instrument in midi.instruments):
        raise InputFileError(f"{path}: the MIDI file has no notes")
    implausible = implausible_timing(midi)
    if implausible:
        raise InputFileError(f"{path}: {implausible}")
    return midi


def _beat_position(times: np.ndarray, beat_times: np.ndarray) -> np.ndarray:
    """Seconds → beat index (fractional), extrapolating past both ends with the edge tempo."""
    beat_index = np.arange(len(beat_times), dtype=np.float64)
    positions = np.interp(times, beat_times, beat_index)
    if len(beat_times) >= 2:
        first = (beat_times[1] - beat_times[0]) or 0.5
        last = (beat_times[-1] - beat_times[-2]) or 0.5
        positions = np.where(times < beat_times[0], (times - beat_times[0]) / first, positions)
        positions = np.where(times > beat_times[-1],
                             len(beat_times) - 1 + (times - beat_times[-1]) / last, positions)
    return positions


def midi_to_bars(midi: pretty_midi.PrettyMIDI, track_id: str = "") -> list[Bar]:
    """Every bar of `midi` from its first downbeat to the end of its last note."""
    end_time = midi.get_end_time()
    beat_times = midi.get_beats()
    if len(beat_times) < 2:
        beat_times = np.array([0.0, 0.5])  # no tempo information: 120 BPM
    downbeats = midi.get_downbeats()
    beats_per_bar = 4.0
    if len(downbeats) >= 2:
        beats_per_bar = float(np.round(_beat_position(downbeats[1:2], beat_times)[0]
                                       - _beat_position(downbeats[:1], beat_times)[0])) or 4.0
    voices = assign_voices(midi)

    # Bar lines in beats: the file's downbeats up to the end of the music, continued at the
    # last bar length when the file's own downbeats stop short of it.
    end_beat = float(_beat_position(np.array([end_time]), beat_times)[0]) - 1e-6
    bar_lines = list(_beat_position(np.asarray(downbeats, dtype=np.float64), beat_times)) or [0.0]
    while len(bar_lines) > 1 and bar_lines[-2] >= end_beat:
        bar_lines.pop()
    while bar_lines[-1] < end_beat:
        step = bar_lines[-1] - bar_lines[-2] if len(bar_lines) >= 2 else beats_per_bar
        bar_lines.append(bar_lines[-1] + max(step, 1.0))
    bar_lines = np.asarray(bar_lines)
    bar_seconds = np.interp(bar_lines, np.arange(len(beat_times)), beat_times,
                            left=np.nan, right=np.nan)
    # Outside the beat grid, extend with the edge tempo.
    edge = (beat_times[-1] - beat_times[-2]) if len(beat_times) >= 2 else 0.5
    bar_seconds = np.where(np.isnan(bar_seconds), beat_times[-1] + (bar_lines - (len(beat_times) - 1)) * edge,
                           bar_seconds)

    notes_by_bar: list[list[Note]] = [[] for _ in range(len(bar_lines) - 1)]
    for voice in VOICES:
        notes = voices[voice]
        if not notes:
            continue
        starts = _beat_position(np.array([n.start for n in notes]), beat_times)
        ends = _beat_position(np.array([n.end for n in notes]), beat_times)
        bar_of = np.searchsorted(bar_lines, starts, side="right") - 1
        for note, start, end, index in zip(notes, starts, ends, bar_of, strict=True):
            index = int(np.clip(index, 0, len(notes_by_bar) - 1))
            bar_start = bar_lines[index]
            notes_by_bar[index].append(Note(voice, int(note.pitch), float(max(start - bar_start, 0.0)),
                                            float(max(end - start, 1e-3)), int(note.velocity)))

    bars = []
    for index, notes in enumerate(notes_by_bar):
        beats = float(bar_lines[index + 1] - bar_lines[index])
        seconds = float(bar_seconds[index + 1] - bar_seconds[index])
        tempo = 60.0 * beats / seconds if seconds > 0 else 120.0
        bars.append(Bar(tuple(notes), tempo_bpm=tempo, beats=beats, track_id=track_id, bar_index=index))
    # Leading bars before the first note are dropped; the music starts at once.
    while len(bars) > 1 and not bars[0].notes:
        bars.pop(0)
    return bars
