"""Map the parts of an ordinary multi-track MIDI file onto chiplofi's four voices.

Torch-free on purpose: the training data pipeline and the `render` command both use it.
NES files, whose channels already are the voices, are handled in `models/midi_bars.py`.

Rules, by role then register:
- drum parts (`is_drum`) → drums;
- bass programs (GM 32–39) or parts whose median pitch is below MIDI 50 → bass;
- with no such part, the lowest of several parts takes the bass if it sits low enough;
- a part named as the melody ("melody", "vocal", "lead"; POP909 names its tune `MELODY`) → lead;
- otherwise, of the remaining parts that play through much of the song, the one that is highest
  and most melodic (few simultaneous notes) → lead; everything else → harmony;
- a file with a single polyphonic part (a piano loop) is split by note: in each group of
  notes that start together, a low note below C4 goes to bass, the top note of a melodic line
  to lead (only when the part has a line above its chords), the rest to harmony.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from models.midi_lib import pretty_midi

VOICES: tuple[str, ...] = ("lead", "harmony", "bass", "drums")

BASS_PROGRAMS = range(32, 40)
BASS_MEDIAN_PITCH = 50  # below D3: plays the bass role
SPLIT_BASS_BELOW = 60  # single-part split: lowest chord note under C4 becomes the bass
LOWEST_PART_BASS_BELOW = 57  # else: the lowest of several parts, if under A3, is the bass
LEAD_MIN_COVERAGE = 0.33  # lead candidates sound at least this share of the busiest part's time
ONSET_GROUP_S = 0.03  # notes starting within 30 ms of each other sound together
MELODY_NAMES = ("melody", "vocal", "lead")  # a part whose name says it carries the tune


def _polyphony(notes: list[pretty_midi.Note]) -> float:
    """Mean number of notes sounding at each note onset (1.0 = a monophonic line)."""
    starts = np.array([n.start for n in notes])
    ends = np.array([n.end for n in notes])
    sounding = [(np.count_nonzero((starts <= t + 1e-6) & (ends > t + 1e-6))) for t in starts]
    return float(np.mean(sounding)) if sounding else 0.0


def _coverage(notes: list[pretty_midi.Note]) -> float:
    """Seconds during which at least one of `notes` sounds."""
    covered, reach = 0.0, -np.inf
    for note in sorted(notes, key=lambda n: n.start):
        if note.end > reach:
            covered += note.end - max(note.start, reach)
            reach = note.end
    return covered


def _split_single_part(notes: list[pretty_midi.Note]) -> dict[str, list[pretty_midi.Note]]:
    """Split one polyphonic part (e.g. a piano loop) into lead / harmony / bass by register."""
    parts: dict[str, list[pretty_midi.Note]] = {voice: [] for voice in VOICES}
    ordered = sorted(notes, key=lambda n: (n.start, n.pitch))
    groups: list[list[pretty_midi.Note]] = []
    for note in ordered:
        if groups and note.start - groups[-1][0].start <= ONSET_GROUP_S:
            groups[-1].append(note)
        else:
            groups.append([note])
    # A separate melodic line exists when many onsets are single notes above the chords' middle.
    median_pitch = float(np.median([n.pitch for n in notes]))
    single_high = sum(1 for g in groups if len(g) == 1 and g[0].pitch > median_pitch)
    has_line = single_high >= max(2, len(groups) // 4)
    for group in groups:
        group = sorted(group, key=lambda n: n.pitch)
        if len(group) >= 2 and group[0].pitch < SPLIT_BASS_BELOW:
            parts["bass"].append(group.pop(0))
        if has_line and group and (len(group) == 1 and group[0].pitch > median_pitch or len(group) >= 4):
            parts["lead"].append(group.pop())
        parts["harmony"].extend(group)
    return parts


def assign_voices(midi: pretty_midi.PrettyMIDI) -> dict[str, list[pretty_midi.Note]]:
    """Notes of `midi` by voice name (every voice present, maybe empty), each list sorted by start."""
    parts: dict[str, list[pretty_midi.Note]] = defaultdict(list)
    pitched = []
    for instrument in midi.instruments:
        if not instrument.notes:
            continue
        if instrument.is_drum:
            parts["drums"].extend(instrument.notes)
        elif instrument.program in BASS_PROGRAMS or np.median([n.pitch for n in instrument.notes]) < BASS_MEDIAN_PITCH:
            parts["bass"].extend(instrument.notes)
        else:
            pitched.append(instrument)

    if pitched and not parts["bass"] and len(pitched) >= 2:
        # No part plays the bass role outright: the lowest part, if low enough, takes it.
        lowest = min(pitched, key=lambda instrument: np.median([n.pitch for n in instrument.notes]))
        if np.median([n.pitch for n in lowest.notes]) < LOWEST_PART_BASS_BELOW:
            parts["bass"].extend(lowest.notes)
            pitched.remove(lowest)

    if len(pitched) == 1 and not parts["bass"]:
        for voice, notes in _split_single_part(pitched[0].notes).items():
            parts[voice].extend(notes)
    elif pitched:
        # Lead: a line that plays through much of the song, as high as possible. Parts sounding
        # for less than a third of the busiest part's time are not candidates (a short solo or a
        # few stabs should not carry the melody voice for a whole song).
        coverage = {id(instrument): _coverage(instrument.notes) for instrument in pitched}
        busiest = max(coverage.values())
        candidates = [i for i in pitched if coverage[id(i)] >= LEAD_MIN_COVERAGE * busiest]

        def lead_score(instrument: pretty_midi.Instrument) -> float:
            pitches = [n.pitch for n in instrument.notes]
            return float(np.median(pitches)) - 6.0 * (_polyphony(instrument.notes) - 1.0)

        named = [i for i in pitched if i.name.strip().lower().startswith(MELODY_NAMES)]
        lead = named[0] if named else max(candidates, key=lead_score)
        parts["lead"].extend(lead.notes)
        for instrument in pitched:
            if instrument is not lead:
                parts["harmony"].extend(instrument.notes)

    return {voice: sorted(parts[voice], key=lambda n: (n.start, n.pitch)) for voice in VOICES}
