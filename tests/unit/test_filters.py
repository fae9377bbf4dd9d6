"""The numpy filter designs and the block filter against scipy.signal, the independent reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from streamer import filters

FS = 44100


@pytest.mark.parametrize("kind", ["lowpass", "highpass"])
@pytest.mark.parametrize("corner", [20.0, 30.0, 1000.0, 9000.0, 20000.0])
def test_second_order_butterworth_matches_scipy(kind, corner):
    np.testing.assert_allclose(filters.butter2_sos(corner, FS, kind),
                               signal.butter(2, corner, kind, fs=FS, output="sos"), rtol=0, atol=1e-12)


@pytest.mark.parametrize("corner", [40.0, 70.0, 200.0])
def test_fourth_order_highpass_matches_scipy_in_response(corner):
    # Sections may be ordered and scaled differently; the cascade's response must be the same.
    frequencies = np.geomspace(10.0, 20000.0, 200)
    ours = signal.sosfreqz(filters.butter4_highpass_sos(corner, FS), worN=frequencies, fs=FS)[1]
    theirs = signal.sosfreqz(signal.butter(4, corner, "highpass", fs=FS, output="sos"), worN=frequencies, fs=FS)[1]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("corner", [100.0, 6000.0, 17640.0])
def test_first_order_lowpass_matches_scipy(corner):
    b, a = signal.butter(1, corner, fs=FS)
    np.testing.assert_allclose(filters.butter1_lowpass_sos(corner, FS)[0], [b[0], b[1], 0.0, a[0], a[1], 0.0],
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("band,fs", [((100.0, 2500.0), FS / 4), ((100.0, 2500.0), 12000.0), ((50.0, 9000.0), 48000.0)])
def test_first_order_bandpass_matches_scipy(band, fs):
    np.testing.assert_allclose(filters.butter1_bandpass_sos(band[0], band[1], fs),
                               signal.butter(1, band, "bandpass", fs=fs, output="sos"), rtol=0, atol=1e-12)


def test_first_order_bilinear_matches_scipy():
    b_s, a_s = (0.0007, 0.8), (0.00002, 1.0)
    b, a = signal.bilinear(b_s, a_s, fs=FS)
    np.testing.assert_allclose(filters.first_order_sos(b_s, a_s, FS)[0],
                               [b[0] / a[0], b[1] / a[0], 0.0, 1.0, a[1] / a[0], 0.0], rtol=0, atol=1e-12)


def _cascade() -> np.ndarray:
    """Rumble high-pass, a first-order shelf and a low-pass: the tone stage's shape (order 5)."""
    return np.vstack([filters.butter2_sos(30.0, FS, "highpass"),
                      filters.first_order_sos((0.001, 0.9), (0.0005, 1.0), FS),
                      filters.butter2_sos(9000.0, FS, "lowpass")])


@pytest.mark.parametrize("sos", [_cascade(), filters.butter2_sos(9000.0, FS, "lowpass"),
                                 filters.butter1_lowpass_sos(6000.0, FS)])
def test_section_filter_matches_sosfilt_in_any_block_split(sos):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 40000))
    reference = signal.sosfilt(sos, x, axis=-1)
    run = filters.SectionFilter(sos, channels=2)
    np.testing.assert_allclose(run(x), reference, rtol=0, atol=1e-9)
    run.reset()
    parts, start = [], 0
    while start < x.shape[1]:  # runs of one-sample blocks, chunk-sized ones and long ones
        size = int(rng.choice([1, 1, 15, 16, 17, int(rng.integers(1, 20000))]))
        parts.append(run(x[:, start:start + size]))
        start += size
    np.testing.assert_allclose(np.concatenate(parts, axis=1), reference, rtol=0, atol=1e-9)


def test_section_filter_channels_are_independent_and_empty_blocks_pass():
    run = filters.SectionFilter(_cascade(), channels=3)
    assert run(np.zeros((3, 0))).shape == (3, 0)
    x = np.zeros((3, 1000))
    x[1, 0] = 1.0
    out = run(x)
    assert np.all(out[0] == 0.0) and np.all(out[2] == 0.0)
    np.testing.assert_allclose(out[1], signal.sosfilt(_cascade(), x[1]), rtol=0, atol=1e-12)
