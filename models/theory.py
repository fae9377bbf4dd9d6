"""Keys and chords: their names (spelled as a key spells them), parsing them from text, and
estimating them from notes (Krumhansl–Schmuckler for the key, pitch-class templates for chords).

A key is ``(tonic, mode)``: tonic 0..11 (C = 0), mode `MAJOR` or `MINOR`. A chord is
``(root, quality)``: root 0..11 or `NO_CHORD_ROOT` for a bar without pitched notes, quality an
index into `CHORD_QUALITIES` (`CHORD_INTERVALS` gives its pitch classes above the root).
Numpy only.
"""

from __future__ import annotations

import numpy as np

from models.errors import ModelError

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


def chord_tones(root: int, quality: int) -> set[int]:
    """The pitch classes of the chord on `root` (0-11) of quality index `quality` (in CHORD_QUALITIES)."""
    return {(root + interval) % 12 for interval in CHORD_INTERVALS[CHORD_QUALITIES[quality]]}


def normalising_shift(key_tonic: int, key_mode: int) -> int:
    """Semitones (-6..5) that move a key to C major (major) or A minor (minor)."""
    target = 0 if key_mode == MAJOR else 9
    return ((target - key_tonic + 6) % 12) - 6


def transpose_chords(chords: np.ndarray, semitones: int) -> np.ndarray:
    """Chords `(..., 2)` with roots moved by `semitones` (no-chord bars stay as they are)."""
    out = np.array(chords, copy=True)
    roots = out[..., 0]
    has_root = roots != NO_CHORD_ROOT
    roots[has_root] = (roots[has_root] + semitones) % 12
    return out


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
