"""Training data: MIDI folders → bar arrays on a 16-step grid, with key, chords, style and splits.

Torch-free, so evaluation and tools can read the data without loading a model.

Array format (a `Corpus`; all arrays numpy, bars of all songs concatenated in song order)
------------------------------------------------------------------------------------------
- ``tokens``  int16 ``(n_bars, 16, 4)``: one token per 16th-note step and voice, voices in
  `VOICES` order (lead, harmony, bass, drums).
  * pitched voices (lead, harmony, bass): ``0`` = rest, ``1`` = hold (the note sounding at the
    previous step goes on), ``2 + i`` = onset of pitch ``PITCH_RANGES[voice][0] + i``. Each voice
    has ``N_PITCHES`` (36) pitches, so ``PITCHED_VOCAB`` = 38 tokens. Pitches outside a voice's
    range are folded by octaves into it. A voice is monophonic: of notes starting together the
    top one is kept (the lowest for bass); a new onset cuts the previous note. A hold at step 0
    continues the note from the previous bar.
  * drums: a bit mask of the hits at that step, ``DRUM_CLASSES`` order (kick = 1, snare = 2,
    closed hat = 4, open hat = 8, tom = 16), so ``DRUM_VOCAB`` = 32 tokens; 0 = no hit.
- ``chords``  int16 ``(n_bars, 2)``: per bar ``(root, quality)``: root 0..11 (C = 0) or
  ``NO_CHORD_ROOT`` (12) for a bar without pitched notes; quality indexes `CHORD_QUALITIES`.
- ``song_starts`` int64 ``(n_songs + 1,)``: song ``i`` owns bars ``song_starts[i]:song_starts[i+1]``.
- ``songs``: one `SongInfo` per song: ``name`` (path relative to its folder's parent, e.g.
  ``nes/Mega Man 2/1.mid``), ``group`` (the split unit: the game for NES, the file otherwise),
  ``style`` (index into `STYLES`), ``key_tonic`` 0..11, ``key_mode`` (0 major, 1 minor),
  ``tempo_bpm`` (estimated for NES files), ``voices_present`` (4 bools: does the voice play at
  all in the song; a voice absent from a whole song is unknown, not silent, for training).
- ``data_hash``: hash of the folders' content and of this module's format version;
  ``skipped``: files left out, counted by reason (``broken``, ``empty``, ``not_4_4``, ...).

Everything is in the song's real key; `transpose_tokens` / `Corpus.transposed` move songs
(used for key normalisation and augmentation). `bar_notes` turns a bar's tokens back into notes
``(voice, pitch, start_step, length_steps, velocity)``, the same note tuples the composer yields.

Entry points: `load_corpus(folders)` (cached, progress bar) and `split_corpus(corpus)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.errors import DataError, ModelError
from models.voices import VOICES, assign_voices

log = logging.getLogger(__name__)

FORMAT_VERSION = 4  # bump when the arrays or their meaning change: invalidates caches

PITCHED_VOICES: tuple[str, ...] = ("lead", "harmony", "bass")
STEPS_PER_BAR = 16
STEPS_PER_BEAT = 4
N_VOICES = 4
DRUMS = 3  # index of the drum voice

REST, HOLD, FIRST_PITCH_TOKEN = 0, 1, 2
N_PITCHES = 36
PITCH_RANGES: dict[str, tuple[int, int]] = {  # inclusive MIDI pitch ranges, 36 semitones each
    "lead": (55, 90),
    "harmony": (48, 83),
    "bass": (28, 63),
}
PITCHED_VOCAB = FIRST_PITCH_TOKEN + N_PITCHES
DRUM_CLASSES: tuple[str, ...] = ("kick", "snare", "closed_hat", "open_hat", "tom")
DRUM_VOCAB = 1 << len(DRUM_CLASSES)
VOCAB_SIZES: tuple[int, ...] = (PITCHED_VOCAB, PITCHED_VOCAB, PITCHED_VOCAB, DRUM_VOCAB)
# General MIDI drum keys written for each class when bars are turned back into notes.
DRUM_CLASS_KEYS: tuple[int, ...] = (36, 38, 42, 46, 45)

STYLES: tuple[str, ...] = ("lofi", "nes", "lakh")

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
NO_CHORD_ROOT = 12
# Chord qualities as pitch-class sets above the root; lo-fi colours (7ths, 9ths) included.
CHORD_QUALITIES: tuple[str, ...] = ("maj", "min", "7", "maj7", "m7", "m7b5", "dim", "sus4", "9", "maj9", "m9")
CHORD_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10),
    "dim": (0, 3, 6),
    "sus4": (0, 5, 7),
    "9": (0, 4, 7, 10, 2),
    "maj9": (0, 4, 7, 11, 2),
    "m9": (0, 3, 7, 10, 2),
}
CHORD_SYMBOLS: dict[str, str] = {
    "maj": "", "min": "m", "7": "7", "maj7": "maj7", "m7": "m7", "m7b5": "m7b5", "dim": "dim",
    "sus4": "sus4", "9": "9", "maj9": "maj9", "m9": "m9",
}
MAJOR, MINOR = 0, 1

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


@dataclass(frozen=True)
class SongInfo:
    """What one song of a corpus is; its bars are `Corpus.song_slice(i)`."""

    name: str
    group: str
    style: int
    key_tonic: int
    key_mode: int
    tempo_bpm: float
    voices_present: tuple[bool, bool, bool, bool]


@dataclass
class Corpus:
    """Bars of many songs (see the module docstring for the array format)."""

    tokens: np.ndarray  # (n_bars, 16, 4) int16
    chords: np.ndarray  # (n_bars, 2) int16: root, quality
    song_starts: np.ndarray  # (n_songs + 1,) int64
    songs: list[SongInfo]
    data_hash: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_bars(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_songs(self) -> int:
        return len(self.songs)

    def song_slice(self, index: int) -> slice:
        return slice(int(self.song_starts[index]), int(self.song_starts[index + 1]))

    def song_of_bar(self) -> np.ndarray:
        """(n_bars,) int64: the song index of every bar."""
        lengths = np.diff(self.song_starts)
        return np.repeat(np.arange(self.n_songs, dtype=np.int64), lengths)

    def subset(self, song_indices: Iterable[int]) -> Corpus:
        """A corpus of the given songs only (in that order)."""
        indices = list(song_indices)
        slices = [self.song_slice(i) for i in indices]
        lengths = [s.stop - s.start for s in slices]
        tokens = np.concatenate([self.tokens[s] for s in slices]) if slices else self.tokens[:0]
        chords = np.concatenate([self.chords[s] for s in slices]) if slices else self.chords[:0]
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return Corpus(tokens, chords, starts, [self.songs[i] for i in indices], self.data_hash, dict(self.skipped))

    def transposed(self, semitones_per_song: Sequence[int]) -> Corpus:
        """A copy with song `i` moved by `semitones_per_song[i]` (key, chords and notes)."""
        tokens = self.tokens.copy()
        chords = self.chords.copy()
        songs = []
        for i, (song, shift) in enumerate(zip(self.songs, semitones_per_song, strict=True)):
            part = self.song_slice(i)
            tokens[part] = transpose_tokens(tokens[part], int(shift))
            chords[part] = transpose_chords(chords[part], int(shift))
            songs.append(SongInfo(song.name, song.group, song.style, (song.key_tonic + shift) % 12,
                                  song.key_mode, song.tempo_bpm, song.voices_present))
        return Corpus(tokens, chords, self.song_starts.copy(), songs, self.data_hash, dict(self.skipped))

    def key_normalised(self) -> Corpus:
        """Every song moved by at most 6 semitones so that its scale is C major / A minor."""
        return self.transposed([normalising_shift(s.key_tonic, s.key_mode) for s in self.songs])


def normalising_shift(key_tonic: int, key_mode: int) -> int:
    """Semitones (-6..5) that move a key to C major (major) or A minor (minor)."""
    target = 0 if key_mode == MAJOR else 9
    return ((target - key_tonic + 6) % 12) - 6


# --------------------------------------------------------------------------- names

SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
# Natural tonics whose key signature has flats: F major; D, G and C minor.
_FLAT_NATURAL_KEYS = {(5, MAJOR), (2, MINOR), (7, MINOR), (0, MINOR)}


def key_note_names(tonic: int, mode: int) -> tuple[str, ...]:
    """The names of the 12 pitch classes as the key (named by `key_name`) spells them: flats in
    a flat key (Bb minor: Db, not C#), sharps in a sharp key; C major / A minor: NOTE_NAMES."""
    tonic_name = NOTE_NAMES[tonic % 12]
    if tonic_name.endswith("b") or (tonic % 12, mode) in _FLAT_NATURAL_KEYS:
        return FLAT_NAMES
    if tonic_name.endswith("#") or (tonic % 12, mode) not in {(0, MAJOR), (9, MINOR)}:
        return SHARP_NAMES
    return NOTE_NAMES


# Note names (sharps, flats and the enharmonic spellings) → pitch class, lower case.
_NOTE_INDEX: dict[str, int] = {**{name.lower(): i for i, name in enumerate(NOTE_NAMES)},
                               "db": 1, "d#": 3, "gb": 6, "g#": 8, "a#": 10, "cb": 11, "e#": 5, "fb": 4, "b#": 0}


def chord_name(root: int, quality: int, key: tuple[int, int] | None = None) -> str:
    """'Cm7', 'F#maj9', 'N.C.' for no chord; spelled as `key` (tonic, mode) spells its notes."""
    if root == NO_CHORD_ROOT or root < 0:
        return "N.C."
    names = key_note_names(*key) if key is not None else NOTE_NAMES
    return names[root % 12] + CHORD_SYMBOLS[CHORD_QUALITIES[quality]]


def parse_chord(text: str) -> tuple[int, str]:
    """(root 0..11, quality name in `CHORD_QUALITIES`) of a chord name such as 'C#maj9', 'Dbm7',
    'G'; the inverse of `chord_name` (sharps or flats). 'N.C.' raises, as any unknown name."""
    names = _NOTE_INDEX
    letters = 2 if len(text) > 1 and text[1] in "#b" else 1
    root, symbol = text[:letters].lower(), text[letters:]
    qualities = {CHORD_SYMBOLS[q]: q for q in CHORD_QUALITIES}
    if root not in names or symbol not in qualities:
        raise ModelError(f"unknown chord {text!r}: use e.g. 'C', 'F#m7', 'Bbmaj9'")
    return names[root], qualities[symbol]


def key_name(tonic: int, mode: int) -> str:
    """'C major', 'A minor'."""
    return f"{NOTE_NAMES[tonic % 12]} {'minor' if mode == MINOR else 'major'}"


def parse_key(text: str) -> tuple[int, int]:
    """(tonic, mode) of 'C major', 'F# minor', 'Bbm', 'A' ..."""
    names = _NOTE_INDEX
    cleaned = text.strip().lower().replace("♯", "#").replace("♭", "b")
    mode = MAJOR
    for suffix, value in ((" minor", MINOR), (" major", MAJOR), ("min", MINOR), ("maj", MAJOR), ("m", MINOR)):
        if cleaned.endswith(suffix):
            cleaned, mode = cleaned[: -len(suffix)].strip(), value
            break
    if cleaned not in names:
        raise ModelError(f"unknown key {text!r}: use e.g. 'C major', 'F# minor', 'Bbm'")
    return names[cleaned], mode


# --------------------------------------------------------------------------- tokens

def pitch_to_token(voice: int, pitch: int) -> int:
    """Onset token of `pitch` for pitched voice index `voice`, folded by octaves into range."""
    low, high = PITCH_RANGES[VOICES[voice]]
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return FIRST_PITCH_TOKEN + pitch - low


def token_to_pitch(voice: int, token: int) -> int:
    """MIDI pitch of an onset token (token >= 2) of pitched voice index `voice`."""
    return PITCH_RANGES[VOICES[voice]][0] + int(token) - FIRST_PITCH_TOKEN


def transpose_tokens(tokens: np.ndarray, semitones: int) -> np.ndarray:
    """Tokens `(..., 16, 4)` moved by `semitones`; onsets leaving a range fold back by an octave."""
    out = np.array(tokens, copy=True)
    if semitones == 0:
        return out
    for voice in range(len(PITCHED_VOICES)):
        column = out[..., voice]
        onset = column >= FIRST_PITCH_TOKEN
        index = column[onset].astype(np.int64) - FIRST_PITCH_TOKEN + semitones
        index = np.where(index < 0, index + 12, index)
        index = np.where(index >= N_PITCHES, index - 12, index)
        column[onset] = (index + FIRST_PITCH_TOKEN).astype(out.dtype)
    return out


def transpose_chords(chords: np.ndarray, semitones: int) -> np.ndarray:
    """Chords `(..., 2)` with roots moved by `semitones` (no-chord bars stay as they are)."""
    out = np.array(chords, copy=True)
    roots = out[..., 0]
    has_root = roots != NO_CHORD_ROOT
    roots[has_root] = (roots[has_root] + semitones) % 12
    return out


def bar_notes(tokens: np.ndarray, next_tokens: np.ndarray | None = None,
              velocities: Sequence[int] = (92, 72, 96, 90)) -> list[tuple[str, int, int, int, int]]:
    """Notes `(voice, pitch, start_step, length_steps, velocity)` of one bar's tokens `(16, 4)`.

    A note still held at the bar's end is extended through the holds at the start of
    `next_tokens` (the following bar) when given. Holds with no onset before them are ignored.
    """
    notes: list[tuple[str, int, int, int, int]] = []
    for voice in range(len(PITCHED_VOICES)):
        column = tokens[:, voice]
        step = 0
        while step < STEPS_PER_BAR:
            token = int(column[step])
            if token >= FIRST_PITCH_TOKEN:
                end = step + 1
                while end < STEPS_PER_BAR and column[end] == HOLD:
                    end += 1
                length = end - step
                if end == STEPS_PER_BAR and next_tokens is not None:
                    following = next_tokens[:, voice]
                    k = 0
                    while k < STEPS_PER_BAR and following[k] == HOLD:
                        k += 1
                    length += k
                notes.append((VOICES[voice], token_to_pitch(voice, token), step, length, velocities[voice]))
                step = end
            else:
                step += 1
    for step in range(STEPS_PER_BAR):
        mask = int(tokens[step, DRUMS])
        for index, key in enumerate(DRUM_CLASS_KEYS):
            if mask & (1 << index):
                notes.append(("drums", key, step, 1, velocities[DRUMS]))
    return notes


# --------------------------------------------------------------------------- key and chords

# Krumhansl–Kessler key profiles.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(chroma: np.ndarray) -> tuple[int, int]:
    """(tonic, mode) of a duration-weighted pitch-class histogram `(12,)` (Krumhansl–Schmuckler)."""
    if chroma.sum() <= 0:
        return 0, MAJOR
    best, best_score = (0, MAJOR), -np.inf
    for mode, profile in ((MAJOR, _MAJOR_PROFILE), (MINOR, _MINOR_PROFILE)):
        for tonic in range(12):
            score = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if score > best_score:
                best, best_score = (tonic, mode), score
    return best


_TEMPLATES = np.zeros((12, len(CHORD_QUALITIES), 12))  # (root, quality, pitch class)
_COLOUR = np.zeros((12, len(CHORD_QUALITIES), 12))  # the template's 7th / 9th tones
for _q, _quality in enumerate(CHORD_QUALITIES):
    for _root in range(12):
        for _position, _interval in enumerate(CHORD_INTERVALS[_quality]):
            _TEMPLATES[_root, _q, (_root + _interval) % 12] = 1.0
            if _position >= 3:
                _COLOUR[_root, _q, (_root + _interval) % 12] = 1.0
_QUALITY_COST = np.array([0.05 * max(0, len(CHORD_INTERVALS[q]) - 3) for q in CHORD_QUALITIES])
_QUALITY_COST[CHORD_QUALITIES.index("dim")] += 0.05
_QUALITY_COST[CHORD_QUALITIES.index("sus4")] += 0.05
_QUALITY_COST[CHORD_QUALITIES.index("m7b5")] += 0.03


def estimate_chord(chroma: np.ndarray, bass_pc: int | None) -> tuple[int, int]:
    """(root, quality) best matching a bar's duration-weighted pitch-class weights `(12,)`.

    Score: weight inside the template minus half the weight outside it, minus a cost for each
    template tone that is (almost) absent — a colour tone (7th, 9th) must carry a real share of
    the bar to be named — a small cost per colour tone, and a bonus when the bar's lowest note
    is the root. Returns (NO_CHORD_ROOT, 0) for an empty bar.
    """
    total = float(chroma.sum())
    if total <= 0:
        return NO_CHORD_ROOT, 0
    weights = chroma / total  # (12,)
    inside = np.einsum("rqp,p->rq", _TEMPLATES, weights)  # (12, Q)
    outside = 1.0 - inside
    absent = np.einsum("rqp,p->rq", _TEMPLATES - _COLOUR, (weights < 0.04).astype(float))  # (12, Q)
    weak_colour = np.einsum("rqp,p->rq", _COLOUR, (weights < 0.08).astype(float))  # (12, Q)
    score = inside - 0.5 * outside - 0.12 * absent - 0.3 * weak_colour - _QUALITY_COST[None, :]
    if bass_pc is not None:
        score[bass_pc, :] += 0.1
    root, quality = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(root), int(quality)


# --------------------------------------------------------------------------- note lists → arrays

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


# --------------------------------------------------------------------------- files and folders

@dataclass
class _SongArrays:
    info: SongInfo
    tokens: np.ndarray
    chords: np.ndarray


def parse_file(path: Path, name: str, group: str, style: int) -> _SongArrays | str:
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
    return _SongArrays(info, tokens, chords)


def _parse_job(job: tuple[str, str, str, int]) -> _SongArrays | str:
    path, name, group, style = job
    return parse_file(Path(path), name, group, style)


def guess_style(folder: Path) -> int:
    """Style index of a folder from its name: 'nes' → nes, 'lakh' → lakh, 'lofi'/'lo-fi' → lofi."""
    name = folder.resolve().name.lower()
    if "nes" in name.split("-") or name.startswith("nes"):
        return STYLES.index("nes")
    if "lakh" in name:
        return STYLES.index("lakh")
    if "lofi" in name or "lo-fi" in name:
        return STYLES.index("lofi")
    return STYLES.index("lakh")


def midi_files(folder: Path) -> list[Path]:
    """MIDI files under `folder`, recursively, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".mid", ".midi"))


def _content_hash(folder: Path, files: list[Path], style: int) -> str:
    digest = hashlib.sha256(f"chiplofi-data-v{FORMAT_VERSION}-style{style}".encode())
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/chiplofi`, else `~/.cache/chiplofi`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chiplofi"


def _save_cache(path: Path, corpus: Corpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"songs": [asdict(s) for s in corpus.songs], "skipped": corpus.skipped, "data_hash": corpus.data_hash}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, tokens=corpus.tokens, chords=corpus.chords, song_starts=corpus.song_starts,
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, path)


def _load_cache(path: Path) -> Corpus | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(bytes(stored["meta"]).decode())
            songs = [SongInfo(**{**s, "voices_present": tuple(s["voices_present"])}) for s in meta["songs"]]
            return Corpus(stored["tokens"], stored["chords"], stored["song_starts"], songs,
                          meta["data_hash"], dict(meta["skipped"]))
    except Exception as error:  # an unreadable cache is rebuilt
        log.warning("ignoring unreadable data cache %s: %s", path, error)
        return None


def load_folder(folder: str | Path, style: str | int | None = None, *, use_cache: bool = True,
                workers: int | None = None, progress: bool = True) -> Corpus:
    """Parse every MIDI file under `folder` (cached on the folder's content).

    `style` is a name in `STYLES` or its index; by default it is guessed from the folder name
    (NES files are read by channel, others through `models.voices.assign_voices`). Song groups
    for splitting: the first sub-folder (the game) for NES, the file otherwise.
    Raises DataError when the folder does not exist; files that cannot be used are counted in
    `skipped`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    style_index = (guess_style(folder) if style is None
                   else STYLES.index(style) if isinstance(style, str) else int(style))
    files = midi_files(folder)
    data_hash = _content_hash(folder, files, style_index)
    cache_path = cache_dir() / f"data-{data_hash}.npz"
    if use_cache and cache_path.exists():
        cached = _load_cache(cache_path)
        if cached is not None:
            log.info("%s: %d songs, %d bars (cached %s)", folder, cached.n_songs, cached.n_bars, cache_path.name)
            return cached

    prefix = folder.resolve().name
    jobs = []
    for path in files:
        relative = path.relative_to(folder)
        name = f"{prefix}/{relative.as_posix()}"
        if STYLES[style_index] == "nes" and len(relative.parts) > 1:
            group = f"{prefix}/{relative.parts[0]}"
        else:
            group = name
        jobs.append((str(path), name, group, style_index))

    from tqdm import tqdm

    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    results: list[_SongArrays | str] = []
    bar = tqdm(total=len(jobs), desc=f"reading {prefix}", unit="file", disable=not progress)
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_parse_job, jobs, chunksize=4):
                results.append(result)
                bar.update()
    else:
        for job in jobs:
            results.append(_parse_job(job))
            bar.update()
    bar.close()

    skipped: dict[str, int] = {}
    parsed = []
    for result in results:
        if isinstance(result, str):
            skipped[result] = skipped.get(result, 0) + 1
        else:
            parsed.append(result)
    corpus = _assemble(parsed, data_hash, skipped)
    log.info("%s: %d songs, %d bars, skipped %s", folder, corpus.n_songs, corpus.n_bars, skipped or "none")
    if use_cache:
        _save_cache(cache_path, corpus)
    return corpus


def _assemble(parsed: list[_SongArrays], data_hash: str, skipped: dict[str, int]) -> Corpus:
    if parsed:
        tokens = np.concatenate([p.tokens for p in parsed]).astype(np.int16)
        chords = np.concatenate([p.chords for p in parsed]).astype(np.int16)
    else:
        tokens = np.zeros((0, STEPS_PER_BAR, N_VOICES), dtype=np.int16)
        chords = np.zeros((0, 2), dtype=np.int16)
    starts = np.concatenate([[0], np.cumsum([len(p.tokens) for p in parsed])]).astype(np.int64)
    return Corpus(tokens, chords, starts, [p.info for p in parsed], data_hash, skipped)


def concatenate(corpora: Sequence[Corpus]) -> Corpus:
    """One corpus of the songs of all `corpora`, in order; hashes combined, skips summed."""
    parsed = []
    skipped: dict[str, int] = {}
    for corpus in corpora:
        for i, song in enumerate(corpus.songs):
            part = corpus.song_slice(i)
            parsed.append(_SongArrays(song, corpus.tokens[part], corpus.chords[part]))
        for reason, count in corpus.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    data_hash = hashlib.sha256("+".join(c.data_hash for c in corpora).encode()).hexdigest()[:16]
    return _assemble(parsed, data_hash, skipped)


# pop909 (real melodies over real progressions) and vgmidi (game-music arrangements) train as
# the "lakh" style: full arrangements that teach every blend its leads, harmony and bass.
DEFAULT_FOLDERS: tuple[str, ...] = ("../shared/data/lofi", "../shared/data/nes", "../shared/data/lakh-lofi",
                                    "../shared/data/pop909", "../shared/data/vgmidi")


def default_folders(repo_root: Path | None = None) -> list[Path]:
    """The shared training folders, relative to the repository root."""
    root = repo_root or Path(__file__).resolve().parent.parent
    return [(root / folder).resolve() for folder in DEFAULT_FOLDERS]


def load_corpus(folders: Sequence[str | Path] | None = None, *, use_cache: bool = True,
                workers: int | None = None, progress: bool = True) -> Corpus:
    """All songs of `folders` (default: the shared lofi, nes, lakh-lofi, pop909 and vgmidi folders).

    Raises DataError when no folder holds a usable song.
    """
    paths = [Path(f) for f in folders] if folders else default_folders()
    corpus = concatenate([load_folder(p, use_cache=use_cache, workers=workers, progress=progress) for p in paths])
    if corpus.n_songs == 0:
        raise DataError(f"no usable MIDI songs in {', '.join(str(p) for p in paths)} (skipped: {corpus.skipped})")
    return corpus


def split_corpus(corpus: Corpus, validation_percent: float = 10.0, salt: str = "chiplofi") -> tuple[Corpus, Corpus]:
    """(training, validation) split by song group (the game for NES), never by bar.

    A group's side depends only on its name, so adding data never moves existing songs.
    If a style has several groups, at least one of them is held out.
    """
    def bucket(group: str) -> float:
        return int(hashlib.sha256(f"{salt}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 100.0

    validation = {i for i, song in enumerate(corpus.songs) if bucket(song.group) < validation_percent}
    for style in range(len(STYLES)):
        groups = sorted({s.group for s in corpus.songs if s.style == style}, key=bucket)
        held = {corpus.songs[i].group for i in validation if corpus.songs[i].style == style}
        if len(groups) >= 2 and not held:
            validation |= {i for i, s in enumerate(corpus.songs) if s.group == groups[0]}
    training = [i for i in range(corpus.n_songs) if i not in validation]
    return corpus.subset(training), corpus.subset(sorted(validation))
