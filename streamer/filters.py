"""IIR filter design and block filtering in numpy: the few filters the effects chain needs.

The stream starts faster without scipy.signal (importing it costs over a second of CPU, on the
path from start to first audio), so the designs here are the closed-form bilinear transforms of
their analog prototypes (the same as `scipy.signal.butter`/`bilinear`, which the tests compare
against), and `SectionFilter` runs a cascade of second-order sections with its state carried
between calls.

How `SectionFilter` runs without a per-sample loop: the cascade is one linear state-space system
(state s: p values per channel, two per second-order section and one per first-order one). Over
a chunk of L = 16 samples the output is a Toeplitz matrix of the impulse response times the
chunk, plus a fixed (L, p) matrix times the state at the chunk's start; the state then moves on
by A^L plus a fixed (p, L) matrix times the chunk. Those are small matrix products for all
chunks at once. What is left, the chunk-start states s[k+1] = M·s[k] + u[k], is the same kind
of recursion with fewer steps, solved the same way in groups of 8, level upon level, until one
group remains. Each output is the same linear map of the
input as a sample-by-sample filter's; only the rounding differs: on the tone stage (order 5) the
output stays within 3e-11 of a long-double reference, closer than the single transfer function
run by scipy's lfilter that this replaces (1e-10).
"""

from __future__ import annotations

import math

import numpy as np

SQRT2 = math.sqrt(2.0)


def _prewarped(corner_hz: float, sample_rate: float) -> float:
    """tan(π·f/fs): the bilinear transform's frequency mapping, so the corner lands where asked."""
    return math.tan(math.pi * corner_hz / sample_rate)


def butter2_sos(corner_hz: float, sample_rate: float, kind: str, q: float = 1.0 / SQRT2) -> np.ndarray:
    """Second-order low-pass or high-pass as one section [b0, b1, b2, 1, a1, a2]; at the default
    `q` a Butterworth, other values make the sections of higher-order Butterworths."""
    k = _prewarped(corner_hz, sample_rate)
    norm = 1.0 / (1.0 + k / q + k * k)
    a = [1.0, 2.0 * (k * k - 1.0) * norm, (1.0 - k / q + k * k) * norm]
    if kind == "lowpass":
        b = [k * k * norm, 2.0 * k * k * norm, k * k * norm]
    elif kind == "highpass":
        b = [norm, -2.0 * norm, norm]
    else:
        raise ValueError(f"kind must be 'lowpass' or 'highpass', got {kind!r}")
    return np.array([b + a])


def butter4_highpass_sos(corner_hz: float, sample_rate: float) -> np.ndarray:
    """Fourth-order Butterworth high-pass (24 dB per octave) as two sections (2, 6): the pole
    pairs of a fourth-order Butterworth have Q = 1 / (2 cos(π/8)) and 1 / (2 cos(3π/8))."""
    return np.vstack([butter2_sos(corner_hz, sample_rate, "highpass", q=1.0 / (2.0 * math.cos(angle)))
                      for angle in (math.pi / 8.0, 3.0 * math.pi / 8.0)])


def butter1_lowpass_sos(corner_hz: float, sample_rate: float) -> np.ndarray:
    """First-order Butterworth low-pass as one section (b2 = a2 = 0)."""
    k = _prewarped(corner_hz, sample_rate)
    return np.array([[k / (1.0 + k), k / (1.0 + k), 0.0, 1.0, (k - 1.0) / (k + 1.0), 0.0]])


def butter1_bandpass_sos(low_hz: float, high_hz: float, sample_rate: float) -> np.ndarray:
    """The band-pass made from a first-order Butterworth low-pass: one second-order section.

    Analog prototype H(s) = bw·s / (s² + bw·s + w0²) with pre-warped edges, then s = c·(z−1)/(z+1).
    """
    c = 2.0 * sample_rate
    w1, w2 = c * _prewarped(low_hz, sample_rate), c * _prewarped(high_hz, sample_rate)
    w0_squared, bw = w1 * w2, w2 - w1
    a0 = c * c + bw * c + w0_squared
    return np.array([[bw * c / a0, 0.0, -bw * c / a0,
                      1.0, 2.0 * (w0_squared - c * c) / a0, (c * c - bw * c + w0_squared) / a0]])


def first_order_sos(b_s: tuple[float, float], a_s: tuple[float, float], sample_rate: float) -> np.ndarray:
    """The bilinear transform of H(s) = (b_s[0]·s + b_s[1]) / (a_s[0]·s + a_s[1]) as one section."""
    c = 2.0 * sample_rate
    a0 = a_s[0] * c + a_s[1]
    return np.array([[(b_s[0] * c + b_s[1]) / a0, (b_s[1] - b_s[0] * c) / a0, 0.0,
                      1.0, (a_s[1] - a_s[0] * c) / a0, 0.0]])


def _state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(A, B, C, D) of a cascade of sections, each in transposed direct form II, in series.

    A section [b0 b1 b2 1 a1 a2] has y = b0·x + z1, z1' = (b1 − a1·b0)·x − a1·z1 + z2,
    z2' = (b2 − a2·b0)·x − a2·z1; a first-order one (b2 = a2 = 0) keeps z1 only.
    """
    A, B, C, D = np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1.0
    for b0, b1, b2, a0, a1, a2 in np.atleast_2d(np.asarray(sos, dtype=np.float64)):
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
        if b2 == 0.0 and a2 == 0.0:
            a_s, b_s, c_s = np.array([[-a1]]), np.array([b1 - a1 * b0]), np.array([1.0])
        else:
            a_s = np.array([[-a1, 1.0], [-a2, 0.0]])
            b_s, c_s = np.array([b1 - a1 * b0, b2 - a2 * b0]), np.array([1.0, 0.0])
        # Series: this section's input is the cascade so far, y = C·s + D·x.
        n, m = A.shape[0], a_s.shape[0]
        joined = np.zeros((n + m, n + m))
        joined[:n, :n], joined[n:, n:], joined[n:, :n] = A, a_s, np.outer(b_s, C)
        A, B = joined, np.concatenate((B, b_s * D))
        C, D = np.concatenate((b0 * C, c_s)), b0 * D
    return A, B, C, D


def _powers(matrix: np.ndarray, count: int) -> np.ndarray:
    """matrix⁰ … matrix^(count−1), shaped (count, p, p)."""
    out = np.empty((count,) + matrix.shape)
    out[0] = np.eye(matrix.shape[0])
    for i in range(1, count):
        out[i] = out[i - 1] @ matrix
    return out


class _StateLevel:
    """Solves s[k+1] = M·s[k] + u[k] for groups of FAN steps at once (row vectors: s @ Mᵀ)."""

    FAN = 8

    def __init__(self, m: np.ndarray) -> None:
        p, fan = m.shape[0], self.FAN
        powers = _powers(m, fan + 1)  # M⁰ … M^FAN
        # Row i of a group's states, from its own inputs: Σ_{j<i} u[j] @ (M^(i−1−j))ᵀ; the last
        # block column is the input to the next level: Σ_j u[j] @ (M^(FAN−1−j))ᵀ.
        inputs = np.zeros((fan * p, (fan + 1) * p))
        for i in range(fan + 1):
            for j in range(i):
                inputs[j * p:(j + 1) * p, i * p:(i + 1) * p] = powers[i - 1 - j].T
        self.inputs = inputs[:, :fan * p].copy()  # (FAN·p, FAN·p)
        self.onward = inputs[:, fan * p:].copy()  # (FAN·p, p)
        # Row i of a group's states, from the state at the group's start: s0 @ (M^i)ᵀ.
        self.carry = np.concatenate([powers[i].T for i in range(fan)], axis=1)  # (p, FAN·p)
        self.step = powers[fan]  # M^FAN: the next level's M
        self.next: _StateLevel | None = None

    def states(self, u: np.ndarray, s0: np.ndarray) -> np.ndarray:
        """u (channels, K, p), s0 (channels, p) → s[0 … K−1] (channels, K, p)."""
        channels, count, p = u.shape
        if count == 1:
            return s0[:, None, :]
        fan = self.FAN
        groups = -(-count // fan)
        if groups * fan != count:
            u = np.concatenate((u, np.zeros((channels, groups * fan - count, p))), axis=1)
        grouped = u.reshape(channels * groups, fan * p)  # one 2-D product for every channel
        if self.next is None:
            self.next = _StateLevel(self.step)
        starts = self.next.states((grouped @ self.onward).reshape(channels, groups, p), s0)
        out = grouped @ self.inputs
        out += starts.reshape(channels * groups, p) @ self.carry
        return out.reshape(channels, groups * fan, p)[:, :count]


class SectionFilter:
    """A cascade of second-order sections along the last axis of (channels, frames), state carried.

    Calls of any length give the same samples as one long call (up to float rounding).
    """

    CHUNK = 16

    def __init__(self, sos: np.ndarray, channels: int) -> None:
        a, b, c, d = _state_space(sos)
        size, p = self.CHUNK, b.shape[0]
        self.channels, self.order = channels, p
        powers = _powers(a, size + 1)  # A⁰ … A^CHUNK
        response = np.concatenate(([d], [c @ powers[i] @ b for i in range(size - 1)]))  # impulse response
        toeplitz = np.zeros((size, size))
        for lag in range(size):
            toeplitz[np.arange(lag, size), np.arange(size - lag)] = response[lag]
        self._toeplitz = toeplitz.T.copy()  # chunk (row) @ it: the chunk's outputs from a zero state
        # chunk @ `_onward` (CHUNK, p): what the chunk adds to the state after it, Σ_j x[j]·A^(CHUNK−1−j)·B.
        self._onward = np.stack([powers[size - 1 - j] @ b for j in range(size)])
        self._outputs = np.stack([c @ powers[i] for i in range(size)], axis=1)  # state → chunk outputs (p, CHUNK)
        self._powers = powers
        self._levels = _StateLevel(powers[size])
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((self.channels, self.order))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        channels, frames = x.shape
        size, p = self.CHUNK, self.order
        if frames == 0:
            return np.zeros(x.shape)
        count = -(-frames // size)
        rest = frames - (count - 1) * size  # samples in the last chunk (1 … CHUNK)
        if count * size != frames:
            x = np.concatenate((x, np.zeros((channels, count * size - frames))), axis=1)
        chunks = x.reshape(channels * count, size)  # one 2-D product for every channel
        starts = self._levels.states((chunks @ self._onward).reshape(channels, count, p), self._state)
        out = chunks @ self._toeplitz
        out += starts.reshape(channels * count, p) @ self._outputs
        # The state after the last real sample: from the last chunk's start, `rest` samples on.
        last = x[:, -size:][:, :rest]
        self._state = starts[:, -1] @ self._powers[rest].T + last @ self._onward[size - rest:]
        return out.reshape(channels, count * size)[:, :frames]
