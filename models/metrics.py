"""Music statistics of tracks on the 16-step grid: what `chiplofi eval` judges generated music by.

Torch-free. A `Track` is the notes of one piece, ``(voice, pitch, start, length)`` with times in
16th steps from the track's first downbeat (`track_from_bars` builds one from the composer's
bars, `track_from_tokens` from a song of a `models.corpus.Corpus`, `random_track` draws random
notes). Every statistic is computed per track; `summarize` averages tracks with equal weight.
"Pitched notes" are those of lead, harmony and bass; drums count only where said.

Definitions
-----------
- **scale consistency**: the share of a track's pitched notes (counted by onset, not duration)
  whose pitch class lies in the best-fitting major scale; a natural-minor scale has the same
  pitch classes as its relative major, so this is the best of all 24 major and minor scales.
- **consonance**: over every pair of pitched notes that sound at the same time (their intervals
  ``[start, start + length)`` overlap; notes of one voice included, e.g. a chord's voicing), the
  share whose interval, in semitones modulo 12, is a unison/octave (0), third (3, 4), fourth
  (5), fifth (7) or sixth (8, 9). Seconds, the tritone and sevenths are dissonant. Uniformly
  random pitches give 7/12 = 0.58.
- **pitch-class entropy**: Shannon entropy, in bits, of the histogram of the 12 pitch classes
  of a track's pitched notes (counted by onset); 0 for one pitch class, at most log2 12 = 3.585.
- **empty-beat rate**: the share of a track's beats (quarter notes, 4 steps; a track of n bars
  has 4n) in which no note starts in any voice, drums included.
- **voice presence**: for each voice, the share of bars in which it sounds: a pitched voice
  sounds in a bar if one of its notes covers any step of the bar (held notes included), drums
  if a hit starts in it. Pooled over all bars of all tracks.

Repetition (token space, `models.tokens` format)
----------------------------------------------
A span of ``k`` consecutive bars is keyed by its three pitched voices only (rests, holds and
onsets per step), each onset written as its pitch class relative to the span's first onset
(steps in order, lead before harmony before bass): the key does not change when the span is
transposed or a note moves by octaves, so a copy in another key or register still matches.
Spans with fewer than ``2 k`` pitched onsets are too plain to count and are skipped.
`cross_track_repeats` counts the spans of generated tracks whose key occurs in another track;
`SpanIndex` holds the keys of every span of a corpus (the training data) and counts copies.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.corpus import Corpus
from models.tokens import (
    DRUM_CLASS_KEYS,
    DRUMS,
    FIRST_PITCH_TOKEN,
    HOLD,
    N_PITCHES,
    N_VOICES,
    PITCH_RANGES,
    PITCHED_VOICES,
    REST,
    STEPS_PER_BAR,
    STEPS_PER_BEAT,
    pitch_to_token,
)
from models.voices import VOICES

MAJOR_SCALE: tuple[int, ...] = (0, 2, 4, 5, 7, 9, 11)
CONSONANT_INTERVALS: frozenset[int] = frozenset((0, 3, 4, 5, 7, 8, 9))  # semitones modulo 12
N_PITCHED = len(PITCHED_VOICES)
MIN_ONSETS_PER_BAR = 2  # a span with fewer pitched onsets than this per bar is too plain to compare

# General MIDI drum key → drum class bit (kick, snare, closed hat, open hat, tom), as the data
# pipeline reads drums; the composer's fills and crashes use keys of these families.
_DRUM_KEY_CLASS: dict[int, int] = {}
for _class, _keys in enumerate(((35, 36), (37, 38, 39, 40), (42, 44, 51, 53, 54, 59, 69, 70, 82),
                                (46, 49, 52, 55, 57), (41, 43, 45, 47, 48, 50))):
    for _key in _keys:
        _DRUM_KEY_CLASS[_key] = _class

_SCALE_MASKS = np.zeros((12, 12), dtype=bool)  # (tonic, pitch class): in that major scale
for _tonic in range(12):
    _SCALE_MASKS[_tonic, [(_tonic + i) % 12 for i in MAJOR_SCALE]] = True
_CONSONANT = np.array([i in CONSONANT_INTERVALS for i in range(12)])
_LOW_PITCH = np.array([PITCH_RANGES[v][0] for v in PITCHED_VOICES], dtype=np.int64)


@dataclass(frozen=True)
class Track:
    """The notes of one track; times in 16th steps from its first downbeat."""

    notes: np.ndarray  # (N, 4) int64: voice index (VOICES order), MIDI pitch, start step, length >= 1
    n_bars: int

    @property
    def pitched(self) -> np.ndarray:
        """(M, 4) the notes of lead, harmony and bass."""
        return self.notes[self.notes[:, 0] < N_PITCHED]


def _make_track(rows: list[tuple[int, int, int, int]], n_bars: int) -> Track:
    notes = np.array(rows, dtype=np.int64).reshape(-1, 4)
    if len(notes):
        notes[:, 3] = np.maximum(notes[:, 3], 1)
    return Track(notes, int(n_bars))


def track_from_bars(bars: Sequence[Iterable[tuple[str, int, int, int, int]]]) -> Track:
    """A track from consecutive bars of notes ``(voice name, pitch, start, length, velocity)``
    (e.g. `ComposedBar.notes`, `bar_notes`); bar ``i`` starts at step ``16 i``."""
    rows = []
    for index, notes in enumerate(bars):
        origin = index * STEPS_PER_BAR
        for voice, pitch, start, length, _ in notes:
            rows.append((VOICES.index(voice), int(pitch), origin + int(start), int(length)))
    return _make_track(rows, len(bars))


def track_from_tokens(tokens: np.ndarray) -> Track:
    """A track from one song's tokens ``(n_bars, 16, 4)`` (see `models.tokens`): a pitched note
    lasts from its onset through the holds after it, across bar lines; holds with no note
    before them are ignored; each drum class bit is a one-step note of its key."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n_bars = len(tokens)
    steps = tokens.reshape(n_bars * STEPS_PER_BAR, N_VOICES)
    n_steps = len(steps)
    rows: list[np.ndarray] = []
    for voice in range(N_PITCHED):
        column = steps[:, voice]
        onsets = np.flatnonzero(column >= FIRST_PITCH_TOKEN)
        # First step at or after each step that is not a hold (n_steps if none).
        not_hold = np.where(column != HOLD, np.arange(n_steps), n_steps)
        next_not_hold = np.minimum.accumulate(not_hold[::-1])[::-1]
        ends = np.append(next_not_hold, n_steps)[onsets + 1]
        pitches = _LOW_PITCH[voice] + column[onsets] - FIRST_PITCH_TOKEN
        rows.append(np.stack([np.full(len(onsets), voice), pitches, onsets, ends - onsets], axis=1))
    for drum_class, key in enumerate(DRUM_CLASS_KEYS):
        hits = np.flatnonzero(steps[:, DRUMS] & (1 << drum_class))
        rows.append(np.stack([np.full(len(hits), DRUMS), np.full(len(hits), key), hits, np.ones(len(hits), np.int64)],
                             axis=1))
    notes = np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 4), dtype=np.int64)
    return Track(notes[np.lexsort((notes[:, 0], notes[:, 2]))], n_bars)


def corpus_tracks(corpus: Corpus) -> list[Track]:
    """One track per song of `corpus`."""
    return [track_from_tokens(corpus.tokens[corpus.song_slice(i)]) for i in range(corpus.n_songs)]


def random_track(n_bars: int, rng: np.random.Generator) -> Track:
    """Uniformly random notes: on every beat each pitched voice starts one note, at a random
    16th of the beat, of a pitch drawn uniformly from the voice's 36-semitone range, lasting
    1–4 steps; the drums play one hit of a random class per beat at a random 16th."""
    rows = []
    for beat in range(n_bars * STEPS_PER_BAR // STEPS_PER_BEAT):
        origin = beat * STEPS_PER_BEAT
        for voice in range(N_PITCHED):
            pitch = int(_LOW_PITCH[voice] + rng.integers(0, N_PITCHES))
            rows.append((voice, pitch, origin + int(rng.integers(0, STEPS_PER_BEAT)), int(rng.integers(1, 5))))
        drum_key = (36, 38, 42, 46, 45)[int(rng.integers(0, 5))]
        rows.append((DRUMS, drum_key, origin + int(rng.integers(0, STEPS_PER_BEAT)), 1))
    return _make_track(rows, n_bars)


# --------------------------------------------------------------------------- statistics

def pitch_class_histogram(track: Track) -> np.ndarray:
    """(12,) counts of the pitched notes' pitch classes (by onset)."""
    return np.bincount(track.pitched[:, 1] % 12, minlength=12)


def scale_consistency(track: Track) -> float:
    """Share of pitched notes in the best-fitting major/minor scale; NaN without pitched notes."""
    histogram = pitch_class_histogram(track)
    total = histogram.sum()
    if total == 0:
        return math.nan
    return float((_SCALE_MASKS @ histogram).max() / total)


def pitch_class_entropy(track: Track) -> float:
    """Entropy (bits) of the pitched notes' pitch-class histogram; NaN without pitched notes."""
    histogram = pitch_class_histogram(track)
    total = histogram.sum()
    if total == 0:
        return math.nan
    p = histogram[histogram > 0] / total
    return float(-(p * np.log2(p)).sum())


def consonance(track: Track) -> float:
    """Share of consonant intervals among pairs of pitched notes sounding together; NaN if no
    two pitched notes ever overlap."""
    notes = track.pitched
    order = np.argsort(notes[:, 2], kind="stable")
    pitch, start = notes[order, 1], notes[order, 2]
    end = start + notes[order, 3]
    consonant = pairs = 0
    for i in range(len(order)):
        # Notes starting later than i (or together with it, after it in order) that begin before i ends.
        last = int(np.searchsorted(start, end[i], side="left"))
        if last <= i + 1:
            continue
        intervals = np.abs(pitch[i + 1:last] - pitch[i]) % 12
        pairs += len(intervals)
        consonant += int(_CONSONANT[intervals].sum())
    return consonant / pairs if pairs else math.nan


def empty_beat_rate(track: Track) -> float:
    """Share of the track's beats in which no note (any voice) starts; NaN for an empty track."""
    n_beats = track.n_bars * STEPS_PER_BAR // STEPS_PER_BEAT
    if n_beats == 0:
        return math.nan
    beats = track.notes[:, 2] // STEPS_PER_BEAT
    played = np.zeros(n_beats, dtype=bool)
    played[beats[(beats >= 0) & (beats < n_beats)]] = True
    return float(1.0 - played.mean())


def voice_bars(track: Track) -> np.ndarray:
    """(4,) number of bars in which each voice sounds (see the module docstring)."""
    sounding = np.zeros((N_VOICES, max(track.n_bars, 0)), dtype=bool)
    for voice, _, start, length in track.notes:
        first = start // STEPS_PER_BAR
        last = first if voice == DRUMS else (start + length - 1) // STEPS_PER_BAR
        sounding[voice, max(first, 0):min(last, track.n_bars - 1) + 1] = True
    return sounding.sum(axis=1)


def voice_presence(track: Track) -> dict[str, float]:
    """Share of the track's bars in which each voice sounds."""
    counts = voice_bars(track)
    return {voice: float(counts[i] / track.n_bars) if track.n_bars else math.nan for i, voice in enumerate(VOICES)}


STATISTICS = {
    "scale_consistency": scale_consistency,
    "consonance": consonance,
    "pitch_class_entropy": pitch_class_entropy,
    "empty_beat_rate": empty_beat_rate,
}


def summarize(tracks: Sequence[Track]) -> dict[str, object]:
    """Statistics of many tracks: each per track, then the mean over tracks (tracks where it is
    undefined left out); voice presence pooled over all bars; counts of tracks, bars, notes."""
    result: dict[str, object] = {
        "tracks": len(tracks),
        "bars": int(sum(t.n_bars for t in tracks)),
        "notes": int(sum(len(t.notes) for t in tracks)),
    }
    for name, function in STATISTICS.items():
        values = np.array([function(t) for t in tracks], dtype=np.float64)
        values = values[~np.isnan(values)]
        result[name] = float(values.mean()) if values.size else math.nan
    bars = sum(t.n_bars for t in tracks)
    counts = sum((voice_bars(t) for t in tracks), np.zeros(N_VOICES, dtype=np.int64))
    result["voice_presence"] = {voice: float(counts[i] / bars) if bars else math.nan
                                for i, voice in enumerate(VOICES)}
    return result


# --------------------------------------------------------------------------- tokens and repetition

def tokens_from_track(track: Track) -> np.ndarray:
    """Tokens ``(n_bars, 16, 4)`` int16 of a track, by the rules of `models.tokens`: each voice is
    monophonic, of notes starting together the top one is kept (the lowest for the bass), a new
    onset cuts the note before, pitches fold by octaves into the voice's range; drums become
    class bit masks (keys of no class are left out)."""
    n_steps = track.n_bars * STEPS_PER_BAR
    tokens = np.zeros((n_steps, N_VOICES), dtype=np.int16)

    def priority(row: np.ndarray) -> tuple[int, int]:
        voice, pitch, start, _ = (int(x) for x in row)
        return start, -pitch if voice == 2 else pitch

    for row in sorted(track.notes, key=priority):
        voice, pitch, start, length = (int(x) for x in row)
        if not 0 <= start < n_steps:
            continue
        if voice == DRUMS:
            drum_class = _DRUM_KEY_CLASS.get(pitch)
            if drum_class is not None:
                tokens[start, DRUMS] |= 1 << drum_class
            continue
        end = min(start + length, n_steps)
        tokens[start, voice] = pitch_to_token(voice, pitch)
        tokens[start + 1:end, voice] = HOLD
        follow = end
        while follow < n_steps and tokens[follow, voice] == HOLD:  # the rest of a cut-short note
            tokens[follow, voice] = REST
            follow += 1
    return tokens.reshape(track.n_bars, STEPS_PER_BAR, N_VOICES)


def span_keys(tokens: np.ndarray, span_bars: int,
              min_onsets_per_bar: int = MIN_ONSETS_PER_BAR) -> tuple[list[bytes], np.ndarray]:
    """(keys, first bars) of every span of `span_bars` consecutive bars of one song's tokens
    ``(n_bars, 16, 4)`` that has at least ``min_onsets_per_bar * span_bars`` pitched onsets.

    A key is transposition- and octave-invariant (see the module docstring)."""
    n_bars = len(tokens)
    if n_bars < span_bars:
        return [], np.zeros(0, dtype=np.int64)
    pitched = np.asarray(tokens[..., :N_PITCHED], dtype=np.int64)  # (n, 16, 3)
    windows = np.lib.stride_tricks.sliding_window_view(pitched, span_bars, axis=0)  # (W, 16, 3, k)
    windows = np.moveaxis(windows, -1, 1).reshape(len(windows), span_bars * STEPS_PER_BAR * N_PITCHED)
    onset = windows >= FIRST_PITCH_TOKEN
    keep = np.flatnonzero(onset.sum(axis=1) >= min_onsets_per_bar * span_bars)
    windows, onset = windows[keep], onset[keep]
    voice = np.tile(np.arange(N_PITCHED), span_bars * STEPS_PER_BAR)
    pitch = windows - FIRST_PITCH_TOKEN + _LOW_PITCH[voice][None, :]
    reference = pitch[np.arange(len(windows)), np.argmax(onset, axis=1)]
    relative = (pitch - reference[:, None]) % 12
    codes = np.where(onset, FIRST_PITCH_TOKEN + relative, windows).astype(np.uint8)  # < 14 each
    return [row.tobytes() for row in codes], keep.astype(np.int64)


def cross_track_repeats(track_tokens: Sequence[np.ndarray], span_bars: int = 4,
                        examples: int = 5) -> dict[str, object]:
    """Spans of `span_bars` bars of each track that also occur in a different track.

    Returns ``spans`` (checked spans), ``repeated`` (spans whose key occurs in another track),
    ``share`` and up to `examples` of ``[track, first bar, other track]``."""
    owners: dict[bytes, set[int]] = defaultdict(set)
    per_track = []
    for number, tokens in enumerate(track_tokens):
        keys, starts = span_keys(tokens, span_bars)
        per_track.append((keys, starts))
        for key in keys:
            owners[key].add(number)
    checked = repeated = 0
    found: list[list[int]] = []
    for number, (keys, starts) in enumerate(per_track):
        for key, start in zip(keys, starts, strict=True):
            checked += 1
            others = owners[key] - {number}
            if others:
                repeated += 1
                if len(found) < examples:
                    found.append([number, int(start), min(others)])
    return {"span_bars": span_bars, "spans": checked, "repeated": repeated,
            "share": repeated / checked if checked else 0.0, "examples": found}


class SpanIndex:
    """The keys of every span of `span_bars` bars in the songs of a corpus (spans never cross
    songs), to find spans copied from it."""

    def __init__(self, corpus: Corpus, span_bars: int = 2) -> None:
        self.span_bars = span_bars
        self.keys: set[bytes] = set()
        for song in range(corpus.n_songs):
            keys, _ = span_keys(corpus.tokens[corpus.song_slice(song)], span_bars)
            self.keys.update(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def copies(self, track_tokens: Sequence[np.ndarray], examples: int = 5) -> dict[str, object]:
        """Spans of the given tracks found in the index: ``spans`` checked, ``copied``, ``share``
        and up to `examples` of ``[track, first bar]``."""
        checked = copied = 0
        found: list[list[int]] = []
        for number, tokens in enumerate(track_tokens):
            keys, starts = span_keys(tokens, self.span_bars)
            checked += len(keys)
            for key, start in zip(keys, starts, strict=True):
                if key in self.keys:
                    copied += 1
                    if len(found) < examples:
                        found.append([number, int(start)])
        return {"span_bars": self.span_bars, "spans": checked, "copied": copied,
                "share": copied / checked if checked else 0.0, "examples": found}
