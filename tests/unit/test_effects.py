"""Lo-fi effects: block-size independence, reset, safety (NaN, peak), loudness, and that each effect acts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pyloudnorm
import pytest
from scipy import signal

from streamer import effects as fx
from streamer.config import EffectsSettings, settings_from_mapping
from streamer.effects_swap import Crossfade
from streamer.errors import ConfigError

FS = 44100
CEILING = 10 ** (-1 / 20)


def music(seconds: float, fs: int = FS, seed: int = 0, gap: tuple[float, float] | None = None) -> np.ndarray:
    """NES-like test music (frames, 2): 25 % pulse lead, triangle bass, noise hits; optional silent gap."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    t = np.arange(n) / fs
    scale = 440.0 * 2.0 ** (np.array([0, 2, 3, 5, 7, 8, 10, 12]) / 12.0)
    lead_f = rng.choice(scale, size=int(seconds / 0.2) + 1)[(t // 0.2).astype(int)]
    bass_f = rng.choice(scale / 4.0, size=int(seconds / 0.4) + 1)[(t // 0.4).astype(int)]
    lead = np.where((np.cumsum(lead_f) / fs) % 1.0 < 0.25, 1.0, -1.0) * 0.25
    bass = (2.0 * np.abs(2.0 * ((np.cumsum(bass_f) / fs) % 1.0) - 1.0) - 1.0) * 0.35
    hit_phase = t % 0.25
    noise = rng.uniform(-1.0, 1.0, n) * np.exp(-hit_phase / 0.03) * 0.3
    left = lead * 0.8 + bass + noise * 0.9
    right = lead * 0.6 + bass + noise * 1.0
    audio = np.stack((left, right), axis=1)
    if gap is not None:
        audio[int(gap[0] * fs):int(gap[1] * fs)] = 0.0
    return audio


def at_lufs(audio: np.ndarray, lufs: float, fs: int = FS) -> np.ndarray:
    meter = pyloudnorm.Meter(fs)
    return audio * 10.0 ** ((lufs - meter.integrated_loudness(audio)) / 20.0)


def block_sizes(total: int, seed: int) -> list[int]:
    """Random block sizes 1..4096 (log-uniform, so small ones are common), with runs of size-1 blocks."""
    rng = np.random.default_rng(seed)
    sizes: list[int] = [1, 1, 1]
    while sum(sizes) < total:
        sizes.append(1 if rng.random() < 0.05 else int(np.exp(rng.uniform(0.0, math.log(4096.0)))))
    sizes[-1] -= sum(sizes) - total
    return [s for s in sizes if s > 0]


def in_blocks(process: Callable[[np.ndarray], np.ndarray], audio: np.ndarray, sizes: list[int],
              axis: int) -> np.ndarray:
    out, start = [], 0
    for size in sizes:
        index = [slice(None)] * audio.ndim
        index[axis] = slice(start, start + size)
        out.append(process(audio[tuple(index)]))
        start += size
    return np.concatenate(out, axis=axis)


EFFECTS: dict[str, Callable[[], fx.Effect]] = {
    "sanitizer": fx.Sanitizer,
    "tone": lambda: fx.ToneFilter(FS, 30.0, 6000.0, -3.0),
    "tone_48k_no_lowpass": lambda: fx.ToneFilter(48000, 120.0, 23000.0, 4.0),
    "tone_low_end": lambda: fx.ToneFilter(FS, 30.0, 9000.0, -2.0, 120.0, -8.0, 70.0),
    "bass_centre": lambda: fx.BassCentre(FS, 150.0),
    "downsample": lambda: fx.SampleRateReducer(FS, 7350.3),
    "bitcrush": lambda: fx.BitCrusher(6),
    "wow_flutter": lambda: fx.WowFlutter(FS, 0.7, 25.0, 9.0, 8.0, seed=3),
    "loudness": lambda: fx.LoudnessNormalizer(FS, -14.0, window_s=2.0),
    "crackle": lambda: fx.VinylCrackle(FS, 40.0, -20.0, 200.0, -45.0, seed=4),
    "hiss": lambda: fx.TapeHiss(-40.0, seed=5),
    "limiter": lambda: fx.SoftLimiter(-1.0, 6.0),
}


@pytest.fixture(scope="module")
def test_music() -> np.ndarray:
    # Loud enough to reach the limiter's knee, with a silent gap for the loudness gate.
    return music(4.0, seed=1, gap=(1.5, 2.2)) * 1.6


@pytest.mark.parametrize("name", list(EFFECTS))
def test_effect_is_block_size_independent_and_resettable(name, test_music):
    effect = EFFECTS[name]()
    planar = fx.to_planar(test_music)
    if name == "sanitizer":
        planar[0, 1000:1010] = np.nan
        planar[1, 5000] = np.inf
    whole = effect.process(planar)
    assert whole.shape == planar.shape and np.all(np.isfinite(whole))
    assert np.abs(np.nan_to_num(whole - planar, nan=1.0, posinf=1.0)).max() > 1e-3  # it acts
    effect.reset()
    np.testing.assert_array_equal(effect.process(planar), whole)
    for seed in (0, 1):
        effect.reset()
        split = in_blocks(effect.process, planar, block_sizes(planar.shape[1], seed), axis=1)
        assert np.abs(split - whole).max() <= 1e-6


CHAINS = {
    "default": EffectsSettings(),
    "everything_on": EffectsSettings(bitcrush_bits=8, downsample_hz=16000.0, wow_depth_cents=30.0,
                                     flutter_depth_cents=10.0, crackle_per_second=50.0,
                                     loudness_window_s=1.0),
    "disabled": EffectsSettings(enabled=False),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_chain_is_block_size_independent_and_resettable(name, test_music):
    chain = fx.EffectsChain.from_settings(CHAINS[name], FS, seed=7)
    whole = chain.process(test_music)
    assert whole.dtype == np.float32 and whole.shape == test_music.shape
    chain.reset()
    np.testing.assert_array_equal(chain.process(test_music.astype(np.float32)),
                                  fx.EffectsChain.from_settings(CHAINS[name], FS, seed=7)
                                  .process(test_music.astype(np.float32)))
    chain.reset()
    np.testing.assert_array_equal(chain.process(test_music), whole)
    chain.reset()
    split = in_blocks(chain.process, test_music, block_sizes(test_music.shape[0], 11), axis=0)
    assert np.abs(split.astype(np.float64) - whole).max() <= 1e-6


def test_random_draws_do_not_depend_on_how_they_are_requested():
    whole = fx._Int16Stream(5).take(10_001)
    stream = fx._Int16Stream(5)
    parts = [stream.take(n) for n in (1, 1, 3, 0, 4, 5, 7, 1000, 1, 8979)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert abs(float(whole.astype(np.float64).mean())) < 1000.0  # centred
    assert np.unique(whole).size > 5000  # and really spread over the 16-bit range


def test_seed_changes_the_randomness_but_not_the_level(test_music):
    one = fx.EffectsChain.from_settings(EffectsSettings(), FS, seed=1).process(test_music)
    two = fx.EffectsChain.from_settings(EffectsSettings(), FS, seed=2).process(test_music)
    assert np.abs(one - two).max() > 1e-3
    rms = [np.sqrt(np.mean(out.astype(np.float64) ** 2)) for out in (one, two)]
    assert abs(20 * math.log10(rms[0] / rms[1])) < 0.2


def test_disabled_chain_keeps_only_the_safety_stages():
    chain = fx.EffectsChain.from_settings(EffectsSettings(enabled=False), FS, seed=0)
    kinds = [type(e) for e in chain.effects]
    assert kinds == [fx.Sanitizer, fx.LoudnessNormalizer, fx.SoftLimiter]
    full = [type(e) for e in fx.EffectsChain.from_settings(CHAINS["everything_on"], FS, seed=0).effects]
    assert full == [fx.Sanitizer, fx.SampleRateReducer, fx.BitCrusher, fx.WowFlutter, fx.ToneFilter, fx.BassCentre,
                    fx.LoudnessNormalizer, fx.VinylCrackle, fx.TapeHiss, fx.SoftLimiter]


# --- safety ---------------------------------------------------------------------------------

def test_nan_and_inf_never_leave_the_chain_and_are_counted():
    audio = music(2.0, seed=2)
    rng = np.random.default_rng(0)
    bad = rng.choice(audio.size, size=300, replace=False)
    flat = audio.reshape(-1)
    flat[bad[:100]] = np.nan
    flat[bad[100:200]] = np.inf
    flat[bad[200:]] = -np.inf
    audio[5000:5100] = np.nan  # a whole stretch, both channels
    expected = int(np.count_nonzero(~np.isfinite(audio)))
    chain = fx.EffectsChain.from_settings(EffectsSettings(), FS, seed=0)
    out = in_blocks(chain.process, audio, block_sizes(audio.shape[0], 3), axis=0)
    assert np.all(np.isfinite(out))
    assert chain.nonfinite_samples == expected
    # The chain is not poisoned: a clean block afterwards is still normal audio.
    after = chain.process(music(1.0, seed=3))
    assert np.all(np.isfinite(after)) and np.abs(after).max() > 0.05
    everything_bad = chain.process(np.full((4096, 2), np.nan))
    assert np.all(np.isfinite(everything_bad))
    assert chain.nonfinite_samples == expected + 8192
    chain.reset()
    assert chain.nonfinite_samples == 0


def test_absurd_finite_values_are_survived():
    chain = fx.EffectsChain.from_settings(EffectsSettings(), FS, seed=0)
    out = chain.process(np.full((4096, 2), 1e300))
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= CEILING
    assert np.all(np.isfinite(chain.process(music(1.0))))


@pytest.mark.parametrize("fs", [44100, 48000])
@pytest.mark.parametrize("enabled", [True, False])
def test_peak_stays_under_the_ceiling_for_plus_12_dbfs_squares(fs, enabled):
    t = np.arange(int(3.0 * fs)) / fs
    amplitude = 10 ** (12 / 20)
    square = amplitude * np.sign(np.sin(2 * np.pi * 110.0 * t + 0.1))
    audio = np.stack((square, amplitude * np.sign(np.sin(2 * np.pi * 3001.0 * t))), axis=1)
    chain = fx.EffectsChain.from_settings(EffectsSettings(enabled=enabled), fs, seed=0)
    out = in_blocks(chain.process, audio, block_sizes(audio.shape[0], 5), axis=0)
    assert out.dtype == np.float32
    assert np.abs(out).max() <= CEILING
    assert np.abs(out).max() > 0.5 * CEILING  # still loud, not muted


def test_limiter_is_transparent_below_the_knee_and_bounded_above():
    limiter = fx.SoftLimiter(-1.0, 6.0)
    quiet = np.linspace(-limiter.knee, limiter.knee, 1001)[None, :].repeat(2, axis=0)
    np.testing.assert_array_equal(limiter.process(quiet), quiet)
    loud = np.linspace(-100.0, 100.0, 200001)[None, :].repeat(2, axis=0)
    out = limiter.process(loud)
    assert np.abs(out).max() <= CEILING
    assert np.all(np.diff(out[0]) >= 0.0)  # monotonic: no foldover
    slope = np.diff(out[0]) / np.diff(loud[0])
    assert slope.max() <= 1.0 + 1e-9  # never steeper than unity: continuous at the knee


# --- loudness -------------------------------------------------------------------------------

@pytest.mark.parametrize("lufs_in,fs", [(-30.0, 44100), (-8.0, 44100), (-30.0, 48000)])
def test_loudness_reaches_the_target(lufs_in, fs):
    audio = at_lufs(music(45.0, fs=fs, seed=4), lufs_in, fs)
    chain = fx.EffectsChain.from_settings(EffectsSettings(), fs, seed=0)
    out = in_blocks(chain.process, audio, [4096] * (audio.shape[0] // 4096 + 1), axis=0)
    settled = out[5 * fs:].astype(np.float64)
    measured = pyloudnorm.Meter(fs).integrated_loudness(settled)
    assert abs(measured - (-14.0)) <= 1.0, measured


def test_silence_is_not_boosted():
    follower = fx.LoudnessNormalizer(FS, -14.0, window_s=8.0, max_gain_db=24.0)
    assert np.all(follower.process(np.zeros((2, 5 * FS))) == 0.0)
    assert follower.gain_db == 0.0  # nothing heard: unity
    follower.process(fx.to_planar(at_lufs(music(10.0, seed=5), -20.0)))
    after_music = follower.gain_db
    assert 4.0 < after_music < 8.0  # −20 → −14
    hum = np.full((2, FS), 1e-4) * np.sin(np.arange(FS) / 10.0)  # −80 LUFS
    for _ in range(100):  # 100 s of near-silence: the gain must hold
        follower.process(hum)
    assert abs(follower.gain_db - after_music) < 0.5
    # ... and music coming back is handled at once, not boosted by a drifted gain.
    back = follower.process(fx.to_planar(at_lufs(music(2.0, seed=6), -20.0)))
    assert np.abs(back).max() < 1.0


def test_k_weighting_matches_the_bs1770_table_at_48k():
    sos = fx.k_weighting_sos(48000)
    np.testing.assert_allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285,
                                        1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
                               atol=1e-8)


# --- each effect does something measurable -------------------------------------------------

def _band_power(x: np.ndarray, fs: int, lo: float, hi: float) -> float:
    freqs, psd = signal.welch(x, fs, nperseg=4096)
    band = (freqs >= lo) & (freqs < hi)
    return float(psd[band].mean())


def test_tone_filter_cuts_above_the_low_pass_and_below_the_high_pass():
    noise = np.random.default_rng(0).standard_normal((2, 4 * FS))
    out = fx.ToneFilter(FS, highpass_hz=200.0, lowpass_hz=2000.0, tilt_db=0.0).process(noise)

    def ratio_db(lo: float, hi: float) -> float:
        return 10 * math.log10(_band_power(out[0], FS, lo, hi) / _band_power(noise[0], FS, lo, hi))

    assert ratio_db(4000.0, 20000.0) < -15.0  # 2nd order: ≥ 12 dB down an octave above the corner
    assert abs(ratio_db(600.0, 900.0)) < 1.0  # the middle passes
    assert ratio_db(20.0, 60.0) < -15.0  # rumble is removed


def _sine_gain_db(effect: fx.Effect, freq: float, left: float = 1.0, right: float = 1.0) -> tuple[float, float]:
    """Gain (dB) of each channel for a sine of `freq` with these channel signs/levels, settled."""
    sine = np.sin(2 * np.pi * freq * np.arange(2 * FS) / FS)
    out = effect.process(np.stack([left * sine, right * sine]))[:, FS:]
    return tuple(20 * math.log10(max(np.sqrt(np.mean(channel ** 2)), 1e-12) / math.sqrt(0.5)) for channel in out)


@pytest.mark.parametrize("freq,low_db,high_db", [(25.0, -8.3, -7.5), (60.0, -8.0, -6.0), (120.0, -4.3, -3.7),
                                                  (500.0, -0.5, 0.0)])
def test_low_shelf_takes_the_sub_bass_down(freq, low_db, high_db):
    """-8 dB shelf at 120 Hz: the full cut well below, half of it at the corner, nothing above."""
    shelf = fx.FilterEffect(fx.low_shelf_sos(120.0, -8.0, FS))
    assert low_db <= _sine_gain_db(shelf, freq)[0] <= high_db
    assert fx.low_shelf_sos(120.0, 0.0, FS) is None


@pytest.mark.parametrize("freq,low_db,high_db", [(35.0, -99.0, -23.0), (50.0, -13.0, -10.0), (70.0, -3.5, -2.5),
                                                  (110.0, -0.6, 0.0), (1000.0, -0.05, 0.05)])
def test_low_cut_takes_the_sub_bass_fundamentals_down_and_keeps_the_bass_above(freq, low_db, high_db):
    cut = fx.FilterEffect(fx.low_cut_sos(70.0, FS))
    assert low_db <= _sine_gain_db(cut, freq)[0] <= high_db
    assert fx.low_cut_sos(0.0, FS) is None


def test_bass_centre_makes_the_low_end_mono_and_leaves_the_width_above():
    centre = fx.BassCentre(FS, 150.0)
    # A 50 Hz tone in anti-phase (all side) is nearly gone; in phase (all mid) it is untouched.
    assert max(_sine_gain_db(centre, 50.0, 1.0, -1.0)) < -18.0
    centre.reset()
    assert _sine_gain_db(centre, 50.0, 1.0, 1.0) == pytest.approx((0.0, 0.0), abs=0.01)
    # Hard left at 1 kHz stays hard left.
    centre.reset()
    left, right = _sine_gain_db(centre, 1000.0, 1.0, 0.0)
    assert left == pytest.approx(0.0, abs=0.2) and right < -30.0


@pytest.mark.parametrize("freq,expected_db", [(100.0, -3.0), (1000.0, 0.0), (10000.0, 3.0)])
def test_tilt_turns_around_1_khz(freq, expected_db):
    t = np.arange(FS) / FS
    sine = np.sin(2 * np.pi * freq * t)[None, :].repeat(2, axis=0)
    out = fx.FilterEffect(fx.tilt_sos(6.0, FS)).process(sine)
    gain_db = 20 * math.log10(np.sqrt(np.mean(out[0, FS // 2:] ** 2)) / math.sqrt(0.5))
    assert abs(gain_db - expected_db) < 0.5


def _cents_deviation(audio: np.ndarray, freq: float, fs: int) -> np.ndarray:
    phase = np.unwrap(np.angle(signal.hilbert(audio)))
    inst = np.diff(phase) * fs / (2 * np.pi)
    inst = np.convolve(inst, np.ones(64) / 64, mode="valid")[fs // 2:-fs // 2]  # no edges
    return 1200 * np.log2(inst / freq)


@pytest.mark.parametrize("wow,flutter", [(20.0, 0.0), (0.0, 8.0)])
def test_wow_and_flutter_bend_the_pitch_by_the_configured_cents(wow, flutter):
    t = np.arange(5 * FS) / FS
    sine = np.sin(2 * np.pi * 1000.0 * t)[None, :].repeat(2, axis=0)
    out = fx.WowFlutter(FS, 1.0, wow, 10.0, flutter, seed=0).process(sine)
    cents = _cents_deviation(out[0], 1000.0, FS)
    depth = max(wow, flutter)
    assert abs(cents.max() - depth) < 0.15 * depth
    assert abs(-cents.min() - depth) < 0.15 * depth


def test_crackle_adds_sparse_clicks_at_about_the_rate():
    rate, peak_db, seconds = 10.0, -20.0, 20
    out = fx.VinylCrackle(FS, rate, peak_db, dust_per_second=0.0, surface_db=-120.0, seed=1).process(
        np.zeros((2, seconds * FS)))
    peak = 10 ** (peak_db / 20)
    level = np.abs(out).max(axis=0)
    assert level.max() <= peak * 1.0001 and level.max() > 0.5 * peak
    hot = np.flatnonzero(level > 0.02 * peak)
    clicks = 1 + int(np.count_nonzero(np.diff(hot) > 0.005 * FS))  # hot samples 5 ms apart = new click
    assert 0.75 * rate * seconds < clicks < 1.25 * rate * seconds
    assert np.count_nonzero(level > 1e-3 * peak) < 0.05 * level.size  # sparse


def test_surface_noise_has_its_level_and_is_not_white():
    out = fx.VinylCrackle(FS, 0.0, -30.0, dust_per_second=0.0, surface_db=-40.0, seed=2).process(
        np.zeros((2, 10 * FS)))
    rms_db = 20 * np.log10(np.sqrt(np.mean(out ** 2, axis=1)))
    assert np.all(np.abs(rms_db + 40.0) < 1.0)
    assert _band_power(out[0], FS, 8000, 16000) < 0.03 * _band_power(out[0], FS, 300, 2000)


def test_hiss_adds_noise_at_the_level():
    out = fx.TapeHiss(-50.0, seed=3).process(np.zeros((2, 5 * FS)))
    rms_db = 20 * np.log10(np.sqrt(np.mean(out ** 2, axis=1)))
    assert np.all(np.abs(rms_db + 50.0) < 0.5)
    assert abs(np.corrcoef(out)[0, 1]) < 0.05  # independent channels: wide, like tape


def test_bitcrush_leaves_at_most_2_to_the_bits_levels():
    audio = fx.to_planar(music(1.0, seed=6)) * 2.0  # also drives it past full scale
    for bits in (1, 3, 8):
        out = fx.BitCrusher(bits).process(audio)
        assert np.unique(out).size <= 2 ** bits
        assert np.unique(out).size >= min(2 ** bits, 4)


def test_downsample_holds_values_at_the_target_rate():
    audio = fx.to_planar(music(1.0, seed=7))
    out = fx.SampleRateReducer(FS, 4410.0).process(audio)
    changes = np.count_nonzero(np.diff(out[0]) != 0.0)
    assert 4000 < changes <= 4410
    # Every output value is an input value held for ten samples.
    np.testing.assert_array_equal(out[:, ::10], audio[:, ::10])
    np.testing.assert_array_equal(out[:, 9::10], audio[:, ::10])


@pytest.mark.filterwarnings("error")  # an overflow warning means an unstable filter somewhere
@pytest.mark.parametrize("fs", [8000, 22050, 96000])
def test_chain_works_at_other_sample_rates(fs):
    chain = fx.EffectsChain.from_settings(EffectsSettings(), fs, seed=0)
    out = chain.process(music(3.0, fs=fs))
    assert np.all(np.isfinite(out)) and 0.1 < np.abs(out).max() <= CEILING


def test_chain_rejects_wrong_shapes():
    chain = fx.EffectsChain.from_settings(EffectsSettings(), FS, seed=0)
    with pytest.raises(ValueError, match="frames, 2"):
        chain.process(np.zeros(100))
    with pytest.raises(ValueError, match="frames, 2"):
        chain.process(np.zeros((2, 100)))
    assert chain.process(np.zeros((0, 2))).shape == (0, 2)


# --- config ---------------------------------------------------------------------------------

FIELDS = {f.name: f for f in dataclasses.fields(EffectsSettings)}


def test_every_effects_key_has_a_sane_default():
    defaults = EffectsSettings()
    for name, field in FIELDS.items():
        meta, value = field.metadata, getattr(defaults, name)
        assert meta["help"], name
        if meta["min"] is not None:
            assert meta["min"] <= value <= meta["max"], name
    assert settings_from_mapping(EffectsSettings, dataclasses.asdict(defaults), "effects.") == defaults
    # The defaults sound like the brief: audible but not loud colouring, −14 LUFS, −1 dBFS.
    assert defaults.enabled and defaults.loudness_target_lufs == -14.0
    assert defaults.limiter_ceiling_dbfs == -1.0
    assert defaults.hiss_db < -50.0 and defaults.surface_noise_db < -45.0


@pytest.mark.parametrize("extreme", ["min", "max"])
def test_every_valid_extreme_builds_a_working_chain(extreme):
    values = {name: field.metadata[extreme] for name, field in FIELDS.items()
              if field.metadata.get(extreme) is not None}
    values = {name: (int(v) if isinstance(getattr(EffectsSettings(), name), int)
                     and not isinstance(getattr(EffectsSettings(), name), bool) else float(v))
              for name, v in values.items()}
    settings = settings_from_mapping(EffectsSettings, values, "effects.")
    for fs in (44100, 48000):
        chain = fx.EffectsChain.from_settings(settings, fs, seed=0)
        out = chain.process(music(1.5, fs=fs))
        assert np.all(np.isfinite(out))
        assert np.abs(out).max() <= 10 ** (settings.limiter_ceiling_dbfs / 20)


def _bad_values():
    for name, field in FIELDS.items():
        meta = field.metadata
        yield name, "loud"
        if meta["min"] is not None:
            yield name, meta["min"] - 1
        if meta["max"] is not None:
            yield name, meta["max"] + 1


@pytest.mark.parametrize("key,value", list(_bad_values()))
def test_bad_values_raise_config_error_naming_the_key(key, value):
    with pytest.raises(ConfigError) as error:
        settings_from_mapping(EffectsSettings, {key: value}, "effects.")
    assert str(error.value).startswith(f"effects.{key}:")


def test_unknown_effects_key_is_an_error():
    with pytest.raises(ConfigError, match="effects.hiss_level"):
        settings_from_mapping(EffectsSettings, {"hiss_level": -50.0}, "effects.")


# ----------------------------------------------------------------------------- changing settings while playing


def test_crossfade_blocks_give_the_same_samples_in_any_split():
    quiet = EffectsSettings(crackle_per_second=0.0, surface_noise_db=-120.0, dust_per_second=0.0, hiss_db=-120.0,
                            wow_depth_cents=0.0, flutter_depth_cents=0.0)
    t = np.arange(int(0.2 * 44100)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    block = fx.to_planar(np.stack([tone, tone], axis=1).astype(np.float32))
    old_chain = fx.EffectsChain.from_settings(quiet, 44100, 0)
    new_chain = fx.EffectsChain.from_settings(dataclasses.replace(quiet, lowpass_hz=1500.0), 44100, 0)
    whole = Crossfade(old_chain.effects[1], new_chain.effects[1], 2205).process(block)
    old_chain, new_chain = (fx.EffectsChain.from_settings(s, 44100, 0)
                            for s in (quiet, dataclasses.replace(quiet, lowpass_hz=1500.0)))
    fade = Crossfade(old_chain.effects[1], new_chain.effects[1], 2205)
    pieces = np.concatenate([fade.process(block[:, i:i + 1000]) for i in range(0, block.shape[1], 1000)], axis=1)
    assert np.allclose(whole, pieces, atol=1e-9) and fade.settled is new_chain.effects[1]
