"""The composer on tiny random models: reproducibility, track form, voices, controls, speed."""

from __future__ import annotations

import dataclasses
import itertools
from itertools import pairwise

import numpy as np
import pytest

import models.composer as composer_module
from models.composer import COMP_HOLD, ComposedBar, Composer, Controls, parse_key
from models.debug import debug_models
from models.errors import ModelError
from models.layout import TAIL_STEPS, chord_index
from models.theory import CHORD_QUALITIES, MAJOR, MINOR
from models.tokens import FIRST_PITCH_TOKEN, HOLD, PITCH_RANGES, REST, token_to_pitch
from models.voices import VOICES


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
    for before, after in pairwise(track):
        if before.section != after.section:
            assert any(n[0] == "drums" and n[1] == 49 and n[2] == 0 for n in after.notes) or after.section == "intro"
            late_toms_or_snares = [n for n in before.notes
                                   if n[0] == "drums" and n[2] >= 8 and n[1] in (38, 41, 43, 45, 47, 50)]
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


# ----------------------------------------------------------------- arrangement

def _pitches(bar: ComposedBar, voice: str) -> list[int]:
    return [n[1] for n in bar.notes if n[0] == voice]


def _middle_sections(tracks: list[list[ComposedBar]]) -> list[list[ComposedBar]]:
    """Each middle section's bars (intro and outro left out), in order."""
    sections: list[list[ComposedBar]] = []
    for track in tracks:
        for bar in track:
            if bar.section in ("intro", "outro"):
                continue
            if (not sections or sections[-1][0].section != bar.section
                    or sections[-1][-1].bar_index != bar.bar_index - 1):
                sections.append([])
            sections[-1].append(bar)
    return sections


def test_a_section_keeps_its_groove_with_a_backbeat(two_tracks):
    for section in _middle_sections(two_tracks):
        beats = [sorted((n[2], n[1]) for n in bar.notes if n[0] == "drums" and n[1] != 49) for bar in section[:-1]]
        assert all(beat == beats[0] for beat in beats), section[0].section  # the same beat until the fill
        assert (0, 36) in beats[0] and (4, 38) in beats[0] and (12, 38) in beats[0]
        assert sum(1 for step, key in beats[0] if key in (42, 46)) >= 4  # hats keep the pulse


@pytest.mark.parametrize("style_blend, floor", [(1.0, 43), (0.0, 33)])
def test_the_bass_never_sounds_below_its_styles_floor(style_blend, floor):
    """NES's triangle stays at G2 and above (BASS_FLOOR), lifted by as many octaves as it takes;
    lo-fi keeps its low notes down to A1."""
    bars = compose(64, seed=2, style_blend=style_blend)
    bass = [n[1] for bar in bars for n in bar.notes if n[0] == "bass"]
    assert min(bass) >= floor
    if style_blend < 0.5:
        assert min(bass) < 43  # the debug model's lo-fi bass goes below NES's floor: it is the style's


def test_bass_starts_every_bar_on_the_chord():
    from models.composer import BASS_FLOOR
    from models.theory import CHORD_INTERVALS, parse_chord

    bars = compose(160, seed=4)
    on_root = counted = 0
    for bar in bars:
        bass = sorted((n for n in bar.notes if n[0] == "bass"), key=lambda n: n[2])
        if not bass or bar.section == "intro":
            continue
        counted += 1
        root, quality = parse_chord(bar.chord)
        tones = {(root + i) % 12 for i in CHORD_INTERVALS[quality]}
        assert bass[0][2] == 0 and bass[0][1] % 12 in tones, (bar.chord, bass[0])
        assert all(n[1] >= BASS_FLOOR[0] for n in bass)
        on_root += bass[0][1] % 12 == root
    assert 0.4 <= on_root / counted <= 0.85  # mostly the root, sometimes an inversion


def test_lofi_harmony_sustains_between_bass_and_lead():
    bars = compose(160, seed=8, style_blend=0.0)
    lead_on_top = steps = 0
    for bar in bars:
        harmony, bass = _pitches(bar, "harmony"), _pitches(bar, "bass")
        if harmony and bass:
            assert min(harmony) > max(bass), bar
        onsets = {n[2] for n in bar.notes if n[0] == "harmony"}
        assert len(onsets) <= 2  # one or two long chords a bar, not a re-struck arpeggio
        for step in range(16):
            sounding = {voice: [n[1] for n in bar.notes if n[0] == voice and n[2] <= step < n[2] + n[3]]
                        for voice in ("lead", "harmony")}
            if sounding["lead"] and sounding["harmony"]:
                steps += 1
                lead_on_top += min(sounding["lead"]) > max(sounding["harmony"])
    assert lead_on_top / steps >= 0.85


def test_lead_moves():
    bars = compose(240, seed=9, style_blend=1.0)
    onsets = [n[1] for bar in bars for n in sorted(bar.notes, key=lambda n: n[2]) if n[0] == "lead"]
    repeats = sum(a == b for a, b in pairwise(onsets)) / (len(onsets) - 1)
    assert repeats <= 0.25


def test_a_bar_left_without_melody_takes_up_a_motif_of_its_track(monkeypatch):
    """Every third bar the decoder leaves the lead silent: at NES style (MOTIF_FILL 1.0) such a bar
    restates one of the track's recent decoded lead bars moved onto its chord, instead of the one
    held chord tone that stood in before."""
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=2, style_blend=1.0))
    decoded = composer._sample_tokens
    calls = itertools.count()
    silenced: list[int] = []

    def sometimes_silent(*args, **kwargs):
        tokens, base = decoded(*args, **kwargs)
        if next(calls) % 3 == 2:
            tokens[:, 0] = REST
            silenced.append(1)
        else:
            silenced.append(0)
        return tokens, base

    restated: list[np.ndarray] = []
    motif_lead = composer._motif_lead

    def recorded(motifs, chord, rng):
        assert all((column >= FIRST_PITCH_TOKEN).sum() >= composer_module.MOTIF_MIN_ONSETS for _, column in motifs)
        restated.append(motif_lead(motifs, chord, rng))
        return restated[-1]

    monkeypatch.setattr(composer, "_sample_tokens", sometimes_silent)
    monkeypatch.setattr(composer, "_motif_lead", recorded)
    bars = list(itertools.islice(composer, 60))
    assert sum(silenced) >= 15 and len(restated) >= sum(silenced) - 3  # all but a track's first bars
    assert sum((lead >= FIRST_PITCH_TOKEN).sum() >= 2 for lead in restated) >= 0.8 * len(restated)
    leads = [sorted(n[1] for n in bar.notes if n[0] == "lead") for bar in bars]
    assert sum(len(lead) >= 2 for lead in leads) >= 0.8 * len(leads)


def test_motif_lead_moves_the_motif_by_the_step_between_chord_roots():
    import numpy as np

    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=1))
    motif = np.full(16, REST)
    motif[[0, 4, 8]] = FIRST_PITCH_TOKEN + np.array([12, 14, 16])
    motif[[1, 5]] = HOLD
    c_major, f_major = (chord_index(root, CHORD_QUALITIES.index("maj")) for root in (0, 5))
    moved = composer._motif_lead([(c_major, motif)], f_major, np.random.default_rng(0))
    assert list(moved[[0, 4, 8]]) == list(FIRST_PITCH_TOKEN + np.array([17, 19, 21]))  # up a fourth
    assert list(moved[[1, 5]]) == [HOLD, HOLD] and (moved[[2, 3, 6, 7]] == REST).all()


def test_chromatic_dominants_resolve_a_fifth_down():
    from models.composer import CHROMATIC, MODES
    from models.theory import key_name, parse_chord

    for seed in range(3):
        bars = compose(200, seed=seed, temperature=2.0)
        for bar, after in pairwise(bars):
            if bar.track_id != after.track_id or after.bar_index % 4 == 0 or after.bar_index == after.bars_in_track - 1:
                continue  # resolutions are written inside a four-bar loop; a track ends on its tonic
            tonic, mode = parse_key(bar.key)
            root, quality = parse_chord(bar.chord)
            normalised = (root - tonic + (0 if mode == MAJOR else 9)) % 12
            target = CHROMATIC[mode].get((normalised, quality))
            modal = any((normalised, quality) == (root_, new) for _, changes in MODES[mode].values()
                        for (root_, _old), new in changes.items())
            if target is not None and not modal:  # dorian's IV7, say, is a colour, not a dominant
                assert parse_chord(after.chord)[0] == (root + 5) % 12, (key_name(tonic, mode), bar.chord, after.chord)


def test_latent_source_is_checked():
    vae, lstm = debug_models()
    noise = list(itertools.islice(Composer.from_modules(vae, lstm, Controls(seed=3), latent_source="noise"), 30))
    model = list(itertools.islice(Composer.from_modules(vae, lstm, Controls(seed=3)), 30))
    assert [b.notes for b in noise] != [b.notes for b in model]
    with pytest.raises(ModelError, match="latent_source"):
        Composer.from_modules(vae, lstm, latent_source="random")


@pytest.mark.parametrize("key, foreign", [("Bb minor", "#"), ("E major", "b")])
def test_chords_are_spelled_in_the_key_of_their_track(key, foreign):
    chords = {bar.chord for bar in compose(60, seed=3, key=key)}
    roots = {chord[1] for chord in chords if len(chord) > 1}
    assert chords - {"N.C."} and foreign not in roots, chords


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


def test_lead_notes_on_the_beats_are_chord_tones():
    from models.theory import CHORD_INTERVALS, parse_chord

    for style in (0.0, 1.0):
        bars = compose(120, seed=12, style_blend=style)
        on_beats = 0
        for bar in bars:
            if bar.chord in ("", "N"):
                continue
            root, quality = parse_chord(bar.chord)
            tones = {(root + i) % 12 for i in CHORD_INTERVALS[quality]}
            for voice, pitch, start, *_ in bar.notes:
                if voice == "lead" and start % 4 == 0:
                    on_beats += 1
                    assert pitch % 12 in tones, (bar.chord, pitch, start)
        assert on_beats >= 40


def test_lofi_comping_follows_the_decoded_harmony_rhythm():
    rhythm = Composer._comp_rhythm
    column = np.zeros(16, dtype=np.int64)
    pattern = ((0, 16),)
    assert rhythm(column, pattern, 6) == ((0, 6),)  # a silent decoded harmony: the section's pattern
    assert rhythm(column, pattern, 16) == ((0, 16),)
    column[[2, 6, 10, 12]] = FIRST_PITCH_TOKEN + 20
    # One strike on the downbeat, the next where a decoded note starts half a bar after it.
    assert rhythm(column, pattern, 6) == ((0, 6), (10, 6))
    assert rhythm(column, pattern, 16) == ((0, 10), (10, 6))  # sustained: held to the next strike
    column[:] = 0
    column[[2, 8]] = FIRST_PITCH_TOKEN + 20  # the gap counts from the downbeat, not the first decoded note
    assert rhythm(column, pattern, 16) == ((0, 8), (8, 8))


def lofi_parts(bars: list[ComposedBar], voice: str) -> list[list[tuple]]:
    """Each non-outro bar's notes of `voice` (the outro's last chord rings out)."""
    return [[note for note in bar.notes if note[0] == voice] for bar in bars if bar.section != "outro"]


def test_rhythmic_lofi_sections_stab_chords_of_at_most_comp_hold_steps(monkeypatch):
    monkeypatch.setattr(composer_module, "SUSTAIN_SHARE", 0.0)
    bars = compose(48, style_blend=0.0, seed=4)
    assert all(note[3] <= COMP_HOLD for notes in lofi_parts(bars, "harmony") for note in notes)
    assert all(note[2] in (0, 8) for notes in lofi_parts(bars, "bass") for note in notes)


def test_sustained_lofi_sections_hold_their_chords_over_one_bass_note_a_bar(monkeypatch):
    monkeypatch.setattr(composer_module, "SUSTAIN_SHARE", 1.0)
    bars = compose(48, style_blend=0.0, seed=4)
    longer = 0
    for notes in lofi_parts(bars, "harmony"):
        strikes = sorted({note[2] for note in notes}) + [16]
        for note in notes:  # each chord rings until the next strike, the last one to the bar's end
            assert note[2] + note[3] == strikes[strikes.index(note[2]) + 1], notes
            longer += note[3] > COMP_HOLD
    assert longer > 0
    assert all(note[2] == 0 for notes in lofi_parts(bars, "bass") for note in notes)


@pytest.mark.parametrize("style_blend, share", [(1.0, 0.5), (0.75, 0.25), (0.5, 0.0), (0.3, 0.0), (0.0, 0.0)])
def test_a_share_of_nes_tracks_plays_without_drums_spread_evenly(style_blend, share):
    """NES_DRUMLESS_SHARE of the tracks at NES style, in proportion down to style 0.5, none below;
    any run of tracks holds the share to within a track or so."""
    composer = Composer.from_modules(*debug_models(), Controls(seed=3, style_blend=style_blend))
    drumless = [not composer._plays_drums(composer._drum_draw(index)) for index in range(400)]
    assert sum(drumless) == pytest.approx(400 * share, abs=1.5)
    for first in range(0, 380, 7):
        assert abs(sum(drumless[first:first + 20]) - 20 * share) <= 2, first


def test_a_nes_track_without_drums_keeps_its_other_music(monkeypatch):
    """The tracks whose draw says so play no drum note, not even a crash or a fill; every other
    note is as it would be with drums in every track (but in the few tracks whose "beat" intro
    opens with harmony and bass instead), and the drummed tracks are the same to the note."""
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=4, style_blend=1.0))
    bars = list(itertools.islice(composer, 300))
    monkeypatch.setattr(composer_module, "NES_DRUMLESS_SHARE", 0.0)
    drummed = compose(300, seed=4, style_blend=1.0)
    drumless = {bar.track_id for bar in bars if composer._drum_draw(bar.track_index) < 0.5}
    silent = {track[0].track_id for track in tracks_of(bars)
              if not any(n[0] == "drums" for bar in track for n in bar.notes)}
    assert silent == drumless and 0 < len(silent) < len(tracks_of(bars))
    changed = set()
    for bar, with_drums in zip(bars, drummed, strict=True):
        if bar.track_id not in silent:
            assert bar.notes == with_drums.notes
        elif [n for n in bar.notes if n[0] != "drums"] != [n for n in with_drums.notes if n[0] != "drums"]:
            changed.add(bar.track_id)
    assert len(changed) < len(silent)  # only "beat" intros change a drumless track's other notes


@pytest.mark.parametrize("intro", list(composer_module.INTROS))
def test_no_intro_of_a_track_without_drums_leaves_the_bass_alone(intro):
    for drums in (True, False):
        sounding = set(VOICES) - set(Composer._muted_in_intro(intro, drums)) - ({"drums"} if not drums else set())
        assert sounding - {"bass"}, (intro, drums)
    assert Composer._muted_in_intro(intro, True) == composer_module.INTROS[intro]


def test_drums_follow_the_style_when_it_changes_within_a_track():
    """A mood that moves the style to lo-fi within a drumless NES track brings the beat in from the
    next bar composed (one bar is composed ahead)."""
    composer = Composer.from_modules(*debug_models(), Controls(seed=4, style_blend=1.0))
    index = next(i for i in range(50) if not composer._plays_drums(composer._drum_draw(i)))
    composer.start_track(index)
    before = list(itertools.islice(composer, 6))
    assert {bar.track_index for bar in before} == {index}
    assert not any(n[0] == "drums" for bar in before for n in bar.notes)
    composer.set_controls(style_blend=0.0)
    after = list(itertools.islice(composer, 6))
    assert {bar.track_index for bar in after} == {index}
    assert all(any(n[0] == "drums" for n in bar.notes) for bar in after[1:])


@pytest.mark.parametrize("bounce", [True, False])
def test_a_hammered_nes_bass_bounces_by_octaves_only_in_a_bouncing_track(bounce):
    tokens = np.zeros((16, 4), dtype=np.int64)
    tokens[::2, 2] = FIRST_PITCH_TOKEN + 10  # the triangle hammers one note on every eighth
    Composer._chip_phrasing(tokens, chord_index(0, CHORD_QUALITIES.index("maj")), bounce)
    jumps = {int(b - a) for a, b in pairwise(tokens[::2, 2])}
    assert jumps == ({12, -12} if bounce else {0})


@pytest.mark.parametrize("harmony, held, heard", [(76, 16, 64), (76, 8, 64), (76, 7, 76), (67, 16, 67), (58, 16, 58)])
def test_a_long_nes_harmony_note_over_the_lead_drops_an_octave(harmony, held, heard):
    """A second-pulse note of half a bar or more above the lead moves under it; a shorter one, one
    already under it, or one with no octave below it in the voice's range stays."""
    def token(voice: str, pitch: int) -> int:
        return FIRST_PITCH_TOKEN + pitch - PITCH_RANGES[voice][0]

    tokens = np.zeros((16, 4), dtype=np.int64)
    tokens[:, 0] = HOLD
    tokens[::4, 0] = token("lead", 72 if harmony > 60 else 56)  # the tune, a note on every beat
    tokens[0, 1] = token("harmony", harmony)
    tokens[1:held, 1] = HOLD
    composer_module._harmony_under_lead(tokens)
    assert token_to_pitch(1, tokens[0, 1]) == heard
    assert (tokens[1:held, 1] == HOLD).all() and (tokens[held:, 1] == REST).all()


@pytest.mark.parametrize("before, moved_to", [(65, 67), (64, 65)])
def test_a_lead_note_moved_onto_the_scale_does_not_repeat_the_note_before_it(before, moved_to):
    """F# over C major moves to the nearest scale tone, F, unless the lead has just played F: then G."""
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(style_blend=0.0))
    tokens = np.zeros((16, 4), dtype=np.int64)
    tokens[0, 0] = FIRST_PITCH_TOKEN + before - PITCH_RANGES["lead"][0]
    tokens[2, 0] = FIRST_PITCH_TOKEN + 66 - PITCH_RANGES["lead"][0]
    composer._clean(tokens, chord_index(0, CHORD_QUALITIES.index("maj")), np.zeros(4, dtype=np.int64))
    assert [token_to_pitch(0, tokens[step, 0]) for step in (0, 2)] == [before, moved_to]


@pytest.mark.parametrize("style_blend, energy, levels", [(0.0, 0.7, [0, 1, 3]), (1.0, 0.7, [2, 2, 3])])
def test_a_tracks_density_makes_lofi_sparse_or_busy_and_moves_nes_less(style_blend, energy, levels):
    """Lo-fi tracks come sparse and busy (two activity levels either way); NES by half a level."""
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(style_blend=style_blend))
    plans = [dataclasses.replace(composer._plan_track(), density=density) for density in (-1, 0, 1)]
    assert [composer._activity(plan, energy) for plan in plans] == levels


@pytest.mark.parametrize("style_blend, asks_again", [(1.0, True), (0.0, False)])
def test_a_one_note_lead_asks_the_decoder_again_livelier_in_nes(monkeypatch, style_blend, asks_again):
    """A decoder whose lead plays one note at the bar's activity and a run of notes one level up:
    NES (LEAD_MIN_ONSETS 3) takes the livelier lead, lo-fi (1) keeps its single note."""
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=3, style_blend=style_blend))
    decoded = composer._sample_tokens
    asked: list[object] = []  # the latent of each ask: a bar asked again passes the same latent

    def one_note_then_a_run(latent, cond, activity, *args, **kwargs):
        tokens, base = decoded(latent, cond, activity, *args, **kwargs)
        again = bool(asked) and asked[-1] is latent
        asked.append(latent)
        lead = np.full(16, REST)
        steps = [0, 4, 8, 12] if again else [0]
        lead[steps] = FIRST_PITCH_TOKEN + 20 + np.arange(len(steps))
        tokens[:, 0] = lead
        return tokens, base

    monkeypatch.setattr(composer, "_sample_tokens", one_note_then_a_run)
    bars = list(itertools.islice(composer, 12))
    onsets = [len([n for n in bar.notes if n[0] == "lead"]) for bar in bars[2:]]  # after the intro's first bars
    if asks_again:
        assert min(onsets) >= 2
    else:
        assert set(onsets) == {1}


def _leads_drawn(monkeypatch, style_blend: float, lead_choices, lead_start: int | None, temperature: float,
                 bars: int) -> list[np.ndarray]:
    """Lead columns (16,) of `bars` bars drawn by the composer's sampler from a decoder whose lead
    may only take the tokens `lead_choices(last_pitch)` gives (at even logits); the tail before
    each bar ends on the lead pitch index `lead_start` (None: rests)."""
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=5, style_blend=style_blend))
    decoder = composer._decoder
    decoded = decoder.step_logits

    def restricted(bar, step, earlier, last_pitch):
        pitched, drums = decoded(bar, step, earlier, last_pitch)
        pitched = np.array(pitched)
        pitched[0] = -np.inf
        pitched[0, lead_choices(int(last_pitch[0]))] = 0.0
        return pitched, drums

    monkeypatch.setattr(decoder, "step_logits", restricted)
    cond = decoder.condition(0, 0, MAJOR, 0, composer._style_vector(), 2)
    tail = np.zeros((TAIL_STEPS, 4), dtype=np.int64)
    if lead_start is not None:
        tail[-1, 0] = FIRST_PITCH_TOKEN + lead_start
    rng = np.random.default_rng(0)
    latent = np.zeros(decoder.latent_dim, np.float32)
    return [composer._sample_tokens(latent, cond, 2, 0, tail, temperature, rng)[0][:, 0] for _ in range(bars)]


@pytest.mark.parametrize("style_blend, keeps_onsets", [(1.0, True), (0.0, False)])
def test_the_leads_costs_choose_its_pitches_and_in_nes_not_how_often_it_plays(monkeypatch, style_blend,
                                                                               keeps_onsets):
    """A decoder whose lead, at every step, rests or starts one pitch at even odds. The costs on
    repeating that pitch would make the lead rest: NES (LEAD_ONSET_KEPT 1) still starts a note at
    about half the steps, lo-fi (0) plays far fewer."""
    leads = _leads_drawn(monkeypatch, style_blend, lambda last: [REST, FIRST_PITCH_TOKEN + 20], None, 0.5, 40)
    onset_share = float(np.mean([lead >= FIRST_PITCH_TOKEN for lead in leads]))
    if keeps_onsets:
        assert 0.4 <= onset_share <= 0.6
    else:
        assert onset_share <= 0.15


@pytest.mark.parametrize("style_blend, leaps_allowed", [(1.0, False), (0.0, True)])
def test_a_nes_lead_moves_by_step_rather_than_leap(monkeypatch, style_blend, leaps_allowed):
    """A decoder whose lead, at every step, moves a semitone or leaps 13 at even odds, towards the
    middle of its 36 pitches (so both stay inside). NES (LEAP_COST 0.4 beyond 7 semitones) takes
    the leap rarely; lo-fi (no cost) about as often as the step."""
    def step_or_leap(last: int) -> list[int]:
        up = 1 if last < 18 else -1
        return [FIRST_PITCH_TOKEN + last + up, FIRST_PITCH_TOKEN + last + 13 * up]

    leads = _leads_drawn(monkeypatch, style_blend, step_or_leap, 18, 1.0, 20)
    moves = np.abs(np.concatenate([np.diff(np.r_[FIRST_PITCH_TOKEN + 18, lead]) for lead in leads]))
    assert set(moves) <= {1, 13}
    leap_share = float(np.mean(moves == 13))
    if leaps_allowed:
        assert 0.3 <= leap_share <= 0.7
    else:
        assert leap_share <= 0.15


@pytest.mark.parametrize("style_blend", [1.0, 0.0])
def test_a_nes_lead_keeps_its_chromatic_neighbours_off_the_beat(style_blend):
    """C major over a C chord: C#5 between C5 and D5 on step 2 is a passing tone, D#5 off the beat
    after E5 a neighbour, F#5 on the beat (step 8) before G5 is not kept, nor is A#5 (step 14) with no
    scale tone a semitone from it before or after. Lo-fi moves every one of them onto the scale."""
    vae, lstm = debug_models()
    composer = Composer.from_modules(vae, lstm, Controls(seed=1, style_blend=style_blend))
    low = PITCH_RANGES["lead"][0]
    tokens = np.zeros((16, 4), dtype=np.int64)
    for step, pitch in {0: 72, 2: 73, 3: 74, 6: 76, 7: 75, 10: 79, 8: 78, 12: 79, 14: 82}.items():
        tokens[step, 0] = FIRST_PITCH_TOKEN + pitch - low
    cleaned = composer._clean(tokens, chord_index(0, CHORD_QUALITIES.index("maj")), np.zeros(4, dtype=np.int64))
    pitches = {step: token_to_pitch(0, cleaned[step, 0]) for step in (2, 7, 8, 14)}
    if style_blend >= 0.5:
        assert pitches[2] == 73 and pitches[7] == 75
    else:
        assert pitches[2] % 12 in {0, 2, 4, 5, 7, 9, 11} and pitches[7] % 12 in {0, 2, 4, 5, 7, 9, 11}
    assert pitches[8] % 12 in {0, 2, 4, 5, 7, 9, 11} and pitches[14] % 12 in {0, 2, 4, 5, 7, 9, 11}


def test_a_hammered_nes_harmony_sweeps_an_arpeggio_of_the_chord_below_its_note():
    tokens = np.zeros((16, 4), dtype=np.int64)
    tokens[::2, 1] = FIRST_PITCH_TOKEN + 24  # the second pulse hammers one note (MIDI 72) on every eighth
    Composer._chip_phrasing(tokens, chord_index(0, CHORD_QUALITIES.index("maj")), False)
    pitches = [token_to_pitch(1, t) for t in tokens[::2, 1]]
    assert pitches[0] == 72 and max(pitches) == 72 and min(pitches) >= 60
    assert {p % 12 for p in pitches} == {0, 4, 7} and len(set(pitches)) >= 4


def test_a_nes_lead_note_on_the_beat_rings_a_step_into_a_rest():
    tokens = np.zeros((16, 4), dtype=np.int64)
    lead = tokens[:, 0]
    lead[[0, 2, 4, 8, 9]] = FIRST_PITCH_TOKEN + 20  # beats 1 and 2 before rests, an off-beat note, beat 3 before a note
    lead[5] = HOLD
    Composer._chip_phrasing(tokens, chord_index(0, CHORD_QUALITIES.index("maj")), False)
    assert lead[1] == HOLD and lead[6] == HOLD  # one step more, after what the note already held
    assert lead[3] == REST and lead[7] == REST  # the off-beat note keeps its length; one step only
    assert lead[9] == FIRST_PITCH_TOKEN + 20  # a note that follows is not overwritten
