"""models.metrics: each statistic on hand-made tracks, the random-notes baseline, real songs,
token round trips, and the repetition checks (transposition-invariant span keys)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from models import metrics as M
from models.data import midi_files
from models.debug import synthetic_corpus
from models.midi_bars import parse_file
from models.tokens import (
    DRUM_VOCAB,
    FIRST_PITCH_TOKEN,
    HOLD,
    PITCHED_VOCAB,
    REST,
    STYLES,
    pitch_to_token,
    token_to_pitch,
    transpose_tokens,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LEAD, HARMONY, BASS, DRUMS = range(4)


def track(notes: list[tuple[int, int, int, int]], n_bars: int = 1) -> M.Track:
    """Notes (voice, pitch, start step, length)."""
    return M.Track(np.array(notes, dtype=np.int64).reshape(-1, 4), n_bars)


def melody(pitches: list[int], voice: int = LEAD) -> M.Track:
    """One note per step, one after the other."""
    return track([(voice, p, i, 1) for i, p in enumerate(pitches)], n_bars=max(1, math.ceil(len(pitches) / 16)))


# --------------------------------------------------------------------------- statistics by hand

def test_scale_consistency():
    c_major = [60, 62, 64, 65, 67, 69, 71]
    assert M.scale_consistency(melody(c_major)) == 1.0
    assert M.scale_consistency(melody([57, 59, 60, 62, 64, 65, 67])) == 1.0  # A natural minor
    # C major plus C#: 7 of 8 in C major; G major or D major hold only 6 of them.
    assert M.scale_consistency(melody(c_major + [61])) == pytest.approx(7 / 8)
    # Every pitch class once: the best scale holds 7 of 12.
    assert M.scale_consistency(melody(list(range(60, 72)))) == pytest.approx(7 / 12)
    # C, C#, C#, D: no major scale holds three semitones in a row; counted by onset, drums ignored.
    notes = [(LEAD, 60, 0, 16), (BASS, 37, 0, 1), (BASS, 49, 1, 1), (BASS, 50, 2, 1), (DRUMS, 38, 3, 1)]
    assert M.scale_consistency(track(notes)) == pytest.approx(3 / 4)
    assert math.isnan(M.scale_consistency(track([(DRUMS, 36, 0, 1)])))


def test_pitch_class_entropy():
    assert M.pitch_class_entropy(melody([60, 72, 48])) == 0.0
    assert M.pitch_class_entropy(melody([60, 67, 72, 79])) == pytest.approx(1.0)
    assert M.pitch_class_entropy(melody(list(range(60, 72)))) == pytest.approx(math.log2(12))
    three_to_one = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert M.pitch_class_entropy(melody([60, 60, 60, 64])) == pytest.approx(three_to_one)
    assert math.isnan(M.pitch_class_entropy(track([], 1)))


def test_consonance_of_simultaneous_notes():
    triad = [(HARMONY, 60, 0, 8), (HARMONY, 64, 0, 8), (BASS, 43, 0, 8)]  # C, E, G (two octaves down)
    assert M.consonance(track(triad)) == 1.0
    # A D4 sounding with them: C–D and E–D are seconds, G2–D4 (19 semitones) is a fifth.
    added = track(triad + [(LEAD, 62, 2, 4)])
    assert M.consonance(added) == pytest.approx(4 / 6)
    assert M.consonance(track([(LEAD, 60, 0, 4), (BASS, 49, 0, 4)])) == 0.0  # a major 7th
    assert M.consonance(track([(LEAD, 66, 0, 4), (BASS, 36, 2, 4)])) == 0.0  # tritone, overlapping late
    assert M.consonance(track([(LEAD, 72, 0, 4), (BASS, 36, 3, 1)])) == 1.0  # octaves
    # Notes that follow each other (one ends where the next starts) never sound together.
    assert math.isnan(M.consonance(track([(LEAD, 60, 0, 4), (BASS, 49, 4, 4)])))
    # Drums do not count.
    assert M.consonance(track([(LEAD, 60, 0, 4), (BASS, 48, 0, 4), (DRUMS, 61, 0, 1)])) == 1.0
    # A long note meets every note that starts while it sounds.
    long_note = track([(BASS, 48, 0, 16), (LEAD, 64, 0, 2), (LEAD, 66, 4, 2), (LEAD, 67, 8, 2), (LEAD, 61, 16, 2)])
    assert M.consonance(long_note) == pytest.approx(2 / 3)  # E ok, F# (tritone) not, G ok; C# starts later


def test_empty_beat_rate():
    # Onsets on beats 1 and 3 of a bar: two of four beats are empty; a note held over a beat does not fill it.
    assert M.empty_beat_rate(track([(LEAD, 60, 0, 8), (DRUMS, 36, 9, 1)])) == 0.5
    assert M.empty_beat_rate(track([(LEAD, 60, 0, 1)], n_bars=2)) == 7 / 8
    assert M.empty_beat_rate(track([(DRUMS, 42, s, 1) for s in range(0, 16, 4)])) == 0.0
    assert M.empty_beat_rate(track([(LEAD, 60, 3, 1), (LEAD, 62, 7, 1), (LEAD, 64, 11, 1), (LEAD, 65, 15, 1)])) == 0.0
    assert M.empty_beat_rate(track([], 4)) == 1.0


def test_voice_presence_counts_held_notes_not_drums_ringing():
    notes = track([(LEAD, 60, 12, 8), (BASS, 36, 32, 16), (DRUMS, 36, 15, 4)], n_bars=4)
    assert M.voice_presence(notes) == {"lead": 0.5, "harmony": 0.0, "bass": 0.25, "drums": 0.25}
    summary = M.summarize([notes, track([(HARMONY, 60, 0, 64)], n_bars=4)])
    assert summary["voice_presence"] == {"lead": 2 / 8, "harmony": 4 / 8, "bass": 1 / 8, "drums": 1 / 8}
    assert summary["tracks"] == 2 and summary["bars"] == 8 and summary["notes"] == 4


def test_summarize_averages_tracks_and_skips_undefined():
    a = melody([60, 62, 64, 65, 67, 69, 71])  # consistency 1, no simultaneous notes
    b = melody(list(range(60, 72)))  # 7/12
    summary = M.summarize([a, b, track([(DRUMS, 36, 0, 1)])])
    assert summary["scale_consistency"] == pytest.approx((1 + 7 / 12) / 2)
    assert math.isnan(summary["consonance"])


def test_random_notes_score_what_the_issue_quotes():
    """Random notes: 0.61 scale consistency, 0.58 consonance, 3.57 bits, 0.00 empty beats."""
    rng = np.random.default_rng(1)
    summary = M.summarize([M.random_track(48, rng) for _ in range(30)])
    assert summary["scale_consistency"] == pytest.approx(0.61, abs=0.02)
    assert summary["consonance"] == pytest.approx(0.58, abs=0.02)
    assert summary["pitch_class_entropy"] == pytest.approx(3.57, abs=0.02)
    assert summary["empty_beat_rate"] == 0.0
    assert all(v == 1.0 for v in summary["voice_presence"].values())


def test_real_songs_sit_far_from_random_notes():
    files = midi_files(SHARED / "lakh-lofi")[:3]  # ../shared/data sits beside the repository
    assert files
    tracks = []
    for path in files:
        song = parse_file(path, f"lakh-lofi/{path.name}", path.name, STYLES.index("lakh"))
        if not isinstance(song, str):
            tracks.append(M.track_from_tokens(song.tokens))
    assert tracks
    summary = M.summarize(tracks)
    assert summary["scale_consistency"] > 0.8
    assert summary["consonance"] > 0.65
    assert 2.0 < summary["pitch_class_entropy"] < 3.4
    assert summary["empty_beat_rate"] < 0.5


# --------------------------------------------------------------------------- tokens

def test_track_from_tokens_joins_notes_across_bars():
    tokens = np.zeros((3, 16, 4), dtype=np.int16)
    tokens[0, 8, BASS] = pitch_to_token(BASS, 36)
    tokens[0, 9:, BASS] = HOLD
    tokens[1, :, BASS] = HOLD
    tokens[2, :4, BASS] = HOLD  # the bass note lasts 8 + 16 + 4 steps
    tokens[2, 6:8, LEAD] = HOLD  # a hold with no note before it: ignored
    tokens[1, 4, DRUMS] = 1 | 2
    notes = M.track_from_tokens(tokens).notes.tolist()
    assert sorted(notes) == sorted([[BASS, 36, 8, 28], [DRUMS, 36, 20, 1], [DRUMS, 38, 20, 1]])


@settings(max_examples=60, deadline=None)
@given(arrays(np.int16, (3, 16, 4), elements=st.integers(0, PITCHED_VOCAB - 1)))
def test_tokens_round_trip_through_a_track(tokens):
    tokens[..., DRUMS] %= DRUM_VOCAB
    expected = tokens.reshape(-1, 4).copy()
    for voice in range(3):  # holds with no note to hold read as rests
        sounding = False
        for step in range(len(expected)):
            if expected[step, voice] == HOLD and not sounding:
                expected[step, voice] = REST
            sounding = expected[step, voice] != REST
    again = M.tokens_from_track(M.track_from_tokens(tokens))
    assert np.array_equal(again.reshape(-1, 4), expected)


def test_tokens_from_composed_notes_follow_the_data_rules():
    bars = [
        [("harmony", 76, 0, 8, 70), ("harmony", 72, 0, 8, 64), ("harmony", 67, 0, 8, 64),  # top note kept
         ("bass", 40, 0, 4, 90), ("bass", 28, 0, 4, 90),  # lowest kept
         ("lead", 100, 4, 20, 80),  # folded into range, rings into the next bar
         ("drums", 36, 0, 1, 90), ("drums", 49, 0, 1, 90), ("drums", 81, 2, 1, 90)],  # crash = open-hat class; 81 none
        [("lead", 79, 2, 2, 80)],  # cuts the held lead note
    ]
    tokens = M.tokens_from_track(M.track_from_bars(bars))
    assert tokens.shape == (2, 16, 4)
    assert tokens[0, 0, HARMONY] == pitch_to_token(HARMONY, 76) and (tokens[0, 1:8, HARMONY] == HOLD).all()
    assert tokens[0, 0, BASS] == pitch_to_token(BASS, 28)
    assert token_to_pitch(LEAD, tokens[0, 4, LEAD]) == 88
    assert (tokens[1, :2, LEAD] == HOLD).all() and tokens[1, 2, LEAD] == pitch_to_token(LEAD, 79)
    assert (tokens[1, 4:, LEAD] == REST).all()
    assert tokens[0, 0, DRUMS] == 1 | 8 and tokens[0, 2, DRUMS] == 0


# --------------------------------------------------------------------------- repetition

def busy_song(seed: int, n_bars: int = 4) -> np.ndarray:
    """Bars with an onset in the lead on every step, random pitches."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n_bars, 16, 4), dtype=np.int16)
    tokens[..., LEAD] = FIRST_PITCH_TOKEN + rng.integers(6, 30, size=(n_bars, 16))
    return tokens


def test_span_keys_ignore_transposition_and_octaves_not_changes():
    song = busy_song(0)
    song[1, 3, LEAD] = FIRST_PITCH_TOKEN + 10
    keys, starts = M.span_keys(song, 2)
    assert starts.tolist() == [0, 1, 2] and len(set(keys)) == 3
    assert M.span_keys(transpose_tokens(song, 5), 2)[0] == keys
    octave = song.copy()
    octave[1, 3, LEAD] += 12  # one note an octave up (still in range)
    assert M.span_keys(octave, 2)[0] == keys
    changed = song.copy()
    changed[1, 3, LEAD] += 1
    changed_keys = M.span_keys(changed, 2)[0]
    assert changed_keys[2] == keys[2] and changed_keys[0] != keys[0] and changed_keys[1] != keys[1]


def test_plain_spans_are_not_compared():
    plain = np.zeros((4, 16, 4), dtype=np.int16)
    plain[:, 0, BASS] = pitch_to_token(BASS, 36)
    plain[:, 1:, BASS] = HOLD  # one note a bar: fewer than two onsets per bar
    plain[:, :, DRUMS] = 5
    assert M.span_keys(plain, 2)[0] == []
    plain[:, 8, HARMONY] = pitch_to_token(HARMONY, 64)
    assert len(M.span_keys(plain, 2)[0]) == 3


def test_cross_track_repeats():
    first, second, third = busy_song(1, 8), busy_song(2, 8), busy_song(3, 8)
    second[2:6] = transpose_tokens(first[3:7], -3)  # four bars of `first`, in another key
    result = M.cross_track_repeats([first, second, third], span_bars=4)
    assert result["spans"] == 15 and result["repeated"] == 2
    assert sorted(e[:2] for e in result["examples"]) == [[0, 3], [1, 2]]
    # Repeats within a track are phrases returning, not repeats across tracks.
    looped = np.concatenate([first[:4], first[:4]])
    assert M.cross_track_repeats([looped, third], span_bars=4)["repeated"] == 0


def test_span_index_finds_copies_of_training_spans_only_within_songs():
    corpus = synthetic_corpus(n_songs=3, bars_per_song=4)
    corpus.tokens[:] = np.concatenate([busy_song(10 + i) for i in range(3)])
    index = M.SpanIndex(corpus, span_bars=2)
    assert len(index) == 9  # 3 spans per 4-bar song, none across songs
    copy = np.concatenate([busy_song(20, 3), transpose_tokens(corpus.tokens[5:7], 4), busy_song(21, 3)])
    result = index.copies([copy, busy_song(22, 8)])
    assert result["copied"] == 1 and result["examples"] == [[0, 3]]
    assert result["spans"] == 7 + 7
    across = np.concatenate([corpus.tokens[3:4], corpus.tokens[4:5]])  # end of song 0 + start of song 1
    assert index.copies([across])["copied"] == 0
