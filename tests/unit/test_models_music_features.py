"""models.music_features and models.overlap on hand-made tracks with known answers; the rule
parts and random notes as evaluation sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import music_features as mf
from models.composer import ComposedBar
from models.errors import ModelError
from models.music_eval import random_pieces, rule_pieces
from models.overlap import distance_overlap, overlap_area, set_overlaps

KICK, SNARE, HAT, TOM = 36, 38, 42, 45
GROOVE = [("drums", KICK, 0, 1, 90), ("drums", SNARE, 4, 1, 90), ("drums", KICK, 8, 1, 90),
          ("drums", SNARE, 12, 1, 90)] + [("drums", HAT, s, 1, 60) for s in range(0, 16, 2)]
FILL = [("drums", KICK, 0, 1, 90), ("drums", SNARE, 4, 1, 90)] + \
       [("drums", TOM, s, 1, 90) for s in range(8, 16)] + [("drums", SNARE, s, 1, 90) for s in (12, 13, 14, 15)]


def piece(bars: list[list[tuple]], chords: list[str] | None = None, key: str = "C major",
          sections: list[str] | None = None) -> mf.Piece:
    """A piece from bars of notes (voice, pitch, start, length, velocity), as the composer gives them."""
    n = len(bars)
    return mf.piece_from_bars([
        ComposedBar("t", i, (sections or ["A"] * n)[i], key, 80.0, (chords or ["C"] * n)[i], tuple(notes), n)
        for i, notes in enumerate(bars)])


def lead_line(pitches: list[int], length: int = 4) -> list[list[tuple]]:
    """Lead notes of `length` steps one after another, cut into bars."""
    bars: list[list[tuple]] = [[] for _ in range(math.ceil(len(pitches) * length / 16))]
    for i, pitch in enumerate(pitches):
        bars[i * length // 16].append(("lead", pitch, i * length % 16, length, 90))
    return bars


# --------------------------------------------------------------------------- per-segment features

def test_a_lead_that_repeats_one_note():
    repeated = piece(lead_line([72] * 16))  # four bars of quarter notes on C5
    assert mf.lead_repeats([repeated]) == 1.0
    assert mf.distinct_lead_pitches([repeated]) == 1.0
    (segment,) = mf.segments(repeated)
    features = mf.segment_features(segment)
    assert features["pitch_count"][0] == 1 and features["pitch_range"][0] == 0
    assert features["lead_intervals"][12] == 1.0  # every interval a unison
    assert features["inter_onset_intervals"][3] == 1.0  # every onset 4 steps after the last
    assert features["note_lengths"][3] == 1.0  # 4 steps long
    assert features["notes_per_bar"][0] == 4.0 and features["drum_onsets_per_bar"][0] == 0.0
    assert features["rhythm_entropy"][0] == pytest.approx(2.0)  # four positions of the bar, evenly


def test_a_chromatic_run_has_twelve_pitch_classes():
    run = piece(lead_line(list(range(60, 72)) + [72, 73, 74, 75], length=4))
    (segment,) = mf.segments(run)
    features = mf.segment_features(segment)
    assert features["pitch_count"][0] == 16 and features["pitch_range"][0] == 15
    assert np.count_nonzero(features["pitch_class_histogram"]) == 12
    assert features["pitch_class_histogram"].sum() == pytest.approx(1.0)
    transitions = features["pitch_class_transitions"].reshape(12, 12)
    assert all(transitions[pc, (pc + 1) % 12] > 0 for pc in range(12)) and transitions.sum() == pytest.approx(1.0)
    assert features["lead_intervals"][13] == 1.0  # every interval +1
    assert mf.lead_repeats([run]) == 0.0 and mf.distinct_lead_pitches([run]) == 16
    summary = mf.VALUE_SUMMARIES["pitch_class_histogram"][1](features["pitch_class_histogram"])
    assert summary == pytest.approx(8 / 16 * 4 + 4 * 2 / 16 * 3)  # entropy: 8 classes once, 4 twice


def test_pieces_are_key_normalised_and_segments_need_onsets():
    in_d = piece([[("bass", 38, 0, 16, 90), ("lead", 74, 0, 4, 90), ("lead", 78, 4, 4, 90)]] * 4, ["D"] * 4, "D major")
    assert sorted(set(in_d.track.notes[:, 1] % 12)) == [0, 4]  # D, F# → C, E
    assert in_d.chords[:, 0].tolist() == [0, 0, 0, 0]
    assert mf.root_on_downbeat([in_d]) == 1.0
    quiet = piece([[("lead", 72, 0, 64, 90)], [], [], []])  # one held note: too little to compare
    assert mf.segments(quiet) == [] and mf.feature_set([quiet]).n_segments == 0


def test_parse_chord_names():
    assert mf.parse_chord("Dbmaj7") == (1, mf.CHORD_QUALITIES.index("maj7"))
    assert mf.parse_chord("F#m9") == (6, mf.CHORD_QUALITIES.index("m9"))
    assert mf.parse_chord("Bb") == (10, mf.CHORD_QUALITIES.index("maj"))
    assert mf.parse_chord("N.C.") == (mf.NO_CHORD_ROOT, 0)
    with pytest.raises(ModelError, match="Hm7"):
        mf.parse_chord("Hm7")


# --------------------------------------------------------------------------- figures

def test_bass_on_the_chord_root():
    bars = [[("bass", 36, 0, 8, 90), ("bass", 43, 8, 8, 90)],  # C under C: root
            [("bass", 45, 0, 8, 90), ("bass", 41, 8, 8, 90)],  # A first under F: not the root
            [("lead", 72, 0, 4, 90)],  # no bass onset: not counted
            [("bass", 43, 4, 4, 90)]]  # G under G7, starting late: root
    assert mf.root_on_downbeat([piece(bars, ["C", "F", "Am", "G7"])]) == pytest.approx(2 / 3)


def test_grooves_backbeat_and_fills():
    bars = [GROOVE] * 7 + [FILL] + [GROOVE] * 8
    sections = ["A"] * 8 + ["B"] * 8
    figures = mf.drum_figures([piece(bars, sections=sections)])
    assert figures["drum_bar_variety"] == pytest.approx(2 / 16)
    assert figures["backbeat"] == 1.0
    assert figures["fills_at_section_ends"] == 1.0 and figures["fills_elsewhere"] == 0.0
    no_backbeat = [[n for n in GROOVE if n[1] != SNARE]] * 8
    assert mf.drum_figures([piece(no_backbeat)])["backbeat"] == 0.0
    assert math.isnan(mf.drum_figures([piece([GROOVE] * 4)])["drum_bar_variety"])  # too few drum bars


def test_track_to_track_similarity():
    up, down = piece(lead_line([60, 62, 64, 65] * 4)), piece(lead_line([71, 69, 67] * 5))
    assert mf.track_similarity([up, up]) == pytest.approx(1.0)
    assert mf.track_similarity([up, down]) == pytest.approx(0.0)
    assert mf.track_similarity([up, up, down]) == pytest.approx(1 / 3)


def test_non_diatonic_chords_and_their_resolution():
    chords = ["C", "E7", "Am", "Am", "D7", "G", "Fm", "C"]  # E7 → Am, D7 → G resolve; Fm → C does not
    figures = mf.chord_figures([piece([[("bass", 36, 0, 16, 90)]] * 8, chords)])
    assert figures["non_diatonic_chords"] == pytest.approx(3 / 7)  # the two Am bars are one chord
    assert figures["non_diatonic_resolved_by_fifth"] == pytest.approx(2 / 3)


def test_register_order_as_played():
    bars = [[("lead", 72, 0, 8, 90), ("harmony", 64, 0, 16, 70), ("harmony", 60, 0, 16, 70),
             ("bass", 48, 0, 16, 90), ("lead", 62, 8, 8, 90)]]
    figures = mf.register_figures([piece(bars)])
    assert figures["lead_above_harmony"] == 0.5 and figures["harmony_below_bass"] == 0.0
    low = mf.register_figures([piece([[("harmony", 43, 0, 16, 70), ("bass", 45, 0, 8, 90)]])])
    assert low["harmony_below_bass"] == 1.0
    # The token view folds the harmony into its range: only the notes as played show it.
    assert mf.piece_from_bars is not None and piece([[("harmony", 43, 0, 16, 70)]]).track.notes[0, 1] >= 48


def test_density_and_register_figures():
    bars = [[("lead", 72, 0, 8, 90), ("lead", 76, 8, 8, 90), ("harmony", 64, 0, 16, 70),
             ("harmony", 60, 0, 16, 70), ("harmony", 55, 0, 16, 70)]] * 2
    figures = mf.density_figures([piece(bars)])
    assert figures["notes_per_bar"] == 3.0  # token view: one harmony line
    assert figures["notes_per_bar_as_played"] == 5.0
    assert figures["note_length_beats"] == pytest.approx((2 + 2 + 4) / 3)
    assert figures["lead_mean_pitch"] == 74.0


def test_self_similarity_of_a_loop_and_of_changing_bars():
    loop = piece(lead_line([60, 64, 67, 72] * 20))  # the same bar 20 times
    figures = mf.self_similarity([loop])
    assert all(figures[f"self_similarity_{lag}"] == pytest.approx(1.0) for lag in (4, 8, 16))
    short = mf.self_similarity([piece(lead_line([60] * 24))])  # 6 bars: no pair 8 or 16 bars apart
    assert short["self_similarity_4"] == pytest.approx(1.0) and math.isnan(short["self_similarity_16"])
    # How many pairs each figure rests on: 20 bars give 16, 12 and 4; 6 bars 2, 0 and 0.
    assert [figures[f"self_similarity_pairs_{lag}"] for lag in (4, 8, 16)] == [16, 12, 4]
    assert [short[f"self_similarity_pairs_{lag}"] for lag in (4, 8, 16)] == [2, 0, 0]
    alternating = piece([[("lead", 60, 0, 16, 90)], [("lead", 66, 4, 4, 90)]] * 10)
    assert mf.self_similarity([alternating])["self_similarity_4"] == pytest.approx(1.0)
    assert mf.self_similarity([alternating], lags=(1,))["self_similarity_1"] == pytest.approx(0.0)


def test_rule_parts_and_random_notes_as_sets():
    rules = rule_pieces([16, 12], seed=1)
    assert [p.n_bars for p in rules] == [16, 12]
    assert mf.root_on_downbeat(rules) == 1.0  # the rule bass starts every bar on the root
    assert mf.chord_figures(rules)["non_diatonic_chords"] == 0.0
    again = rule_pieces([16, 12], seed=1)
    assert all(np.array_equal(a.played.notes, b.played.notes) for a, b in zip(rules, again, strict=True))
    noise = random_pieces([8], seed=1)
    assert noise[0].chords is None and math.isnan(mf.root_on_downbeat(noise))
    figures = mf.set_figures(rules + noise)
    assert figures["pieces"] == 3 and figures["bars"] == 36


# --------------------------------------------------------------------------- overlap

def test_overlap_of_identical_and_disjoint_samples():
    rng = np.random.default_rng(0)
    sample = rng.normal(size=300)
    assert overlap_area(sample, sample) == pytest.approx(1.0, abs=1e-6)
    assert overlap_area(sample, sample + 50.0) == pytest.approx(0.0, abs=1e-6)
    assert overlap_area(sample, rng.normal(size=300)) > 0.85
    assert overlap_area(np.full(5, 3.0), np.full(9, 3.0)) == pytest.approx(1.0, abs=1e-3)  # no spread
    assert overlap_area(np.full(5, 3.0), np.full(9, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(overlap_area(np.array([]), sample))


def test_distance_overlap_of_like_and_unlike_sets():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 12))
    assert distance_overlap(rng.normal(size=(200, 12)), real) > 0.9
    assert distance_overlap(rng.normal(size=(200, 12)) + 20.0, real) == pytest.approx(0.0, abs=1e-6)


def test_set_overlaps_of_a_set_with_itself_and_with_random_notes():
    real = mf.feature_set(rule_pieces([16] * 6, seed=2))
    same = set_overlaps(real, real)
    assert set(same["features"]) == set(mf.FEATURES)
    assert same["mean_distance"] > 0.9 and same["mean_value"] > 0.9
    random = set_overlaps(mf.feature_set(random_pieces([16] * 6, seed=2)), real)
    assert random["mean_distance"] < 0.5 and random["mean_value"] < 0.5
