"""What a listener hears, as numbers: per-segment features and per-set figures of pieces of music.

Torch-free (numpy). Every set of music — real songs, the composer's tracks, the rule-based
parts, random notes — first becomes `Piece`s in one space: key-normalised (C major / A minor,
by `models.theory.normalising_shift`), on the 16-step grid, and in the token view of
`models.tokens` (each pitched voice monophonic, pitches folded into the voice's range, drums as
class hits), so that real and generated music are measured the same way. Generated pieces also
keep their notes *as played* (the harmony's full voicings) for the figures that need them.

Per-segment features (4-bar segments, `segment_features`; in the style of Yang & Lerch 2020),
computed over the pitched voices unless said otherwise; histograms are normalised to sum 1:
- ``pitch_count``        distinct MIDI pitches
- ``pitch_class_histogram``   (12,) pitch classes of the onsets
- ``pitch_class_transitions`` (144,) pitch class → next pitch class, onsets in time order
  (notes starting together in pitch order)
- ``pitch_range``        highest - lowest pitch, semitones
- ``lead_intervals``     (25,) lead interval to the next lead onset, -12..+12 (wider clipped)
- ``inter_onset_intervals`` (16,) steps between consecutive onset times, 1..16 (longer clipped)
- ``note_lengths``       (9,) lengths in steps: 1, 2, 3, 4, 5–6, 7–8, 9–12, 13–16, >16
- ``notes_per_bar``      pitched notes / 4
- ``drum_onsets_per_bar`` drum hits / 4
- ``rhythm_entropy``     bits: entropy of the onsets' positions within the bar (all voices)
Segments with fewer than 2 pitched onsets (silence, a held chord) are left out.
`VALUE_SUMMARIES` says which scalar stands for a histogram feature when the feature values
themselves are compared.

Figures of a set (`set_figures`), each defined where it is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import metrics, theory
from models.corpus import Corpus
from models.theory import CHORD_QUALITIES, NO_CHORD_ROOT, normalising_shift, parse_key
from models.tokens import DRUMS, STEPS_PER_BAR, STEPS_PER_BEAT

LEAD, HARMONY, BASS = 0, 1, 2
SEGMENT_BARS = 4
MIN_SEGMENT_ONSETS = 2
SCALE = frozenset((0, 2, 4, 5, 7, 9, 11))  # C major = A natural minor, the normalised key's scale
SNARE_BIT, TOM_BIT = 1 << 1, 1 << 4  # drum class bits (models.tokens.DRUM_CLASSES)
PHRASE_BARS = 8  # where a piece has no section labels, its sections are taken as 8-bar phrases
SELF_SIMILARITY_LAGS = (4, 8, 16)
MIN_DRUM_BARS = 8  # a piece with fewer drum bars says nothing about grooves within a track
LENGTH_BIN_EDGES = np.array([1, 2, 3, 4, 5, 7, 9, 13, 17])  # lower edges in steps of `note_lengths`


@dataclass(frozen=True)
class Piece:
    """One song or track, key-normalised.

    `chords` per bar (root, quality) as `models.corpus` stores them, NO_CHORD_ROOT for none, or
    None when the source has no chord labels (random notes). `section_ends` marks the last bar
    of each section but the piece's last bar."""

    track: metrics.Track  # token view
    played: metrics.Track  # as played (the token view for real songs)
    chords: np.ndarray | None  # (n_bars, 2) int64
    section_ends: np.ndarray  # (n_bars,) bool

    @property
    def n_bars(self) -> int:
        return self.track.n_bars


# --------------------------------------------------------------------------- pieces

def phrase_ends(n_bars: int, phrase_bars: int = PHRASE_BARS) -> np.ndarray:
    """(n_bars,) bool: the last bar of every `phrase_bars`-bar phrase but the piece's last bar."""
    ends = (np.arange(n_bars) % phrase_bars) == phrase_bars - 1
    if n_bars:
        ends[-1] = False
    return ends


def section_ends_from_labels(labels: Sequence[str]) -> np.ndarray:
    """(n_bars,) bool: bars whose next bar has another section label."""
    ends = np.zeros(len(labels), dtype=bool)
    for i in range(len(labels) - 1):
        ends[i] = labels[i] != labels[i + 1]
    return ends


def parse_chord(name: str) -> tuple[int, int]:
    """(root, quality index) of a chord name such as 'Dm9', 'F#maj7', 'Bb' (`models.theory.parse_chord`);
    'N.C.' gives (NO_CHORD_ROOT, 0). Raises ModelError naming the text for an unknown chord."""
    if name in ("N.C.", ""):
        return NO_CHORD_ROOT, 0
    root, quality = theory.parse_chord(name)
    return root, CHORD_QUALITIES.index(quality)


def _token_view(played: metrics.Track) -> metrics.Track:
    return metrics.track_from_tokens(metrics.tokens_from_track(played))


def _shift_notes(notes: Iterable[tuple[str, int, int, int, int]], shift: int) -> list[tuple[str, int, int, int, int]]:
    return [(v, p if v == "drums" else p + shift, s, n, vel) for v, p, s, n, vel in notes]


def _piece(bars: Sequence[Sequence[tuple[str, int, int, int, int]]], chord_names: Sequence[str], shift: int,
           section_ends: np.ndarray) -> Piece:
    """A piece from bars of step-timed notes in a key `shift` semitones from C major / A minor,
    with a chord name per bar."""
    played = metrics.track_from_bars([_shift_notes(notes, shift) for notes in bars])
    chords = np.array([parse_chord(name) for name in chord_names], dtype=np.int64).reshape(-1, 2)
    has_root = chords[:, 0] != NO_CHORD_ROOT
    chords[has_root, 0] = (chords[has_root, 0] + shift) % 12
    return Piece(_token_view(played), played, chords, section_ends)


def _key_shift(key: str) -> int:
    return normalising_shift(*parse_key(key))


def piece_from_bars(bars: Sequence[Any]) -> Piece:
    """A piece from one whole track of `ComposedBar`s (key, chord and section per bar)."""
    return _piece([bar.notes for bar in bars], [bar.chord for bar in bars], _key_shift(bars[0].key),
                  section_ends_from_labels([bar.section for bar in bars]))


def piece_from_rule_bars(bars: Sequence[Any]) -> Piece:
    """A piece from `models.rule_parts.RuleBar`s (times in beats, put on the 16-step grid);
    sections taken as 8-bar phrases."""
    stepped = [[(v, p, int(round(s * STEPS_PER_BEAT)), max(1, int(round(d * STEPS_PER_BEAT))), vel)
                for v, p, s, d, vel in bar.notes] for bar in bars]
    return _piece(stepped, [bar.chord for bar in bars], _key_shift(bars[0].key), phrase_ends(len(bars)))


def random_piece(n_bars: int, rng: np.random.Generator) -> Piece:
    """Random notes (`metrics.random_track`): no key, no chords, 8-bar phrases."""
    played = metrics.random_track(n_bars, rng)
    return Piece(_token_view(played), played, None, phrase_ends(n_bars))


def corpus_pieces(corpus: Corpus) -> list[Piece]:
    """One piece per song of `corpus`, key-normalised; its bars' chord labels; 8-bar phrases."""
    normalised = corpus.key_normalised()
    pieces = []
    for i in range(normalised.n_songs):
        part = normalised.song_slice(i)
        track = metrics.track_from_tokens(normalised.tokens[part])
        pieces.append(Piece(track, track, normalised.chords[part].astype(np.int64), phrase_ends(track.n_bars)))
    return pieces


# --------------------------------------------------------------------------- per-segment features

def _normalised(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts


def _histogram(values: np.ndarray, bins: int) -> np.ndarray:
    return _normalised(np.bincount(values, minlength=bins)[:bins].astype(np.float64))


def _entropy(histogram: np.ndarray) -> float:
    p = histogram[histogram > 0]
    p = p / p.sum() if p.size else p
    return float(-(p * np.log2(p)).sum()) if p.size else math.nan


def _onset_order(notes: np.ndarray) -> np.ndarray:
    """Notes (N, 4) in time order, notes starting together lowest first."""
    return notes[np.lexsort((notes[:, 1], notes[:, 2]))]


def _pc_transitions(notes: np.ndarray) -> np.ndarray:
    """(144,) counts of pitch class → next pitch class over `notes` in onset order."""
    pcs = _onset_order(notes)[:, 1] % 12
    if len(pcs) < 2:
        return np.zeros(144)
    return np.bincount(pcs[:-1] * 12 + pcs[1:], minlength=144).astype(np.float64)


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def segment_features(notes: np.ndarray, n_bars: int = SEGMENT_BARS) -> dict[str, np.ndarray]:
    """The features of one segment's notes (N, 4) (voice, pitch, start step, length), see the
    module docstring; each a float vector (scalars of shape (1,))."""
    pitched = notes[notes[:, 0] != DRUMS]
    drums = notes[notes[:, 0] == DRUMS]
    lead = _onset_order(pitched[pitched[:, 0] == LEAD])
    onset_times = np.unique(pitched[:, 2])
    lengths = pitched[:, 3]
    intervals = np.clip(np.diff(lead[:, 1]), -12, 12) + 12
    return {
        "pitch_count": np.array([len(np.unique(pitched[:, 1]))], dtype=np.float64),
        "pitch_class_histogram": _histogram(pitched[:, 1] % 12, 12),
        "pitch_class_transitions": _normalised(_pc_transitions(pitched)),
        "pitch_range": np.array([float(np.ptp(pitched[:, 1])) if len(pitched) else 0.0]),
        "lead_intervals": _histogram(intervals.astype(np.int64), 25),
        "inter_onset_intervals": _histogram(np.clip(np.diff(onset_times), 1, 16).astype(np.int64) - 1, 16),
        "note_lengths": _histogram(np.searchsorted(LENGTH_BIN_EDGES, lengths, side="right") - 1, 9),
        "notes_per_bar": np.array([len(pitched) / n_bars]),
        "drum_onsets_per_bar": np.array([len(drums) / n_bars]),
        "rhythm_entropy": np.array([_entropy(np.bincount(notes[:, 2] % STEPS_PER_BAR, minlength=STEPS_PER_BAR)
                                             .astype(np.float64))]),
    }


FEATURES: tuple[str, ...] = ("pitch_count", "pitch_class_histogram", "pitch_class_transitions", "pitch_range",
                             "lead_intervals", "inter_onset_intervals", "note_lengths", "notes_per_bar",
                             "drum_onsets_per_bar", "rhythm_entropy")


def _bin_mean(centres: np.ndarray) -> Callable[[np.ndarray], float]:
    def mean(histogram: np.ndarray) -> float:
        return float(histogram @ centres) if histogram.sum() > 0 else math.nan
    return mean


# A histogram feature's scalar stand-in for the value overlap: (description, function of the vector).
VALUE_SUMMARIES: dict[str, tuple[str, Callable[[np.ndarray], float]]] = {
    "pitch_class_histogram": ("entropy, bits", _entropy),
    "pitch_class_transitions": ("entropy, bits", _entropy),
    "lead_intervals": ("mean |interval|, semitones", _bin_mean(np.abs(np.arange(-12, 13)).astype(np.float64))),
    "inter_onset_intervals": ("mean, steps", _bin_mean(np.arange(1, 17, dtype=np.float64))),
    "note_lengths": ("mean of the bins' lower edges, steps", _bin_mean(LENGTH_BIN_EDGES.astype(np.float64))),
}


def segments(piece: Piece, n_bars: int = SEGMENT_BARS) -> list[np.ndarray]:
    """The notes (N, 4) of each whole `n_bars`-bar segment of a piece (token view), times from
    the segment's start; segments with fewer than MIN_SEGMENT_ONSETS pitched onsets left out."""
    notes = piece.track.notes
    result = []
    span = n_bars * STEPS_PER_BAR
    for first in range(0, piece.n_bars - n_bars + 1, n_bars):
        start = first * STEPS_PER_BAR
        inside = notes[(notes[:, 2] >= start) & (notes[:, 2] < start + span)].copy()
        inside[:, 2] -= start
        if int((inside[:, 0] != DRUMS).sum()) >= MIN_SEGMENT_ONSETS:
            result.append(inside)
    return result


@dataclass
class FeatureSet:
    """The features of many segments: per feature a (n_segments, dim) matrix."""

    vectors: dict[str, np.ndarray]

    @property
    def n_segments(self) -> int:
        return len(next(iter(self.vectors.values()))) if self.vectors else 0

    def values(self, feature: str) -> np.ndarray:
        """(n,) the feature's scalar values (histograms through VALUE_SUMMARIES), NaN left out."""
        matrix = self.vectors[feature]
        if feature in VALUE_SUMMARIES:
            summary = VALUE_SUMMARIES[feature][1]
            values = np.array([summary(row) for row in matrix], dtype=np.float64)
        else:
            values = matrix[:, 0].astype(np.float64)
        return values[np.isfinite(values)]

    def subset(self, rows: np.ndarray) -> FeatureSet:
        return FeatureSet({name: matrix[rows] for name, matrix in self.vectors.items()})


def feature_set(pieces: Sequence[Piece]) -> FeatureSet:
    """The features of every 4-bar segment of `pieces`."""
    rows = [segment_features(notes) for piece in pieces for notes in segments(piece)]
    if not rows:
        return FeatureSet({name: np.zeros((0, 1)) for name in FEATURES})
    return FeatureSet({name: np.stack([row[name] for row in rows]) for name in FEATURES})


# --------------------------------------------------------------------------- per-set figures

def _sounding(track: metrics.Track) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) (3, n_steps) int: per pitched voice and step the highest and lowest pitch
    sounding (-1 / a large number where silent)."""
    n_steps = track.n_bars * STEPS_PER_BAR
    high = np.full((3, n_steps), -1, dtype=np.int64)
    low = np.full((3, n_steps), 1000, dtype=np.int64)
    for voice, pitch, start, length in track.pitched:
        part = slice(max(int(start), 0), min(int(start + length), n_steps))
        high[voice, part] = np.maximum(high[voice, part], pitch)
        low[voice, part] = np.minimum(low[voice, part], pitch)
    return high, low


def _share(hits: int, total: int) -> float:
    return hits / total if total else math.nan


def lead_repeats(pieces: Sequence[Piece]) -> float:
    """Share of consecutive lead onsets (pairs) with the same pitch, pooled over pieces."""
    same = pairs = 0
    for piece in pieces:
        lead = _onset_order(piece.track.notes[piece.track.notes[:, 0] == LEAD])[:, 1]
        same += int((lead[1:] == lead[:-1]).sum())
        pairs += max(len(lead) - 1, 0)
    return _share(same, pairs)


def distinct_lead_pitches(pieces: Sequence[Piece]) -> float:
    """Mean number of distinct lead pitches per 4-bar segment, over segments with ≥ 2 lead onsets."""
    counts = []
    for piece in pieces:
        notes = piece.track.notes
        lead = notes[notes[:, 0] == LEAD]
        segment = lead[:, 2] // (SEGMENT_BARS * STEPS_PER_BAR)
        for number in np.unique(segment):
            if (number + 1) * SEGMENT_BARS > piece.n_bars:
                continue  # a part segment at the end
            pitches = lead[segment == number, 1]
            if len(pitches) >= 2:
                counts.append(len(np.unique(pitches)))
    return _mean_or_nan(np.array(counts, dtype=np.float64))


def root_on_downbeat(pieces: Sequence[Piece]) -> float:
    """Share of bars with a chord and a bass onset whose first bass onset is the chord's root
    (pitch class); the lowest of notes starting together."""
    hits = bars = 0
    for piece in pieces:
        if piece.chords is None:
            continue
        bass = _onset_order(piece.track.notes[piece.track.notes[:, 0] == BASS])
        bar_of = bass[:, 2] // STEPS_PER_BAR
        first = np.unique(bar_of, return_index=True)
        for bar, index in zip(*first, strict=True):
            root = int(piece.chords[bar, 0]) if 0 <= bar < piece.n_bars else NO_CHORD_ROOT
            if root == NO_CHORD_ROOT:
                continue
            bars += 1
            hits += int(bass[index, 1] % 12 == root)
    return _share(hits, bars)


def _drum_bars(piece: Piece) -> np.ndarray:
    """(n_bars, 16) int: the drum class bits at every step of every bar (token view)."""
    patterns = np.zeros((piece.n_bars, STEPS_PER_BAR), dtype=np.int64)
    notes = piece.track.notes
    drums = notes[(notes[:, 0] == DRUMS) & (notes[:, 2] < piece.n_bars * STEPS_PER_BAR)]
    keys = {key: 1 << index for index, key in enumerate(metrics.DRUM_CLASS_KEYS)}
    for _, key, start, _ in drums:
        patterns[start // STEPS_PER_BAR, start % STEPS_PER_BAR] |= keys.get(int(key), 0)
    return patterns


def drum_figures(pieces: Sequence[Piece]) -> dict[str, float]:
    """Grooves, over pieces with ≥ MIN_DRUM_BARS drum bars (bars with a drum hit):
    - ``drum_bar_variety``: per piece, distinct drum patterns (the 16 steps' class hits) /
      drum bars, averaged over pieces (a piece that keeps one groove and fills every 8 bars:
      about 1/8 + 1/drum bars);
    - ``backbeat``: share of drum bars with a snare on beat 2 or 4 (step 4 or 12);
    - ``fills_at_section_ends``, ``fills_elsewhere``: share of drum bars that are fills, at the
      last bar of a section (`Piece.section_ends`) and at every other bar but the last. A fill:
      its second half (steps 8–15) has ≥ 3 more hits than the piece's median second half, or
      toms there when fewer than a quarter of the piece's drum bars have them.
    """
    variety, backbeat, drum_bar_total = [], 0, 0
    fills = {True: [0, 0], False: [0, 0]}  # at a section end? → [fills, drum bars]
    for piece in pieces:
        patterns = _drum_bars(piece)
        played = patterns.any(axis=1)
        if int(played.sum()) < MIN_DRUM_BARS:
            continue
        drum_bars = patterns[played]
        variety.append(len({row.tobytes() for row in drum_bars}) / len(drum_bars))
        backbeat += int((((drum_bars[:, 4] | drum_bars[:, 12]) & SNARE_BIT) > 0).sum())
        drum_bar_total += len(drum_bars)
        second_half = np.array([[bin(int(x)).count("1") for x in row[8:]] for row in patterns]).sum(axis=1)
        toms = (patterns[:, 8:] & TOM_BIT).any(axis=1)
        usual_toms = toms[played].mean() >= 0.25
        fill = (second_half >= np.median(second_half[played]) + 3) | (toms & ~usual_toms)
        for bar in np.flatnonzero(played[:-1]):
            at_end = bool(piece.section_ends[bar])
            fills[at_end][0] += int(fill[bar])
            fills[at_end][1] += 1
    return {
        "drum_bar_variety": _mean_or_nan(np.array(variety)),
        "backbeat": _share(backbeat, drum_bar_total),
        "fills_at_section_ends": _share(*fills[True]),
        "fills_elsewhere": _share(*fills[False]),
        "pieces_with_drums": float(len(variety)),
    }


def _cosine_matrix(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms > 0, norms, 1.0)
    return unit @ unit.T


def track_similarity(pieces: Sequence[Piece]) -> float:
    """Mean cosine similarity of the pitch-class transition counts of every pair of pieces
    (pieces with ≥ 2 pitched onsets)."""
    rows = np.array([_pc_transitions(p.track.pitched) for p in pieces]).reshape(-1, 144)
    rows = rows[rows.sum(axis=1) > 0]
    if len(rows) < 2:
        return math.nan
    upper = np.triu_indices(len(rows), k=1)
    return float(_cosine_matrix(rows)[upper].mean())


def chord_figures(pieces: Sequence[Piece]) -> dict[str, float]:
    """Chords, as chord events (runs of bars with the same chord label), NO_CHORD bars left out:
    - ``non_diatonic_chords``: share of chords with a tone outside C major / A natural minor;
    - ``non_diatonic_resolved_by_fifth``: of those followed by another chord, the share whose
      next chord's root is a fifth below (V/x → x, V7 → i)."""
    total = outside = followed = resolved = 0
    for piece in pieces:
        if piece.chords is None:
            continue
        chords = piece.chords[piece.chords[:, 0] != NO_CHORD_ROOT]
        if not len(chords):
            continue
        change = np.ones(len(chords), dtype=bool)
        change[1:] = (chords[1:] != chords[:-1]).any(axis=1)
        events = chords[change]
        for i, (root, quality) in enumerate(events):
            tones = theory.chord_tones(int(root), int(quality))
            total += 1
            if tones <= SCALE:
                continue
            outside += 1
            if i + 1 < len(events):
                followed += 1
                resolved += int(int(events[i + 1, 0]) == (int(root) + 5) % 12)
    return {"non_diatonic_chords": _share(outside, total),
            "non_diatonic_resolved_by_fifth": _share(resolved, followed)}


def register_figures(pieces: Sequence[Piece]) -> dict[str, float]:
    """Register order on the notes as played (real songs: the token view):
    - ``lead_above_harmony``: share of steps where lead and harmony both sound in which the
      lead is above every harmony note;
    - ``harmony_below_bass``: share of steps where harmony and bass both sound in which a
      harmony note is below the bass."""
    above = both_lh = below = both_hb = 0
    for piece in pieces:
        high, low = _sounding(piece.played)
        lead_harmony = (high[LEAD] >= 0) & (high[HARMONY] >= 0)
        above += int((high[LEAD][lead_harmony] > high[HARMONY][lead_harmony]).sum())
        both_lh += int(lead_harmony.sum())
        harmony_bass = (high[HARMONY] >= 0) & (high[BASS] >= 0)
        below += int((low[HARMONY][harmony_bass] < high[BASS][harmony_bass]).sum())
        both_hb += int(harmony_bass.sum())
    return {"lead_above_harmony": _share(above, both_lh), "harmony_below_bass": _share(below, both_hb)}


def density_figures(pieces: Sequence[Piece]) -> dict[str, float]:
    """Pitched notes per bar and mean note length in beats (token view), pitched notes per bar
    as played (with the harmony's voicings), mean lead MIDI pitch."""
    bars = sum(p.n_bars for p in pieces)
    pitched = [p.track.pitched for p in pieces]
    notes = np.concatenate(pitched) if pitched else np.zeros((0, 4), dtype=np.int64)
    lead = notes[notes[:, 0] == LEAD]
    played = sum(len(p.played.pitched) for p in pieces)
    return {
        "notes_per_bar": len(notes) / bars if bars else math.nan,
        "notes_per_bar_as_played": played / bars if bars else math.nan,
        "note_length_beats": _mean_or_nan(notes[:, 3] / STEPS_PER_BEAT),
        "lead_mean_pitch": _mean_or_nan(lead[:, 1].astype(np.float64)),
    }


def bar_vectors(piece: Piece) -> np.ndarray:
    """(n_bars, 28): per bar its pitched onsets' pitch-class counts (12) and onset positions
    (16, 0/1), each part scaled to unit length; zeros for a bar without onsets."""
    notes = piece.track.pitched
    bar = notes[:, 2] // STEPS_PER_BAR
    inside = bar < piece.n_bars
    pcs = np.zeros((piece.n_bars, 12))
    np.add.at(pcs, (bar[inside], notes[inside, 1] % 12), 1.0)
    positions = np.zeros((piece.n_bars, STEPS_PER_BAR))
    positions[bar[inside], notes[inside, 2] % STEPS_PER_BAR] = 1.0
    parts = []
    for part in (pcs, positions):
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        parts.append(part / np.where(norms > 0, norms, 1.0))
    return np.concatenate(parts, axis=1) / math.sqrt(2.0)


def self_similarity(pieces: Sequence[Piece], lags: Sequence[int] = SELF_SIMILARITY_LAGS) -> dict[str, float | int]:
    """``self_similarity_<lag>``: mean cosine similarity of bar vectors (`bar_vectors`) `lag`
    bars apart, over all such pairs of non-empty bars in the pieces; ``self_similarity_pairs_<lag>``:
    how many pairs that is (short real pieces give few at 16 bars)."""
    sums = {lag: [0.0, 0] for lag in lags}
    for piece in pieces:
        vectors = bar_vectors(piece)
        filled = np.linalg.norm(vectors, axis=1) > 0
        for lag in lags:
            if piece.n_bars <= lag:
                continue
            both = filled[:-lag] & filled[lag:]
            cosine = (vectors[:-lag] * vectors[lag:]).sum(axis=1)  # unit vectors: dot = cosine
            sums[lag][0] += float(cosine[both].sum())
            sums[lag][1] += int(both.sum())
    figures = {f"self_similarity_{lag}": total / count if count else math.nan for lag, (total, count) in sums.items()}
    return figures | {f"self_similarity_pairs_{lag}": count for lag, (_, count) in sums.items()}


def set_figures(pieces: Sequence[Piece]) -> dict[str, float | int]:
    """Every figure of a set of pieces (see the functions above), plus its size."""
    return {
        "pieces": float(len(pieces)),
        "bars": float(sum(p.n_bars for p in pieces)),
        "lead_repeated_notes": lead_repeats(pieces),
        "distinct_lead_pitches_per_4_bars": distinct_lead_pitches(pieces),
        "bass_root_on_first_onset": root_on_downbeat(pieces),
        **drum_figures(pieces),
        "track_similarity": track_similarity(pieces),
        **chord_figures(pieces),
        **register_figures(pieces),
        **density_figures(pieces),
        **self_similarity(pieces),
    }

