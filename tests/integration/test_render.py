"""The renderer with the real FluidSynth and the shipped SoundFont, measured on its audio."""

import dataclasses

import numpy as np
import pytest

from streamer.config import RenderSettings, VoiceSettings
from streamer.render import BarRenderer
from streamer.types import Bar, Note

pytestmark = pytest.mark.integration

RATE = 44100
MAX_ONSET_ERROR = 32 + 1  # events go to the nearest 64-frame FluidSynth block edge; +1: the
# envelope's first frame is 0


def _renderer(**changes) -> BarRenderer:
    settings = dataclasses.replace(RenderSettings(), **{"humanize_velocity": 0.0, "swing": 0.5, **changes})
    return BarRenderer(settings, seed=7)


def _onset(audio: np.ndarray, threshold: float = 1e-9) -> int:
    loud = np.flatnonzero(np.abs(audio).max(axis=1) > threshold)
    assert loud.size, "no sound rendered"
    return int(loud[0])


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


@pytest.mark.parametrize("voice,pitch", [("lead", 69), ("bass", 45), ("drums", 38)])
def test_note_starts_at_its_sample(voice, pitch):
    renderer = _renderer()
    # 120 BPM: 22050 frames a beat. Several positions, so both block-edge directions are met.
    for beat in (1.37, 1.3715, 2.0, 2.9):
        renderer.reset()
        audio = renderer.render_bar(Bar((Note(voice, pitch, beat, 0.5, 100),), tempo_bpm=120.0))
        assert abs(_onset(audio) - round(beat * 22050)) <= MAX_ONSET_ERROR, beat
    renderer.close()


def test_bar_lengths_never_drift():
    renderer = _renderer()
    tempo = 87.0  # 4 beats = 121655.17… samples: the fraction must be carried, not dropped
    total = sum(len(renderer.render_bar(Bar((), tempo_bpm=tempo))) for _ in range(500))
    assert total == round(500 * 4 * 60.0 / tempo * RATE) == renderer.rendered_frames
    renderer.close()


def _two_bars_rendered(split: bool) -> np.ndarray:
    notes = (Note("bass", 40, 1.0, 5.0, 110),  # rings over the bar line into bar 2
             Note("lead", 76, 3.5, 0.5, 100),  # ends exactly on the bar line: its release rings on
             Note("harmony", 64, 0.0, 8.0, 90), Note("drums", 36, 3.75, 0.25, 120))
    renderer = _renderer()
    if split:
        later = tuple(dataclasses.replace(n, start=n.start - 4.0) for n in notes if n.start >= 4.0)
        first = tuple(n for n in notes if n.start < 4.0)
        audio = np.concatenate([renderer.render_bar(Bar(first, 120.0)), renderer.render_bar(Bar(later, 120.0))])
    else:
        audio = renderer.render_bar(Bar(notes, 120.0, beats=8.0))
    renderer.close()
    return audio


def test_rendering_bar_by_bar_equals_rendering_at_once():
    # Bar lines must be inaudible: no click, no cut tail, no restarted note.
    whole, split = _two_bars_rendered(False), _two_bars_rendered(True)
    assert whole.shape == split.shape
    np.testing.assert_allclose(split, whole, atol=1e-6)
    bar_line = 88200
    assert _rms(split[bar_line:bar_line + 11025]) > 0.01  # the long notes still sound after it


def test_swing_delays_the_offbeat_16th():
    for swing in (0.5, 0.6):
        renderer = _renderer(swing=swing)
        audio = renderer.render_bar(Bar((Note("lead", 69, 0.25, 0.2, 100),), tempo_bpm=120.0))
        expected = round(0.5 * swing * 22050)  # the 16th moves to swing × one 8th note
        assert abs(_onset(audio) - expected) <= MAX_ONSET_ERROR, swing
        renderer.close()


def _bar_of_velocity_steps() -> Bar:
    return Bar(tuple(Note("lead", 69, i / 4, 0.2, 90) for i in range(16)), tempo_bpm=120.0)


def _peaks(audio: np.ndarray) -> np.ndarray:
    step = 22050 // 4
    return np.array([np.abs(audio[i * step:(i + 1) * step]).max() for i in range(16)])


def test_velocity_humanisation_is_deterministic_per_seed():
    def render(seed: int, amount: float) -> np.ndarray:
        # Without the chorus, whose moving delays would vary the peaks too.
        settings = dataclasses.replace(RenderSettings(), humanize_velocity=amount, swing=0.5, chorus_level=0.0)
        renderer = BarRenderer(settings, seed=seed)
        audio = renderer.render_bar(_bar_of_velocity_steps())
        renderer.close()
        return audio

    np.testing.assert_array_equal(render(3, 0.2), render(3, 0.2))
    assert not np.array_equal(render(3, 0.2), render(4, 0.2))
    flat, varied = _peaks(render(3, 0.0)), _peaks(render(3, 0.2))
    assert np.ptp(flat) / flat.max() < 0.02  # no humanisation: every hit the same
    assert np.ptp(varied) / varied.max() > 0.05


def test_pan_and_volume_per_voice():
    note = (Note("lead", 69, 0.0, 2.0, 100),)
    left = _renderer(lead=VoiceSettings("pulse50", -1.0, 0.8)).render_bar(Bar(note, 120.0))
    assert _rms(left[:, 1]) < 0.05 * _rms(left[:, 0])
    quiet = _renderer(lead=VoiceSettings("pulse50", 0.0, 0.3)).render_bar(Bar(note, 120.0))
    loud = _renderer(lead=VoiceSettings("pulse50", 0.0, 0.9)).render_bar(Bar(note, 120.0))
    assert _rms(quiet) < 0.5 * _rms(loud)


def test_repeated_note_is_restruck_not_cut():
    # Two back-to-back notes on one key: the second must sound for its whole length.
    notes = (Note("lead", 69, 0.0, 1.0, 100), Note("lead", 69, 1.0, 2.0, 100))
    audio = _renderer().render_bar(Bar(notes, 120.0))
    assert _rms(audio[int(2.5 * 22050):int(2.9 * 22050)]) > 0.01


def test_stems_hold_each_voice_alone_and_leave_the_mix_as_it_was():
    from streamer.composer import RuleBasedComposer
    from streamer.types import VOICES

    composer = RuleBasedComposer(3)
    bars = [composer.next_bar() for _ in range(6)]
    plain, with_stems = _renderer(humanize_velocity=0.08), BarRenderer(
        dataclasses.replace(RenderSettings(), humanize_velocity=0.08, swing=0.5), seed=7, stems=True)
    for bar in bars:
        mix = with_stems.render_bar(bar)
        assert np.array_equal(plain.render_bar(bar), mix)  # bit for bit
        stems = with_stems.last_stems
        assert stems is not None and stems.shape == (len(mix), len(VOICES)) and stems.dtype == np.float32
        assert np.abs(stems).max() <= 1.0
    # One voice at a time: only its stem sounds.
    for index, (voice, pitch) in enumerate([("lead", 72), ("harmony", 64), ("bass", 40), ("drums", 36)]):
        renderer = BarRenderer(RenderSettings(), stems=True)
        renderer.render_bar(Bar((Note(voice, pitch, 0.0, 2.0, 100), Note(voice, pitch, 2.0, 1.0, 90)), 120.0))
        stems = renderer.last_stems
        loudness = [_rms(stems[:, i:i + 1]) for i in range(len(VOICES))]
        assert loudness[index] > 0.05, (voice, loudness)
        assert all(level == 0.0 for i, level in enumerate(loudness) if i != index), (voice, loudness)
        renderer.close()


def test_chorus_send_widens_a_voice_and_a_voice_without_it_stays_where_it_is_panned():
    from streamer.measure import stereo_figures

    chord = tuple(Note("harmony", pitch, 0.0, 3.5, 90) for pitch in (60, 64, 67, 71))
    bass = (Note("bass", 36, 0.0, 3.5, 100),)
    centred = {"harmony": VoiceSettings("keys", 0.0, 0.6, 0.0), "bass": VoiceSettings("triangle", 0.0, 0.9, 0.0)}
    dry = _renderer(**centred).render_bar(Bar(chord, 120.0))
    assert stereo_figures(dry).correlation > 0.999  # centred, no send: mono
    chorused = {**centred, "harmony": VoiceSettings("keys", 0.0, 0.6, RenderSettings().harmony.chorus)}
    wide = _renderer(**chorused).render_bar(Bar(chord, 120.0))
    figures = stereo_figures(wide)
    # Wider, and still folds down to mono (alone it loses under 2 dB; in the mix, where bass and
    # drums sit in the centre, under 1.5 dB: tests/integration/test_sound_figures.py).
    assert figures.correlation < 0.9 and figures.mono_loss_db > -2.0
    # With the chorus running for the harmony, the bass (no send) is untouched: still mono.
    low = _renderer(**chorused).render_bar(Bar(bass, 120.0))
    assert stereo_figures(low).correlation > 0.999
    off = _renderer(**chorused, chorus_level=0.0)
    assert stereo_figures(off.render_bar(Bar(chord, 120.0))).correlation > 0.999  # chorus_level 0 = off
