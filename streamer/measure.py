"""Figures of rendered audio: how wide the stereo image is, what survives a mono fold-down, and
how much of the energy sits in the sub-bass that phone and laptop speakers cannot play.

All take float PCM shaped (frames, 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SUB_BASS_HZ = 60.0
WELCH_SECONDS = 0.5  # analysis window: 2 Hz bins, fine enough to split at 60 Hz


@dataclass(frozen=True)
class StereoFigures:
    correlation: float  # Pearson correlation of L and R: 1 = mono, 0 = unrelated
    mono_loss_db: float  # level of (L + R) / 2 against the stereo level (mean of L² and R²); ≤ 0
    side_db: float  # level of the side (L − R) / 2 against the mid (L + R) / 2


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def stereo_figures(pcm: np.ndarray) -> StereoFigures:
    left, right = pcm[:, 0].astype(np.float64), pcm[:, 1].astype(np.float64)
    left, right = left - left.mean(), right - right.mean()
    stereo = 0.5 * (_power(left) + _power(right))
    mid, side = _power(0.5 * (left + right)), _power(0.5 * (left - right))
    if stereo == 0.0 or mid == 0.0:
        raise ValueError("silent audio has no stereo figures")
    correlation = float(np.dot(left, right) / math.sqrt(np.dot(left, left) * np.dot(right, right)))
    return StereoFigures(correlation, 10.0 * math.log10(mid / stereo),
                         10.0 * math.log10(side / mid) if side > 0 else -math.inf)


def _spectrum(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, power per bin summed over channels) of `x` (frames, channels)."""
    segment = min(x.shape[0], int(WELCH_SECONDS * sample_rate))
    from scipy import signal  # here, not at import: measuring is for tests and bench/, never the stream's start

    freqs, psd = signal.welch(x.astype(np.float64), fs=sample_rate, nperseg=segment, axis=0)
    return freqs, psd.sum(axis=1)


def _ratio_db(part: float, whole: float) -> float:
    if whole == 0.0:
        raise ValueError("silent audio has no spectrum")
    return 10.0 * math.log10(part / whole) if part > 0 else -math.inf


def band_share_db(pcm: np.ndarray, sample_rate: int, below_hz: float = SUB_BASS_HZ) -> float:
    """Energy below `below_hz` relative to the whole (both channels), in dB (0 = all of it)."""
    freqs, power = _spectrum(pcm, sample_rate)
    return _ratio_db(float(power[freqs < below_hz].sum()), float(power.sum()))


def low_side_db(pcm: np.ndarray, sample_rate: int, below_hz: float = 120.0) -> float:
    """Side (L − R) energy below `below_hz` relative to the mid (L + R) energy there, in dB: how
    centred the low end is (−∞ = mono)."""
    freqs, side = _spectrum(pcm[:, :1] - pcm[:, 1:], sample_rate)
    _, mid = _spectrum(pcm[:, :1] + pcm[:, 1:], sample_rate)
    low = freqs < below_hz
    return _ratio_db(float(side[low].sum()), float(mid[low].sum()))
