"""The composer on tiny random models: reproducibility, track form, voices, controls, speed."""

from __future__ import annotations

import itertools

import pytest

from models.composer import ComposedBar, Composer, Controls, parse_key
from models.data import MAJOR, MINOR, VOICES
from models.debug import debug_models
from models.errors import ModelError


def compose(n_bars: int, **controls) -> list[ComposedBar]:
    vae, lstm = debug_models()
    return list(itertools.islice(Composer.from_modules(vae, lstm, Controls(**controls)), n_bars))


def tracks_of(bars: list[ComposedBar]) -> list[list[ComposedBar]]:
    tracks: dict[str, list[ComposedBar]] = {}
    for bar in bars:
        tracks.setdefault(bar.track_id, []).append(bar)
    return list(tracks.values())


@pytest.fixture(scope="module")
def two_tracks() -> list[list[ComposedBar]]:
    bars = compose(200, seed=11)
    tracks = tracks_of(bars)
    return [t for t in tracks if len(t) == t[0].bars_in_track][:2]


def test_same_seed_same_music_other_seed_other_music():
    first = compose(70, seed=5)
    again = compose(70, seed=5)
    assert first == again
    other = compose(70, seed=6)
    assert [b.notes for b in other] != [b.notes for b in first]


def test_track_form(two_tracks):
    assert len(two_tracks) == 2
    for track in two_tracks:
        assert [b.bar_index for b in track] == list(range(len(track)))
        sections = [b.section for b in track]
        assert sections[0] == "intro" and sections[-1] == "outro"
        assert {"A", "B", "A'"} <= set(sections)
        assert len({b.key for b in track}) == 1 and len({b.tempo_bpm for b in track}) == 1
        tempo = track[0].tempo_bpm
        assert 70 <= tempo <= 92
        seconds = len(track) * 4 * 60 / tempo
        assert 110 <= seconds <= 260
        parse_key(track[0].key)
    assert two_tracks[0][0].track_id != two_tracks[1][0].track_id
    assert [b.notes for b in two_tracks[0][:16]] != [b.notes for b in two_tracks[1][:16]]


def test_phrases_return(two_tracks):
    for track in two_tracks:
        first_a = [b for b in track if b.section == "A"][:4]
        first_return = [b for b in track if b.section == "A'"][:4]
        assert [b.chord for b in first_a] == [b.chord for b in first_return]
        lead = lambda bar: [(n[1], n[2]) for n in bar.notes if n[0] == "lead" and n[2] > 0]  # noqa: E731
        assert [lead(b) for b in first_a] == [lead(b) for b in first_return]


def test_fills_and_crashes_at_section_edges(two_tracks):
    track = two_tracks[0]
    for before, after in zip(track, track[1:]):
        if before.section != after.section:
            assert any(n[0] == "drums" and n[1] == 49 and n[2] == 0 for n in after.notes) or after.section == "intro"
            late_toms_or_snares = [n for n in before.notes if n[0] == "drums" and n[2] >= 8 and n[1] in (38, 41, 43, 45, 47, 50)]
            assert late_toms_or_snares


def test_every_voice_sounds_in_most_bars(two_tracks):
    bars = [b for t in two_tracks for b in t]
    for voice in VOICES:
        share = sum(any(n[0] == voice for n in b.notes) for b in bars) / len(bars)
        assert share >= 0.85, (voice, share)


def test_notes_are_well_formed(two_tracks):
    for bar in two_tracks[0]:
        for voice, pitch, start, length, velocity in bar.notes:
            assert voice in VOICES and 0 <= pitch <= 127 and 0 <= start < 16 and length >= 1 and 1 <= velocity <= 127


def test_controls():
    bars = compose(80, seed=1, key="F minor", tempo_bpm=80.0, energy=0.9, style_blend=1.0, temperature=0.5)
    assert {b.key for b in bars} == {"F minor"} and {b.tempo_bpm for b in bars} == {80.0}
    assert parse_key("Bbm") == (10, MINOR) and parse_key("C# major") == (1, MAJOR) and parse_key("e") == (4, MAJOR)
    for bad in ({"temperature": 0.0}, {"style_blend": 2.0}, {"energy": -1.0}, {"key": "H minor"}, {"tempo_bpm": 5.0}):
        with pytest.raises(ModelError):
            Controls(**bad)


def test_consecutive_tracks_change_smoothly(two_tracks):
    first, second = two_tracks
    assert abs(first[0].tempo_bpm - second[0].tempo_bpm) <= 8.01


def test_model_time_is_counted():
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=2))
    list(itertools.islice(composer, 20))
    assert composer.bars_made == 20
    assert 0 < composer.model_seconds / 20 < 0.05


def test_start_track_continues_numbering_in_a_related_key():
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=4))
    first = next(composer)
    composer.start_track(12, after=("G minor", 84.0))
    bar = next(composer)
    assert (bar.track_id, bar.track_index, bar.bar_index) == ("s4-t0012", 12, 0)
    tonic, mode = parse_key(bar.key)
    # Same key, a fifth either way, a whole tone either way, or the relative major.
    assert ((tonic - 7) % 12, mode) in {(0, MINOR), (7, MINOR), (5, MINOR), (2, MINOR), (10, MINOR), (3, MAJOR)}
    assert abs(bar.tempo_bpm - 84.0) <= 8.0
    assert bar.notes != first.notes
    # The same start gives the same track: a position is reproducible.
    again = Composer.from_modules(vae, lstm, Controls(seed=4))
    again.start_track(12, after=("G minor", 84.0))
    assert next(again) == bar
    with pytest.raises(ModelError):
        composer.start_track(-1)
