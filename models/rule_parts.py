"""A small rule-based lo-fi part generator: the stream's demo and fallback bed, and the
evaluation's rule-based baseline (torch-free, plain data; `streamer.fallback` makes its bars).

No model, no randomness beyond its seed: a jazzy four-chord loop (maj7 / m7 / 9th colours),
a walking-ish triangle bass, a lazy boom-bap noise kit and a pentatonic pulse melody.
Times are in beats from the bar's downbeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (voice, pitch, start in beats, duration in beats, velocity)
BeatNote = tuple[str, int, float, float, int]

# Chords as (root offset from the key's tonic, intervals of the voicing above the root).
MAJ7, MIN7, DOM9, MIN9 = (4, 7, 11), (3, 7, 10), (4, 10, 14), (3, 10, 14)
PROGRESSIONS: tuple[tuple[tuple[int, tuple[int, ...], str], ...], ...] = (
    ((0, MAJ7, "maj7"), (9, MIN7, "m7"), (2, MIN9, "m9"), (7, DOM9, "9")),  # I – vi – ii – V
    ((5, MAJ7, "maj7"), (4, MIN7, "m7"), (2, MIN7, "m7"), (0, MAJ7, "maj7")),  # IV – iii – ii – I
    ((2, MIN9, "m9"), (7, DOM9, "9"), (0, MAJ7, "maj7"), (0, MAJ7, "maj7")),  # ii – V – I
)
NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
PENTATONIC = (0, 2, 4, 7, 9)

# Drum pattern on the 16-step grid: (step, GM key, velocity).
KICK, SNARE, CLOSED_HAT, OPEN_HAT = 36, 38, 42, 46
BOOM_BAP = ((0, KICK, 100), (7, KICK, 70), (10, KICK, 90), (4, SNARE, 96), (12, SNARE, 100))


@dataclass(frozen=True)
class RuleBar:
    """One bar of the rule-based parts: notes in beats, and what the bar is."""

    notes: tuple[BeatNote, ...]
    tempo_bpm: float
    track_id: str
    bar_index: int
    key: str  # e.g. "Eb major"
    chord: str  # e.g. "Cm7"


class RuleParts:
    """Endless bars in one key (major) and tempo; `next_bar()` gives the next one."""

    def __init__(self, seed: int = 0, tonic: int = 0, tempo_bpm: float = 80.0, track_id: str = "rule") -> None:
        self._rng = np.random.default_rng(seed)
        self.tonic = tonic
        self.tempo_bpm = tempo_bpm
        self.track_id = track_id
        self._progression = PROGRESSIONS[int(self._rng.integers(len(PROGRESSIONS)))]
        self._bar_index = 0
        self._melody_degree = 2

    def _melody(self) -> list[BeatNote]:
        notes = []
        step = 0
        while step < 16:
            length = int(self._rng.choice((2, 2, 3, 4, 6)))
            if self._rng.random() < 0.75:
                self._melody_degree = int(np.clip(self._melody_degree + self._rng.integers(-2, 3), 0, 9))
                octave, degree = divmod(self._melody_degree, len(PENTATONIC))
                pitch = 72 + self.tonic + 12 * octave + PENTATONIC[degree]
                notes.append(("lead", pitch, step / 4.0, length / 4.0 * 0.9, int(self._rng.integers(70, 100))))
            step += length
        return notes

    def next_bar(self) -> RuleBar:
        root_offset, intervals, quality = self._progression[self._bar_index % len(self._progression)]
        root = 48 + (self.tonic + root_offset) % 12  # C3..B3
        notes: list[BeatNote] = []
        # Harmony: the chord voiced above the root, struck on 1 and pushed on the "and" of 3.
        for start, length in ((0.0, 2.4), (2.5, 1.4)):
            notes += [("harmony", root + 12 + i, start, length, 62) for i in intervals]
        # Bass: root, fifth, approach note into the next bar.
        notes += [("bass", root - 12, 0.0, 1.5, 100), ("bass", root - 5, 2.0, 1.0, 90),
                  ("bass", root - 12 + int(self._rng.choice((0, 2, 10, 11))), 3.5, 0.5, 80)]
        for step, key, velocity in BOOM_BAP:
            notes.append(("drums", key, step / 4.0, 0.25, velocity))
        for step in range(0, 16, 2):
            key = OPEN_HAT if step == 14 and self._bar_index % 4 == 3 else CLOSED_HAT
            notes.append(("drums", key, step / 4.0, 0.25, 60 + (12 if step % 4 == 0 else 0)))
        notes += self._melody()
        bar = RuleBar(tuple(notes), self.tempo_bpm, self.track_id, self._bar_index,
                      key=f"{NOTE_NAMES[self.tonic]} major", chord=f"{NOTE_NAMES[root % 12]}{quality}")
        self._bar_index += 1
        return bar
