"""MIDI files → a song's bars (`parse_file`): notes read, put on the 16-step grid, reduced to
one line per voice, tokenised (`models.tokens`), with a chord per bar and the song's key
(`models.theory`).

NES files (written at a fixed 60 BPM, 1 tick = 1 frame) are read by channel and their grid is
fitted to the onsets (`estimate_nes_grid`); other files go through `models.voices.assign_voices`
on their own tempo map. Of notes starting together in a voice the top one is kept (the lowest
for bass); a new onset cuts the previous note.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.corpus import SongArrays, SongInfo
from models.theory import estimate_chord, estimate_key
from models.tokens import DRUMS, HOLD, N_VOICES, REST, STEPS_PER_BAR, STEPS_PER_BEAT, STYLES, pitch_to_token
from models.voices import VOICES, assign_voices

log = logging.getLogger(__name__)

# General MIDI drum keys → drum class index (keys not listed are ignored).
_GM_DRUM_CLASS: dict[int, int] = {}
for _key in (35, 36):
    _GM_DRUM_CLASS[_key] = 0
for _key in (37, 38, 39, 40):
    _GM_DRUM_CLASS[_key] = 1
for _key in (42, 44, 51, 53, 54, 59, 69, 70, 82):  # closed/pedal hat, ride, tambourine, shaker
    _GM_DRUM_CLASS[_key] = 2
for _key in (46, 49, 52, 55, 57):  # open hat, crashes, splash, china
    _GM_DRUM_CLASS[_key] = 3
for _key in (41, 43, 45, 47, 48, 50):
    _GM_DRUM_CLASS[_key] = 4

# NES files: MIDI channel → voice index; written at 60 BPM with 60 ticks per beat (1 tick = 1 frame).
NES_CHANNEL_VOICE: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3, 9: 3}
MIN_BARS = 2
# Quarter-note meters read as 4/4 bars: 1/4 and 2/4 stand in many files (POP909 marks nearly every
# song 1/4 or 2/4 at time 0) for music that moves in 4/4; 3/4, 6/8, ... are left out.
DUPLE_NUMERATORS = (1, 2, 4)
MAX_SONG_BARS = 512  # longer songs are cut (a few Lakh files run for many minutes)


@dataclass
class _RawNote:
    voice: int
    pitch: int
    start: float  # in 16th steps from the first bar line
    end: float
    in_line: bool = True  # False: counts for key and chords but is not part of the voice's line


_CHORD_VOICE_WEIGHT = (0.5, 1.0, 1.5)  # melody passing tones say less about the chord than the bass


def _notes_to_song_arrays(notes: list[_RawNote]) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[bool, ...]] | str:
    """(tokens (n_bars,16,4), chords (n_bars,2), song chroma (12,), voices present) or a skip reason."""
    if not notes:
        return "empty"
    quantised = []
    for note in notes:
        start = int(round(note.start))
        end = max(start + 1, int(round(note.end)))
        if start < 0:
            continue
        quantised.append((note.voice, note.pitch, start, end, note.in_line))
    if not quantised:
        return "empty"
    first_bar = min(q[2] for q in quantised) // STEPS_PER_BAR
    offset = first_bar * STEPS_PER_BAR
    last_step = max(q[2] for q in quantised) - offset
    n_bars = min(last_step // STEPS_PER_BAR + 1, MAX_SONG_BARS)
    if n_bars < MIN_BARS:
        return "too_short"
    n_steps = n_bars * STEPS_PER_BAR
    tokens = np.zeros((n_steps, N_VOICES), dtype=np.int16)
    chroma = np.zeros((n_bars, 12))
    lowest = np.full((n_bars,), 200, dtype=np.int64)
    present = [False] * N_VOICES

    # Monophonic reduction: within a voice, notes in start order overwrite what sounded before;
    # of notes starting together the preferred one (top, or bottom for bass) is written last.
    def priority(q: tuple[int, int, int, int, bool]) -> tuple[int, int]:
        voice, pitch, start, _, _ = q
        return (start, -pitch if voice == 2 else pitch)

    for voice, pitch, start, end, in_line in sorted(quantised, key=priority):
        start -= offset
        end = min(end - offset, n_steps)
        if start >= n_steps:
            continue
        present[voice] = True
        if voice == DRUMS:
            drum_class = _GM_DRUM_CLASS.get(pitch)
            if drum_class is not None:
                tokens[start, DRUMS] |= 1 << drum_class
            continue
        if in_line:
            tokens[start, voice] = pitch_to_token(voice, pitch)
            tokens[start + 1:end, voice] = HOLD
            follow = end
            while follow < n_steps and tokens[follow, voice] == HOLD:  # a cut-short note's tail
                tokens[follow, voice] = REST
                follow += 1
        # Harmony for key and chords: every pitched note, weighted by its length in each bar.
        for bar in range(start // STEPS_PER_BAR, (end - 1) // STEPS_PER_BAR + 1):
            bar_start = bar * STEPS_PER_BAR
            overlap = min(end, bar_start + STEPS_PER_BAR) - max(start, bar_start)
            if overlap > 0:
                weight = overlap * (1.5 if start % 4 == 0 else 1.0) * _CHORD_VOICE_WEIGHT[voice]
                chroma[bar, pitch % 12] += weight
                lowest[bar] = min(lowest[bar], pitch)
    if not any(present[:DRUMS]):
        return "no_pitched_notes"
    chords = np.zeros((n_bars, 2), dtype=np.int16)
    for bar in range(n_bars):
        bass_pc = int(lowest[bar] % 12) if lowest[bar] < 200 else None
        chords[bar] = estimate_chord(chroma[bar], bass_pc)
    return tokens.reshape(n_bars, STEPS_PER_BAR, N_VOICES), chords, chroma.sum(axis=0), tuple(present)


# --------------------------------------------------------------------------- NES files

def estimate_nes_grid(onset_frames: np.ndarray) -> tuple[float, float]:
    """(16th-note period in frames, phase in frames) of a NES song from its onset times.

    NES music is timed in 60 Hz frames and the files were written at a fixed 60 BPM, so the beat
    must be found from the onsets: the largest grid period that still explains the onsets nearly
    as well as the best one is the basic unit; it is halved or doubled into a 16th note at a
    tempo between 75 and 150 BPM (NES tempi are fast; a lo-fi 16th grid wants ~ this range).
    """
    onsets = np.unique(np.asarray(onset_frames, dtype=np.float64))
    if onsets.size < 4:
        return 900.0 / 120.0, float(onsets[0]) if onsets.size else 0.0
    periods = np.arange(3.0, 48.0, 0.25)
    fit = np.empty_like(periods)
    phases = np.empty_like(periods)
    for i, period in enumerate(periods):
        angle = 2 * np.pi * onsets / period
        vector = np.exp(1j * angle).mean()
        phases[i] = (np.angle(vector) % (2 * np.pi)) / (2 * np.pi) * period
        deviation = (onsets - phases[i]) / period
        error = np.abs(deviation - np.round(deviation)) * period  # frames off the grid
        fit[i] = np.mean(error <= max(1.0, 0.08 * period))
    good = fit >= 0.93 * fit.max()
    unit = float(periods[good].max())
    phase = float(phases[periods == unit][0])
    # Tempo of a 16th period p (frames): 60 s / (4 p / 60) = 900 / p BPM.
    sixteenth = unit
    while 900.0 / sixteenth < 75.0:
        sixteenth /= 2.0
    while 900.0 / sixteenth >= 150.0:
        sixteenth *= 2.0
    return sixteenth, phase


def _read_nes_notes(path: Path) -> list[tuple[int, int, float, float]]:
    """(voice, pitch, start frame, end frame) of a NES MIDI file, by channel."""
    import mido

    midi = mido.MidiFile(str(path))
    if midi.type == 2:
        raise ValueError("asynchronous MIDI (type 2)")
    frames_per_tick = 60.0 / midi.ticks_per_beat  # 60 BPM: a beat is 60 frames
    notes = []
    for track in midi.tracks:
        tick = 0
        sounding: dict[tuple[int, int], float] = {}
        for message in track:
            tick += message.time
            if message.type not in ("note_on", "note_off"):
                continue
            voice = NES_CHANNEL_VOICE.get(message.channel)
            if voice is None:
                continue
            key = (message.channel, message.note)
            now = tick * frames_per_tick
            if key in sounding:
                start = sounding.pop(key)
                if now > start:
                    notes.append((voice, message.note, start, now))
            if message.type == "note_on" and message.velocity > 0:
                sounding[key] = now
        for (channel, pitch), start in sounding.items():
            notes.append((NES_CHANNEL_VOICE[channel], pitch, start, start + 8.0))
    return notes


def _nes_song(path: Path) -> tuple[list[_RawNote], float] | str:
    notes = _read_nes_notes(path)
    if not notes:
        return "empty"
    onsets = np.array([n[2] for n in notes])
    sixteenth, phase = estimate_nes_grid(onsets)
    # Bar line: of the four beat positions, the one where most (bass-weighted) onsets fall.
    steps = (onsets - phase) / sixteenth
    on_grid = np.round(steps).astype(np.int64)
    weights = np.array([2.0 if n[0] == 2 else 1.0 for n in notes])
    first = int(on_grid.min())
    beat_scores = [weights[(on_grid - first - 4 * b) % STEPS_PER_BAR == 0].sum() for b in range(4)]
    origin = phase + (first + 4 * int(np.argmax(beat_scores))) * sixteenth
    if origin > onsets.min():
        origin -= STEPS_PER_BAR * sixteenth
    raw = [_RawNote(v, p, (s - origin) / sixteenth, (e - origin) / sixteenth) for v, p, s, e in notes]
    return raw, 900.0 / sixteenth


# --------------------------------------------------------------------------- multi-track files

def _keep_main_harmony_part(raw: list[_RawNote], parts: list[int]) -> None:
    """Harmony merges every accompanying part; its line follows one: per bar, the part that
    sounds longest there. The other parts still count for key and chords (`in_line=False`)."""
    harmony = [(note, part) for note, part in zip(raw, parts, strict=True) if note.voice == 1]
    if len({part for _, part in harmony}) < 2:
        return
    sounding: dict[tuple[int, int], float] = {}
    for note, part in harmony:
        bar = int(max(note.start, 0.0) // STEPS_PER_BAR)
        sounding[(bar, part)] = sounding.get((bar, part), 0.0) + (note.end - note.start)
    main: dict[int, tuple[float, int]] = {}
    for (bar, part), length in sorted(sounding.items()):
        if bar not in main or length > main[bar][0]:
            main[bar] = (length, part)
    for note, part in harmony:
        bar = int(max(note.start, 0.0) // STEPS_PER_BAR)
        note.in_line = main[bar][1] == part


def _multitrack_song(path: Path) -> tuple[list[_RawNote], float] | str:
    from models.midi_lib import implausible_timing, pretty_midi

    midi = pretty_midi.PrettyMIDI(str(path))
    if implausible_timing(midi):
        return "implausible_timing"
    if any(ts.denominator != 4 or ts.numerator not in DUPLE_NUMERATORS for ts in midi.time_signature_changes):
        return "not_4_4"
    part_of = {id(note): number for number, instrument in enumerate(midi.instruments) for note in instrument.notes}
    parts = assign_voices(midi)
    if not any(parts.values()):
        return "empty"
    end_time = max(n.end for notes in parts.values() for n in notes)
    beats = midi.get_beats()
    if len(beats) < 2:
        return "too_short"
    interval = beats[-1] - beats[-2]
    extra = int(np.ceil(max(0.0, end_time - beats[-1]) / max(interval, 1e-3))) + 2
    beats = np.concatenate([beats, beats[-1] + interval * np.arange(1, extra + 1)])
    beat_index = np.arange(len(beats), dtype=np.float64)

    def step_of(t: float) -> float:
        return float(np.interp(t, beats, beat_index)) * STEPS_PER_BEAT

    raw = []
    for voice_index, voice in enumerate(VOICES):
        for note in parts[voice]:
            raw.append(_RawNote(voice_index, int(note.pitch), step_of(note.start), step_of(note.end)))
    _keep_main_harmony_part(raw, [part_of.get(id(n), -1) for voice in VOICES for n in parts[voice]])
    tempo_times, tempi = midi.get_tempo_changes()
    tempo = float(tempi[0]) if len(tempi) else 120.0
    return raw, tempo


def parse_file(path: Path, name: str, group: str, style: int) -> SongArrays | str:
    """One MIDI file → its arrays, or the reason it is skipped. Never raises for a bad file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about odd but usable files
            parsed = _nes_song(path) if STYLES[style] == "nes" else _multitrack_song(path)
        if isinstance(parsed, str):
            return parsed
        raw, tempo = parsed
        arrays = _notes_to_song_arrays(raw)
        if isinstance(arrays, str):
            return arrays
    except Exception as error:  # a broken file of any kind is skipped, never fatal
        log.debug("skipping %s: %s", path, error)
        return "broken"
    tokens, chords, chroma, present = arrays
    tonic, mode = estimate_key(chroma)
    info = SongInfo(name, group, style, tonic, mode, round(float(tempo), 2), tuple(bool(p) for p in present))
    return SongArrays(info, tokens, chords)
