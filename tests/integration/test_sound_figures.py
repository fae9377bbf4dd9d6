"""Stereo width and low end, measured on generated tracks rendered as the stream plays them
(the shipped checkpoint, real FluidSynth and the effects chain); bench/bench_sound.py measures
more tracks, side by side with the sound before."""

import dataclasses

import pytest

from streamer.composer import load_composer, whole_tracks
from streamer.config import Config
from streamer.measure import band_share_db, low_side_db, stereo_figures
from streamer.offline import render_pcm
from streamer.types import Bar


@pytest.fixture(scope="module")
def tracks():
    return whole_tracks(load_composer("", 3), 2)  # two whole tracks, intro to outro


def test_generated_tracks_are_wide_fold_down_to_mono_and_keep_the_sub_bass_down(tracks):
    config = Config()
    for number, bars in enumerate(tracks):
        pcm = render_pcm(bars, config, seed=number)
        stereo = stereo_figures(pcm)
        assert 0.6 <= stereo.correlation <= 0.9, (bars[0].track_id, stereo)
        assert stereo.mono_loss_db >= -1.5, (bars[0].track_id, stereo)
        assert band_share_db(pcm, config.render.sample_rate) <= -10.0, bars[0].track_id
        # Bass and kick in the centre: below 120 Hz the side is 20 dB under the mid (crossover 150 Hz).
        assert low_side_db(pcm, config.render.sample_rate, 120.0) <= -20.0, bars[0].track_id


def _sub_bass(bar: Bar) -> Bar:
    """The bar with its bass moved to the octave D1–C#2 (37–69 Hz), as a file or an older model may play it."""
    notes = tuple(dataclasses.replace(n, pitch=26 + (n.pitch - 26) % 12) if n.voice == "bass" else n for n in bar.notes)
    return dataclasses.replace(bar, notes=notes)


def test_the_tone_stage_is_what_keeps_a_sub_bass_heavy_track_under_the_limit(tracks):
    """With its bass moved down to D1–C#2 (the composer keeps it above A1; a MIDI file need not),
    a track's energy is mostly sub-bass without the low cut and shelf; with them it stays under
    -10 dB below 60 Hz."""
    bars = [_sub_bass(bar) for bar in tracks[0][8:40]]
    config = Config()
    flat = dataclasses.replace(config, effects=dataclasses.replace(config.effects, low_cut_hz=0.0, low_shelf_db=0.0))
    assert band_share_db(render_pcm(bars, flat), config.render.sample_rate) > -6.0
    assert band_share_db(render_pcm(bars, config), config.render.sample_rate) <= -10.0
