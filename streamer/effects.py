"""The lo-fi finish: tape, vinyl and tone colouring, loudness normalisation and a soft limiter.

`EffectsChain.process` takes and returns audio shaped (frames, 2). Inside, every effect is a
small class with explicit state and the same two methods (`Effect`): `process(block) -> block`
and `reset()`, on channel-major float64 blocks shaped (2, frames): numpy's per-channel
arithmetic, gathers and filters run several times faster over contiguous channels than over
interleaved frames, and the chain is meant to cost little next to FluidSynth. `to_planar`
converts (and `.T` goes back).

State is carried across calls, so a stream gives the same samples whatever block sizes it
arrives in (up to float rounding), and every random draw comes from a seeded
`numpy.random.Generator` in an order that does not depend on the block split either.

`EffectsChain` runs the effects in this order:

    sanitise → sample-rate reduction → bit-crush → wow & flutter → tone → bass centre
             → loudness normalisation → vinyl crackle → tape hiss → soft limiter

- Sanitising comes first so that no filter state is ever poisoned by NaN/Inf.
- Sample-rate reduction and bit-crushing come before everything that smooths: they model the
  sampler the music went through, and the tone low-pass after them takes the edge off their
  steps, as a converter's output filter would.
- Wow & flutter model the tape transport, so they bend the music only (not the record's surface).
- Tone (rumble high-pass, low shelf, tilt, low-pass) is a single stage, for speed; it follows the
  crusher and the delay line so it shapes what they add. The shelf keeps the triangle's lowest
  notes from filling the mix with sub-bass that small speakers cannot play.
- Bass centre takes the stereo width (pan, the renderer's chorus) off the low end: below
  `mono_below_hz` the music is mono, so the low end folds down to mono without loss.
- The loudness follower measures the finished music, after the tone filter (which changes
  loudness) and before the noise sources: its gate then sees real silence between tracks (silence
  is not boosted into loud hiss) and the noise beds do not pump with the music.
- Crackle and hiss are added at their configured absolute output level, like a record's surface.
- The limiter is last, so nothing can push the output over the ceiling.

With `EffectsSettings.enabled` false the colouring stages are left out, but sanitising, loudness
normalisation and the limiter stay: the stream must remain broadcast-safe (finite, at the target
loudness, under the ceiling) even with the lo-fi sound switched off.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol, runtime_checkable

import numpy as np

from streamer.config import EffectsSettings
from streamer.filters import (
    SectionFilter,
    butter1_bandpass_sos,
    butter1_lowpass_sos,
    butter2_sos,
    butter4_highpass_sos,
    first_order_sos,
)

log = logging.getLogger(__name__)

SeedLike = int | np.random.SeedSequence

# Samples further than this from zero are clamped at the input: they are certainly garbage, and
# their squares would overflow the loudness measurement.
INPUT_CLAMP = 1.0e4
# Levels at or below this are "off": the noise generator is not run at all.
OFF_DB = -120.0
CHANNELS = 2


@runtime_checkable
class Effect(Protocol):
    """One stage of the chain: float64 (2, frames) in, float64 (2, frames) out, state carried.

    `process` does not modify its input; it may return it unchanged. `reset` returns to the
    state just after construction (random streams restart from their seed).
    """

    def process(self, block: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


def db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def to_planar(block: np.ndarray) -> np.ndarray:
    """(frames, 2) audio of any real dtype → C-contiguous float64 (2, frames)."""
    array = np.asarray(block)
    if array.ndim != 2 or array.shape[1] != CHANNELS:
        raise ValueError(f"effects expect stereo audio shaped (frames, 2), got shape {array.shape}")
    return np.array(array.T, dtype=np.float64, order="C")


def _generator(seed: SeedLike) -> np.random.Generator:
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return np.random.Generator(np.random.PCG64(sequence))


def _between(values: np.ndarray, step: int, offset: int, frames: int) -> np.ndarray:
    """Linear interpolation between `values` (along the last axis) that sit every `step` samples.

    values[..., k] belongs to relative position k·step; the result covers positions
    offset .. offset + frames − 1. Faster than np.interp for a fixed step, and every sample is
    computed from its own two corner values only, so it does not depend on the block split.
    """
    cells = (offset + frames + step - 1) // step
    left = values[..., :cells]
    slope = values[..., 1:cells + 1] - left
    if step >= 16:
        ramp = np.arange(step, dtype=np.float64) * (1.0 / step)
        full = (left[..., None] + slope[..., None] * ramp).reshape(values.shape[:-1] + (cells * step,))
    else:  # a short innermost axis is slow in numpy: fill one phase at a time instead
        full = np.empty(values.shape[:-1] + (cells * step,))
        for phase in range(step):
            np.multiply(slope, phase / step, out=full[..., phase::step])
            full[..., phase::step] += left
    return full[..., offset:offset + frames]


class Sanitizer:
    """Replaces NaN/Inf by 0 (counting them) and clamps absurd values, so nothing downstream breaks."""

    def __init__(self) -> None:
        self.nonfinite_samples = 0

    def reset(self) -> None:
        self.nonfinite_samples = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        # Comparisons with NaN are false, so the clean common case costs two reductions.
        if block.size == 0 or (block.max() <= INPUT_CLAMP and block.min() >= -INPUT_CLAMP):
            return block
        out = block.copy()
        bad = ~np.isfinite(out)
        count = int(np.count_nonzero(bad))
        if count:
            if self.nonfinite_samples == 0:
                log.warning("effects input contains NaN/Inf; replacing with silence and counting")
            self.nonfinite_samples += count
            out[bad] = 0.0
        np.clip(out, -INPUT_CLAMP, INPUT_CLAMP, out=out)
        return out


class _Filter:
    """A linear IIR filter along the last axis of (channels, frames), state carried between calls.

    Runs the second-order sections with `streamer.filters.SectionFilter` (numpy block products,
    no per-call overhead to speak of, and no scipy.signal on the stream's start path).
    """

    def __init__(self, sos: np.ndarray, channels: int = CHANNELS) -> None:
        self._sections = SectionFilter(np.atleast_2d(np.asarray(sos, dtype=np.float64)), channels)
        self.channels = channels
        self.order = self._sections.order

    def reset(self) -> None:
        self._sections.reset()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._sections(x)


class FilterEffect:
    """A linear IIR filter (given as second-order sections), the same on both channels."""

    def __init__(self, sos: np.ndarray) -> None:
        self.sos = np.atleast_2d(np.asarray(sos, dtype=np.float64))
        self._filter = _Filter(self.sos)

    def reset(self) -> None:
        self._filter.reset()

    def process(self, block: np.ndarray) -> np.ndarray:
        return self._filter(block)


def highpass_sos(corner_hz: float, sample_rate: int) -> np.ndarray:
    """Second-order Butterworth high-pass: rumble and DC removal."""
    return butter2_sos(corner_hz, sample_rate, "highpass")


def lowpass_sos(corner_hz: float, sample_rate: int) -> np.ndarray | None:
    """Second-order Butterworth low-pass (gentle, like a worn tape head); None when effectively off."""
    if corner_hz >= 0.45 * sample_rate:
        return None
    return butter2_sos(corner_hz, sample_rate, "lowpass")


def tilt_sos(tilt_db: float, sample_rate: int, pivot_hz: float = 1000.0) -> np.ndarray | None:
    """First-order tilt: −tilt/2 dB at DC, +tilt/2 dB at the top, 0 dB at the pivot."""
    if tilt_db == 0.0:
        return None
    r = 10.0 ** (tilt_db / 40.0)
    w_zero, w_pole = 2.0 * math.pi * pivot_hz / r, 2.0 * math.pi * pivot_hz * r

    # Pre-warp both corners so the bilinear transform puts them where the analog design has them.
    def warp(w: float) -> float:
        return 2.0 * sample_rate * math.tan(min(w / (2.0 * sample_rate), 0.49 * math.pi))

    wz, wp = warp(w_zero), warp(w_pole)
    # H(s) = (1/r)·(1 + s/wz)/(1 + s/wp)
    return first_order_sos((1.0 / (r * wz), 1.0 / r), (1.0 / wp, 1.0), sample_rate)


def low_shelf_sos(corner_hz: float, gain_db: float, sample_rate: int) -> np.ndarray | None:
    """Second-order low shelf (slope 1): `gain_db` below `corner_hz`, 0 dB above, half-way at the
    corner (the bilinear-transform shelf of the usual audio-EQ design); None at 0 dB."""
    if gain_db == 0.0:
        return None
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * corner_hz / sample_rate
    cos_w, alpha = math.cos(w0), math.sin(w0) / math.sqrt(2.0)  # Q = 1/sqrt(2): no bump at the corner
    root = 2.0 * math.sqrt(a) * alpha
    b = [a * ((a + 1) - (a - 1) * cos_w + root), 2 * a * ((a - 1) - (a + 1) * cos_w),
         a * ((a + 1) - (a - 1) * cos_w - root)]
    den = [(a + 1) + (a - 1) * cos_w + root, -2 * ((a - 1) + (a + 1) * cos_w), (a + 1) + (a - 1) * cos_w - root]
    return np.array([[b[0] / den[0], b[1] / den[0], b[2] / den[0], 1.0, den[1] / den[0], den[2] / den[0]]])


def low_cut_sos(corner_hz: float, sample_rate: int) -> np.ndarray | None:
    """Fourth-order Butterworth high-pass under the bass (24 dB per octave); None at 0 Hz (off).

    Steep, so that it takes the sub-bass fundamentals (below ~60 Hz) down without thinning the
    bass an octave higher, which small speakers do play."""
    if corner_hz <= 0.0:
        return None
    return butter4_highpass_sos(corner_hz, sample_rate)


def tone_sos(highpass_hz: float, lowpass_hz: float, tilt_db: float, sample_rate: int, low_shelf_hz: float = 100.0,
             low_shelf_db: float = 0.0, low_cut_hz: float = 0.0) -> np.ndarray:
    """The whole tone stage as one cascade of second-order sections."""
    parts = [highpass_sos(highpass_hz, sample_rate), low_shelf_sos(low_shelf_hz, low_shelf_db, sample_rate),
             low_cut_sos(low_cut_hz, sample_rate), tilt_sos(tilt_db, sample_rate), lowpass_sos(lowpass_hz, sample_rate)]
    return np.vstack([p for p in parts if p is not None])


class ToneFilter:
    """Rumble high-pass, low shelf, sub-bass cut, tilt EQ and low-pass, with filter state carried
    across blocks.

    Run as up to three filters of order ≤ 4 (rumble + shelf, the sub-bass cut, tilt + low-pass):
    their poles near z = 1 would lose precision in float64 as one transfer function of order 11.
    """

    def __init__(self, sample_rate: int, highpass_hz: float = 30.0, lowpass_hz: float = 9000.0,
                 tilt_db: float = -2.0, low_shelf_hz: float = 100.0, low_shelf_db: float = 0.0,
                 low_cut_hz: float = 0.0) -> None:
        self.sos = tone_sos(highpass_hz, lowpass_hz, tilt_db, sample_rate, low_shelf_hz, low_shelf_db, low_cut_hz)
        groups = [(highpass_sos(highpass_hz, sample_rate), low_shelf_sos(low_shelf_hz, low_shelf_db, sample_rate)),
                  (low_cut_sos(low_cut_hz, sample_rate),),
                  (tilt_sos(tilt_db, sample_rate), lowpass_sos(lowpass_hz, sample_rate))]
        self._filters = [_Filter(np.vstack(parts)) for parts in
                         ([p for p in group if p is not None] for group in groups) if parts]

    def reset(self) -> None:
        for stage in self._filters:
            stage.reset()

    def process(self, block: np.ndarray) -> np.ndarray:
        for stage in self._filters:
            block = stage(block)
        return block


class BassCentre:
    """Stereo width kept off the low end: below `below_hz` the music is made mono, so bass and
    kick sit in the centre (a mono-compatible low end, as records are cut) while the panning and
    chorus above stay as wide as they were.

    A Linkwitz–Riley crossover (two second-order Butterworth filters in series, each side)
    splits the signal; its low and high outputs sum to an all-pass, so the band edges add up
    flat and both channels get the same phase: the image above the crossover does not move.
    Blocks are (2, frames); state carries across blocks.
    """

    def __init__(self, sample_rate: int, below_hz: float = 150.0) -> None:
        self.below_hz = below_hz
        low = butter2_sos(below_hz, sample_rate, "lowpass")
        high = butter2_sos(below_hz, sample_rate, "highpass")
        self._low, self._high = _Filter(np.vstack([low, low])), _Filter(np.vstack([high, high]))

    def reset(self) -> None:
        self._low.reset()
        self._high.reset()

    def process(self, block: np.ndarray) -> np.ndarray:
        low = self._low(block)
        return self._high(block) + low.mean(axis=0)


class SampleRateReducer:
    """Sample-and-hold to a lower rate, without anti-aliasing (the aliasing is the point).

    A new value is taken whenever the target clock, counted from the absolute sample index,
    ticks; so where the holds fall does not depend on how the stream is split into blocks.
    """

    def __init__(self, sample_rate: int, target_hz: float) -> None:
        if target_hz <= 0.0:
            raise ValueError(f"target_hz must be positive, got {target_hz}")
        self.ratio = min(1.0, target_hz / sample_rate)
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._last_tick = -1
        self._held = np.zeros(CHANNELS)

    def process(self, block: np.ndarray) -> np.ndarray:
        frames = block.shape[1]
        if frames == 0:
            return block.copy()
        ticks = np.floor(np.arange(self._n, self._n + frames) * self.ratio).astype(np.int64)
        fresh = np.empty(frames, dtype=bool)
        fresh[0] = ticks[0] != self._last_tick
        np.not_equal(ticks[1:], ticks[:-1], out=fresh[1:])
        index = np.where(fresh, np.arange(frames), -1)
        np.maximum.accumulate(index, out=index)
        out = block.take(np.maximum(index, 0), axis=1)
        held_over = index < 0  # samples before this block's first tick keep the carried value
        if held_over[0]:
            out[:, held_over] = self._held[:, None]
        self._held = out[:, -1].copy()
        self._last_tick = int(ticks[-1])
        self._n += frames
        return out


class BitCrusher:
    """Quantises to `bits`-bit PCM: 2**bits levels from −1 to 1 − 2**(1−bits), clipping at full scale.

    No dither, on purpose: the granular quantisation noise is the sound being asked for.
    """

    def __init__(self, bits: int) -> None:
        if not 1 <= bits <= 24:
            raise ValueError(f"bits must be from 1 to 24, got {bits}")
        self.bits = bits
        self._scale = float(2 ** (bits - 1))

    def reset(self) -> None:
        pass  # stateless

    def process(self, block: np.ndarray) -> np.ndarray:
        out = np.rint(block * self._scale)
        np.clip(out, -self._scale, self._scale - 1.0, out=out)
        out *= 1.0 / self._scale
        return out


def cents_to_delay_amplitude(cents: float, rate_hz: float, sample_rate: int) -> float:
    """Delay swing (samples) of a sinusoidal delay whose pitch deviates by ±`cents` at `rate_hz`.

    A delay d(t) = A·sin(2πft) changes pitch by the factor 1 − d'(t), whose peak deviation is
    A·2πf/fs; solving A·2πf/fs = 2**(cents/1200) − 1 for A.
    """
    deviation = 2.0 ** (cents / 1200.0) - 1.0
    return deviation * sample_rate / (2.0 * math.pi * rate_hz)


class WowFlutter:
    """Tape speed wobble: a delay line read at a sinusoidally modulated fractional delay.

    Two modulators (slow wow, fast flutter) with seeded start phases. Their phase comes from the
    absolute sample count, evaluated every 32 samples and linearly interpolated (the error is
    ~1e-5 samples of delay), so the result does not depend on block boundaries. The last input
    samples are kept, so reads reaching back across a block boundary interpolate the real signal.

    Reads interpolate linearly between the two neighbouring samples. A four-point cubic costs
    half as much again for the whole stage, and what linear reading adds, a top-end dip of up
    to 1.9 dB at 9 kHz that comes and goes with the fractional position, sits under the tone
    low-pass and the noise beds of a lo-fi chain.
    """

    _GRID_SHIFT = 5
    _MAX_FRAMES = 8192

    def __init__(self, sample_rate: int, wow_rate_hz: float = 0.5, wow_cents: float = 6.0,
                 flutter_rate_hz: float = 7.0, flutter_cents: float = 2.0, seed: SeedLike = 0) -> None:
        rates = np.array([wow_rate_hz, flutter_rate_hz], dtype=np.float64)
        self.amplitudes = np.array([cents_to_delay_amplitude(wow_cents, wow_rate_hz, sample_rate),
                                    cents_to_delay_amplitude(flutter_cents, flutter_rate_hz, sample_rate)])
        self.phases = _generator(seed).random(2)  # in cycles
        swing = float(self.amplitudes.sum())
        # Centre delay: the read point must stay at least one sample behind the newest input (the
        # interpolation reads the sample after its integer position) and inside the kept history.
        self.centre = swing + 1.5
        self.history_len = int(math.ceil(self.centre + swing)) + 2
        self._cycles_per_sample = rates / sample_rate
        self._ramp = np.arange(self.history_len, self.history_len + self._MAX_FRAMES, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._history = np.zeros((CHANNELS, self.history_len))

    def delay(self, start: int, frames: int) -> np.ndarray:
        """The delay in samples at absolute samples start .. start + frames − 1."""
        shift = self._GRID_SHIFT
        first, last = start >> shift, (start + frames - 1) >> shift
        points = np.arange(first, last + 2, dtype=np.float64) * (1 << shift)
        cycles = points[:, None] * self._cycles_per_sample[None, :] + self.phases[None, :]
        cycles -= np.floor(cycles)  # keep the sine argument small however long the stream runs
        at_grid = self.centre + np.sin(2.0 * math.pi * cycles) @ self.amplitudes
        return _between(at_grid, 1 << shift, start - (first << shift), frames)

    def process(self, block: np.ndarray) -> np.ndarray:
        frames = block.shape[1]
        if frames > self._MAX_FRAMES:
            # The working set outgrows the CPU cache on longer blocks and the stage slows down
            # sharply; pieces give the same result.
            return np.concatenate([self.process(block[:, start:start + self._MAX_FRAMES])
                                   for start in range(0, frames, self._MAX_FRAMES)], axis=1)
        if frames == 0:
            return block.copy()
        hist = self.history_len
        buffer = np.concatenate((self._history, block), axis=1)
        position = self._ramp[:frames] - self.delay(self._n, frames)  # in the buffer
        base = np.floor(position)
        fraction = position - base
        index = base.astype(np.intp)
        before = buffer.take(index, axis=1)
        out = buffer.take(index + 1, axis=1)
        out -= before
        out *= fraction
        out += before
        self._history = buffer[:, -hist:].copy()
        self._n += frames
        return out


def k_weighting_sos(sample_rate: float) -> np.ndarray:
    """ITU-R BS.1770 K-weighting (high-shelf pre-filter + RLB high-pass) for any sample rate.

    Both biquads come from their analog prototypes (corner, Q, shelf gain) through the bilinear
    transform, so 44.1 kHz and the decimated rates used below get the true curve rather than the
    48 kHz coefficient table.
    """
    # Pre-filter: high shelf.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    # RLB weighting: second-order high-pass.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


class _OnePole:
    """y[k] = y[k−1] + a·(x[k] − y[k−1]) over short sequences, as small matrix products.

    The loudness control runs once per 256 frames, so it sees a few values per block; at that
    size scipy's per-call overhead of lfilter costs more than the arithmetic.
    """

    CHUNK = 128

    def __init__(self, a: float) -> None:
        k = np.arange(self.CHUNK)
        lag = k[:, None] - k[None, :]
        self._matrix = np.where(lag >= 0, a * (1.0 - a) ** np.maximum(lag, 0), 0.0)
        self._carry = (1.0 - a) ** (k + 1)

    def run(self, x: np.ndarray, y0: float) -> np.ndarray:
        out = np.empty(x.shape[0])
        for start in range(0, x.shape[0], self.CHUNK):
            part = x[start:start + self.CHUNK]
            n = part.shape[0]
            out[start:start + n] = self._matrix[:n, :n] @ part + self._carry[:n] * y0
            y0 = out[start + n - 1]
        return out


class LoudnessNormalizer:
    """Causal loudness follower: scales the music towards `target_lufs`, smoothly.

    Measurement: K-weighted power of both channels (BS.1770 weighting, designed for the rate it
    runs at) on every fourth sample at 44.1/48 kHz (at absolute indices divisible by 4; fewer are
    skipped at low rates), averaged over fixed groups of 256 frames on the absolute sample grid.
    A slow average does not need every sample; what folds down from above a quarter of the rate
    gets a slightly wrong K weight, which after the tone low-pass moves the result by about
    0.1 LU (0.3 LU with the low-pass off and a +12 dB tilt) and costs a quarter of the filtering.
    Per group:
      - a momentary level (one-pole, 0.1 s) decides the gate: below `gate_lufs`, or more than
        20 dB under an ungated one-pole average of the recent power (time constant `window_s`),
        the group counts as silence and the long-term level is frozen, so silence is never
        boosted. The relative gate catches the end of the music within about half a second,
        long before the momentary level sinks under the absolute gate. It is relative to an
        ungated average on purpose: measured against the gated level it could lock shut after
        a loud glitch and hold the gain down for good;
      - the long-term level is the mean power of ungated groups: a cumulative mean until
        `window_s` of music has been heard (a fast, unbiased start), then a one-pole average
        with time constant `window_s`;
      - gain = target − level in dB, clamped to [−60, max_gain_db], then smoothed (one-pole,
        0.75 s); unity until the first music.
    Per sample, the gain ramps linearly between its values after the last two completed groups,
    so it moves continuously and never looks ahead. Groups sit on the absolute grid, so the
    output does not depend on block boundaries.
    """

    GROUP_SHIFT = 8  # 256 frames per control step: 5.8 ms at 44.1 kHz
    MAX_DECIMATION = 4
    MIN_MEASURING_RATE = 11000.0  # the K-weighting shelf (1.7 kHz) needs room under Nyquist
    MOMENTARY_S = 0.1
    RELATIVE_GATE_DB = -20.0
    GAIN_SMOOTHING_S = 0.75
    MIN_GAIN_DB = -60.0

    def __init__(self, sample_rate: int, target_lufs: float = -14.0, window_s: float = 8.0,
                 max_gain_db: float = 24.0, gate_lufs: float = -60.0) -> None:
        self.sample_rate = sample_rate
        self.target_lufs = target_lufs
        self.max_gain_db = max_gain_db
        self.decimation = next(d for d in (self.MAX_DECIMATION, 2, 1)
                               if d == 1 or sample_rate / d >= self.MIN_MEASURING_RATE)
        self._k_filter = _Filter(k_weighting_sos(sample_rate / self.decimation))
        group = 1 << self.GROUP_SHIFT
        step_s = group / sample_rate
        self._warmup_groups = max(1, round(window_s / step_s))
        self._momentary_filter = _OnePole(1.0 - math.exp(-step_s / self.MOMENTARY_S))
        self._level_filter = _OnePole(1.0 / self._warmup_groups)
        self._recent_filter = self._level_filter  # same time constant, but never gated
        self._relative_gate = 10.0 ** (self.RELATIVE_GATE_DB / 10.0)
        self._gain_filter = _OnePole(1.0 - math.exp(-step_s / self.GAIN_SMOOTHING_S))
        self._gate_power = 10.0 ** ((gate_lufs + 0.691) / 10.0)
        self._group_scale = self.decimation / group  # sum of a group's powers → mean power
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._k_filter.reset()
        self._partial = 0.0  # power summed so far in the unfinished group
        self._momentary = 0.0
        self._recent = 0.0
        self._seen = 0  # ungated groups so far (drives the warm-up)
        self._sum = 0.0  # their power sum, during the warm-up
        self._level = math.nan  # long-term mean power; NaN until music has been heard
        self._gains = np.ones(2)  # linear gain after the last two completed groups
        self._gain_db = 0.0

    @property
    def gain_db(self) -> float:
        """The smoothed gain after the last completed group, in dB."""
        return self._gain_db

    def _group_powers(self, block: np.ndarray) -> np.ndarray:
        """Mean K-weighted power of every group completed by this block."""
        start, frames, shift = self._n, block.shape[1], self.GROUP_SHIFT
        first_group = start >> shift
        done = ((start + frames) >> shift) - first_group  # groups completed by this block
        skip = -start % self.decimation  # measured samples sit at absolute multiples of it
        decimated = block[:, skip::self.decimation]
        if decimated.shape[1]:
            weighted = self._k_filter(decimated)
            weighted *= weighted
            power = weighted[0] + weighted[1]
            where = ((start + skip + self.decimation * np.arange(power.shape[0])) >> shift) - first_group
            touched = ((start + frames - 1) >> shift) - first_group + 1
            sums = np.bincount(where, weights=power, minlength=touched)
        else:
            sums = np.zeros(1)
        sums[0] += self._partial
        self._partial = float(sums[done]) if done < sums.shape[0] else 0.0
        return sums[:done] * self._group_scale

    def _track(self, powers: np.ndarray) -> np.ndarray:
        """Long-term mean power after each group (NaN before any music)."""
        level_before = self._level
        momentary = self._momentary_filter.run(powers, self._momentary)
        recent = self._recent_filter.run(powers, self._recent)
        self._momentary, self._recent = float(momentary[-1]), float(recent[-1])
        heard = (momentary >= self._gate_power) & (momentary >= recent * self._relative_gate)
        music = powers[heard]
        if not music.shape[0]:
            return np.full(powers.shape[0], level_before)
        tracked = np.empty(music.shape[0])
        warm = min(music.shape[0], max(0, self._warmup_groups - self._seen))
        if warm:
            sums = self._sum + np.cumsum(music[:warm])
            tracked[:warm] = sums / (self._seen + np.arange(1, warm + 1))
            self._sum = float(sums[-1])
            self._level = float(tracked[warm - 1])  # the one-pole part continues from here
        if warm < music.shape[0]:
            tracked[warm:] = self._level_filter.run(music[warm:], self._level)
        self._seen += music.shape[0]
        self._level = float(tracked[-1])
        if music.shape[0] == powers.shape[0]:
            return tracked
        # Gated groups hold the level of the last music before them.
        index = np.where(heard, np.cumsum(heard) - 1, -1)
        np.maximum.accumulate(index, out=index)
        return np.where(index >= 0, tracked.take(np.maximum(index, 0)), level_before)

    def process(self, block: np.ndarray) -> np.ndarray:
        frames = block.shape[1]
        if frames == 0:
            return block.copy()
        powers = self._group_powers(block)
        gains = self._gains
        if powers.shape[0]:
            levels = self._track(powers)
            target = self.target_lufs + 0.691 - 10.0 * np.log10(np.maximum(levels, 1e-30))
            target[np.isnan(target)] = 0.0  # no music heard yet: stay at unity rather than guess
            np.clip(target, self.MIN_GAIN_DB, self.max_gain_db, out=target)
            smooth = self._gain_filter.run(target, self._gain_db)
            self._gain_db = float(smooth[-1])
            gains = np.concatenate((gains, 10.0 ** (smooth * (1.0 / 20.0))))
        # Sample n of group j ramps from the gain after group j−2 to the gain after group j−1:
        # gains[k] is reached at the start of the k-th group from the one holding this block's start.
        group = 1 << self.GROUP_SHIFT
        gain = _between(gains, group, self._n & (group - 1), frames)
        self._gains = gains[-2:].copy()
        self._n += frames
        return block * gain


class _Int16Stream:
    """Uniform signed 16-bit integers, drawn in order from a seeded generator's raw 64-bit output.

    Four values per raw draw is four times cheaper than `Generator.random`, and 16 bits are
    plenty for noise. Values left over from the last draw are kept for the next call, so the
    sequence never depends on how it is requested.
    """

    def __init__(self, seed: SeedLike) -> None:
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        self._bits = _generator(self._seed).bit_generator
        self._left = np.zeros(0, dtype=np.int16)

    def take(self, count: int) -> np.ndarray:
        need = count - self._left.shape[0]
        if need > 0:
            fresh = np.asarray(self._bits.random_raw((need + 3) // 4), dtype=np.uint64).view(np.int16)
            pool = np.concatenate((self._left, fresh))
        else:
            pool = self._left
        self._left = pool[count:].copy()
        return pool[:count]


def _int16_noise_scale(rms: float) -> float:
    """Factor that turns uniform int16 values into noise of RMS `rms` (their mean, −0.5, is
    ~-150 dB under the noise and ignored)."""
    return rms * math.sqrt(12.0) / 65536.0


class _ClickStream:
    """Sparse clicks as a Poisson process, each a short decaying burst from a seeded bank.

    Every event takes five uniforms (gap to the next, bank entry, size, polarity, pan) in event
    order, so the draws never depend on where blocks begin or end. The bank holds 64 bursts with
    log-uniform decay times, each an initial spike followed by a rough noise tail, slightly
    differentiated (a tick, not a thump), softened above 6 kHz and peak-normalised. A click that
    runs past the end of a block is carried into the next one.
    """

    BANK = 64

    def __init__(self, sample_rate: int, per_second: float, peak: float, min_amplitude: float,
                 decay_s: tuple[float, float], seed: SeedLike) -> None:
        self.mean_gap = sample_rate / per_second
        self.peak = peak
        self.min_amplitude = min_amplitude
        lo, hi = decay_s[0] * sample_rate, decay_s[1] * sample_rate
        self.length = int(math.ceil(7.0 * hi)) + 2
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        bank_seed, self._seed = sequence.spawn(2)
        rng = _generator(bank_seed)
        tau = lo * (hi / lo) ** rng.random(self.BANK)
        bank = 1.2 * (rng.random((self.BANK, self.length)) - 0.5)
        bank[:, 0] = 1.0
        bank *= np.exp(-np.arange(self.length)[None, :] / tau[:, None])
        bank[:, 1:] -= 0.5 * bank[:, :-1].copy()
        # A stylus and cartridge do not pass the top octave: soften the ticks above ~6 kHz.
        bank = _Filter(butter1_lowpass_sos(min(6000.0, 0.4 * sample_rate), sample_rate), self.BANK)(bank)
        self._bank = bank / np.abs(bank).max(axis=1, keepdims=True)
        self.reset()

    def reset(self) -> None:
        self._rng = _generator(self._seed)
        self._queue: list[list[float]] = []  # drawn events not yet placed, oldest last
        self._until_next = self._gap(self._next_draws()[0])
        self._tail = np.zeros((CHANNELS, self.length))
        self._tail_left = 0  # leading samples of the carried tail that may be non-zero

    def _next_draws(self) -> list[float]:
        # Events are drawn 32 at a time (one generator call instead of 32), still in event order.
        if not self._queue:
            self._queue = self._rng.random((32, 5)).tolist()[::-1]
        return self._queue.pop()

    def _gap(self, uniform: float) -> int:
        return 1 + int(-math.log1p(-uniform) * self.mean_gap)

    def _gains(self, amplitude: float, polarity: float, pan: float) -> tuple[float, float]:
        size = self.peak * (self.min_amplitude + (1.0 - self.min_amplitude) * amplitude ** 3)
        if polarity < 0.5:
            size = -size
        # Mostly centred with a little stereo spread, like a groove's two walls.
        spread = 0.5 * pan - 0.25
        return size * (0.75 - spread), size * (0.75 + spread)

    def add_to(self, out: np.ndarray) -> None:
        """Add this block's clicks to `out` (2, frames) in place."""
        frames, length = out.shape[1], self.length
        if self._tail_left > 0:
            n = min(frames, self._tail_left)
            out[:, :n] += self._tail[:, :n]
            rest = np.zeros_like(self._tail)
            rest[:, :length - n] = self._tail[:, n:]
            self._tail, self._tail_left = rest, self._tail_left - n
        position = self._until_next
        while position < frames:
            gap, entry, amplitude, polarity, pan = self._next_draws()
            shape = self._bank[int(entry * self.BANK)]
            inside = min(length, frames - position)
            for channel, gain in enumerate(self._gains(amplitude, polarity, pan)):
                out[channel, position:position + inside] += gain * shape[:inside]
                if inside < length:
                    self._tail[channel, :length - inside] += gain * shape[inside:]
            if inside < length:
                self._tail_left = max(self._tail_left, length - inside)
            position += self._gap(gap)
        self._until_next = position - frames


class _BandNoise:
    """Stationary band-limited noise generated at a quarter of the rate and linearly interpolated.

    Generating at a lower rate is four times cheaper and the band (under 3 kHz) fits easily.
    The interpolation grid is the absolute sample index and each channel's low-rate samples are
    drawn in order from its own stream, so blocks do not matter. `rms` is the level of the
    interpolated output.
    """

    RATIO_SHIFT = 2
    RATIO = 1 << RATIO_SHIFT

    def __init__(self, sample_rate: int, band_hz: tuple[float, float], rms: float, seed: SeedLike) -> None:
        low_rate = sample_rate / self.RATIO
        band = (band_hz[0], min(band_hz[1], 0.45 * low_rate))  # stay under the low rate's Nyquist
        sos = butter1_bandpass_sos(band[0], band[1], low_rate)
        self._filter = _Filter(sos)
        impulse = np.zeros((1, int(low_rate)))
        impulse[0, 0] = 1.0
        h = _Filter(sos, 1)(impulse)[0]
        energy = float(np.dot(h, h))
        lag1 = float(np.dot(h[:-1], h[1:])) / energy
        # For white input the filtered variance is Σh² times the input's; linear interpolation
        # keeps (2 + ρ1)/3 of it on average over the phases (ρ1: lag-1 autocorrelation).
        self.scale = _int16_noise_scale(rms) / math.sqrt(energy * (2.0 + lag1) / 3.0)
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._streams = [_Int16Stream(child) for child in sequence.spawn(CHANNELS)]
        self.reset()

    def reset(self) -> None:
        for stream in self._streams:
            stream.reset()
        self._filter.reset()
        self._n = 0
        self._made = 0  # low-rate samples generated so far
        self._kept = np.zeros((CHANNELS, 0))  # the last (up to) two of them

    def add_to(self, out: np.ndarray) -> None:
        """Add this block's noise to `out` (2, frames) in place."""
        start, frames = self._n, out.shape[1]
        need = ((start + frames - 1) >> self.RATIO_SHIFT) + 2  # low-rate samples 0 .. need−1
        fresh = np.empty((CHANNELS, need - self._made))
        for channel, stream in enumerate(self._streams):
            fresh[channel] = stream.take(need - self._made)
        fresh = self._filter(fresh)
        fresh *= self.scale
        samples = np.concatenate((self._kept, fresh), axis=1)
        base = self._made - self._kept.shape[1]  # low-rate index of samples[:, 0]
        # Low-rate sample k sits at full-rate position k·RATIO.
        out += _between(samples, self.RATIO, start - base * self.RATIO, frames)
        self._made = need
        self._kept = samples[:, -2:].copy()
        self._n += frames


class VinylCrackle:
    """Vinyl: sparse clicks, a fine dust of faint ticks, and band-limited surface noise.

    Clicks have random size (peaks up to `click_peak_db`), polarity, decay (0.05–0.6 ms) and a
    slight stereo offset. Surface noise is noise band-passed to 100 Hz–2.5 kHz (the dull rush of
    a groove rather than the flat spectrum of white noise) at `surface_db` RMS, and the dust
    ticks ride on it, up to 12 dB above it. Each part has its own random stream.
    """

    def __init__(self, sample_rate: int, clicks_per_second: float = 4.0, click_peak_db: float = -32.0,
                 dust_per_second: float = 30.0, surface_db: float = -54.0, seed: SeedLike = 0) -> None:
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        children = sequence.spawn(3)
        self._parts: list[_ClickStream | _BandNoise] = []
        if clicks_per_second > 0.0:
            self._parts.append(_ClickStream(sample_rate, clicks_per_second, db_to_amplitude(click_peak_db),
                                            0.1, (0.05e-3, 0.6e-3), children[0]))
        if dust_per_second > 0.0 and surface_db > OFF_DB:
            self._parts.append(_ClickStream(sample_rate, dust_per_second, 4.0 * db_to_amplitude(surface_db),
                                            0.1, (0.02e-3, 0.1e-3), children[1]))
        if surface_db > OFF_DB:
            self._parts.append(_BandNoise(sample_rate, (100.0, 2500.0), db_to_amplitude(surface_db),
                                          children[2]))

    def reset(self) -> None:
        for part in self._parts:
            part.reset()

    def process(self, block: np.ndarray) -> np.ndarray:
        out = block.copy()
        if out.shape[1]:
            for part in self._parts:
                part.add_to(out)
        return out


class TapeHiss:
    """Tape hiss: white noise through a two-tap FIR, 1 − 0.4z⁻¹, that tips it towards the highs.

    −4.4 dB at DC, +2.9 dB at the top, scaled so that each channel's RMS is `level_db`. Each
    channel draws from its own stream, in order, with the previous sample carried for the FIR,
    so block boundaries do not matter.
    """

    TAPS = (1.0, -0.4)

    def __init__(self, level_db: float = -58.0, seed: SeedLike = 0) -> None:
        norm = math.sqrt(sum(t * t for t in self.TAPS))
        self.scale = _int16_noise_scale(db_to_amplitude(level_db)) / norm
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._streams = [_Int16Stream(child) for child in sequence.spawn(CHANNELS)]
        self.reset()

    def reset(self) -> None:
        for stream in self._streams:
            stream.reset()
        self._last = np.zeros(CHANNELS)

    def process(self, block: np.ndarray) -> np.ndarray:
        frames = block.shape[1]
        if frames == 0:
            return block.copy()
        white = np.empty((CHANNELS, frames + 1))
        white[:, 0] = self._last
        for channel, stream in enumerate(self._streams):
            white[channel, 1:] = stream.take(frames)
        self._last = white[:, -1].copy()
        b0, b1 = (tap * self.scale for tap in self.TAPS)
        out = white[:, 1:] * b0
        out += block
        out += b1 * white[:, :-1]
        return out


class SoftLimiter:
    """Memoryless soft clipper: linear below the knee, tanh-shaped above, never over the ceiling.

    Above the knee k the curve is k + (c − k)·tanh((|x| − k)/(c − k)): continuous with slope 1
    at the knee and approaching the ceiling c without reaching it. No look-ahead, so no latency;
    it only works hard when the loudness follower lets something much too loud through.
    """

    def __init__(self, ceiling_dbfs: float = -1.0, knee_db: float = 6.0) -> None:
        self.ceiling = db_to_amplitude(ceiling_dbfs)
        self.knee = self.ceiling * db_to_amplitude(-knee_db)
        # The largest float32 at or below the ceiling: rounding to float32 must not cross it.
        c32 = np.float32(self.ceiling)
        if float(c32) > self.ceiling:
            c32 = np.nextafter(c32, np.float32(0.0))
        self.safe_ceiling = float(c32)

    def reset(self) -> None:
        pass  # stateless

    def process(self, block: np.ndarray) -> np.ndarray:
        if block.size == 0 or (block.max() <= self.knee and block.min() >= -self.knee):
            return block
        out = block.copy()
        magnitude = np.abs(out)
        over = magnitude > self.knee
        span = self.ceiling - self.knee
        shaped = self.knee + span * np.tanh((magnitude[over] - self.knee) / span)
        np.minimum(shaped, self.safe_ceiling, out=shaped)
        out[over] = np.copysign(shaped, out[over])
        return out


class EffectsChain:
    """The effects in chain order (see the module docstring for the order and why)."""

    # Frames per pass: big enough to amortise per-call costs, small enough for the cache, and each
    # planar float64 intermediate (PIECE × 2 × 8 bytes, 64 KiB) under the daemon's pinned mmap
    # threshold (`streamer.memory`, 128 KiB): at 16384 every intermediate of a bar was a fresh
    # mmap, and 60 bars through the chain cost 4.3 CPU s instead of 1.0 with the threshold pinned
    # (bench/bench_render.py, unpinned: render + effects 84× → 133× real time).
    PIECE = 4096

    def __init__(self, effects: list[Effect]) -> None:
        self.effects = effects
        sanitizers = [e for e in effects if isinstance(e, Sanitizer)]
        self._sanitizer = sanitizers[0] if sanitizers else Sanitizer()

    @classmethod
    def from_settings(cls, settings: EffectsSettings, sample_rate: int, seed: int) -> EffectsChain:
        """Build the chain; `seed` fixes every random stream (crackle, hiss, wobble phases)."""
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        s = settings
        seeds = np.random.SeedSequence(seed).spawn(3)
        before: list[Effect] = []
        after: list[Effect] = []
        if s.enabled:
            if 0.0 < s.downsample_hz < sample_rate:
                before.append(SampleRateReducer(sample_rate, s.downsample_hz))
            if s.bitcrush_bits > 0:
                before.append(BitCrusher(s.bitcrush_bits))
            if s.wow_depth_cents > 0.0 or s.flutter_depth_cents > 0.0:
                before.append(WowFlutter(sample_rate, s.wow_rate_hz, s.wow_depth_cents,
                                         s.flutter_rate_hz, s.flutter_depth_cents, seeds[0]))
            before.append(ToneFilter(sample_rate, s.highpass_hz, s.lowpass_hz, s.tilt_db, s.low_shelf_hz,
                                     s.low_shelf_db, s.low_cut_hz))
            if s.mono_below_hz > 0.0:
                before.append(BassCentre(sample_rate, s.mono_below_hz))
            if s.crackle_per_second > 0.0 or s.surface_noise_db > OFF_DB:
                after.append(VinylCrackle(sample_rate, s.crackle_per_second, s.crackle_db,
                                          s.dust_per_second, s.surface_noise_db, seeds[1]))
            if s.hiss_db > OFF_DB:
                after.append(TapeHiss(s.hiss_db, seeds[2]))
        loudness = LoudnessNormalizer(sample_rate, s.loudness_target_lufs, s.loudness_window_s,
                                      s.max_gain_db, s.loudness_gate_lufs)
        limiter = SoftLimiter(s.limiter_ceiling_dbfs, s.limiter_knee_db)
        effects: list[Effect] = [Sanitizer(), *before, loudness, *after, limiter]
        log.debug("effects chain at %d Hz: %s", sample_rate, " → ".join(type(e).__name__ for e in effects))
        return cls(effects)

    @property
    def nonfinite_samples(self) -> int:
        """How many NaN/Inf input values (each channel counted) were replaced by silence."""
        return self._sanitizer.nonfinite_samples

    def reset(self) -> None:
        """Back to the state just after construction: the same input then gives the same output."""
        for effect in self.effects:
            effect.reset()

    def process(self, block: np.ndarray) -> np.ndarray:
        """Run one block (frames, 2) of any real dtype; returns float32 (frames, 2)."""
        array = np.asarray(block)
        if array.ndim != 2 or array.shape[1] != CHANNELS:
            raise ValueError(f"effects expect stereo audio shaped (frames, 2), got shape {array.shape}")
        frames = array.shape[0]
        out = np.empty((frames, CHANNELS), dtype=np.float32)
        # Long blocks (a whole bar is ~130 000 frames) go through in cache-sized pieces: every
        # intermediate then stays in the CPU cache, and the result is the same by construction.
        for start in range(0, frames, self.PIECE):
            piece = to_planar(array[start:start + self.PIECE])
            for effect in self.effects:
                piece = effect.process(piece)
            # The limiter keeps every value at or under the largest float32 below the ceiling.
            for channel in range(CHANNELS):
                out[start:start + piece.shape[1], channel] = piece[channel]
        return out
