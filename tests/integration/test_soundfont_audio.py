"""chiplofi.sf2 through real FluidSynth: it loads cleanly, and the rendered audio is what it claims.

Rendering follows the notes at the top of soundfonts/build.py: no interpolation, no reverb/chorus.
"""

from __future__ import annotations

import contextlib
import ctypes
import struct
from pathlib import Path

import numpy as np
import pytest

import soundfonts
from models.midi_lib import fluidsynth
from soundfonts.build import GM_DRUM_MAP

pytestmark = pytest.mark.integration

SF2 = soundfonts.SOUNDFONT_PATH
RATE = 44100
DRUM_CHANNEL = 9
FLUID_PANIC, FLUID_ERR, FLUID_WARN, FLUID_INFO, FLUID_DBG = range(5)
INTERP_NONE = 0

_LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_lib = fluidsynth._fl
_set_log_function = _lib.fluid_set_log_function
_set_log_function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_set_log_function.restype = ctypes.c_void_p
_set_interp_method = fluidsynth.cfunc(
    "fluid_synth_set_interp_method", ctypes.c_int,
    ("synth", ctypes.c_void_p, 1), ("chan", ctypes.c_int, 1), ("interp_method", ctypes.c_int, 1))


@contextlib.contextmanager
def fluid_log():
    """Collect every FluidSynth log message (level, text) while the block runs."""
    messages: list[tuple[int, str]] = []

    def collect(level, text, _data):
        messages.append((level, text.decode("utf-8", "replace")))

    callback = _LOG_FN(collect)
    default = ctypes.cast(_lib.fluid_default_log_function, ctypes.c_void_p)
    for level in range(5):
        _set_log_function(level, ctypes.cast(callback, ctypes.c_void_p), None)
    try:
        yield messages
    finally:
        for level in range(5):
            _set_log_function(level, default, None)


def problems(messages) -> list[str]:
    """Warnings and errors, plus any remark about broken sample loops (logged at debug level)."""
    return [text for level, text in messages if level <= FLUID_WARN or "loop" in text.lower()]


class Synth:
    """One FluidSynth instance with chiplofi.sf2 loaded, set up as the renderer sets it up."""

    def __init__(self, path: Path = SF2, rate: int = RATE, interp: int = INTERP_NONE):
        self.rate = rate
        self.fs = fluidsynth.Synth(gain=0.5, samplerate=float(rate),
                                   **{"synth.reverb.active": 0, "synth.chorus.active": 0})
        self.sfid = self.fs.sfload(str(path))
        self.interp = interp
        self.now = 0

    def select(self, chan: int, preset: str) -> None:
        bank, program = soundfonts.PRESETS[preset]
        assert self.fs.program_select(chan, self.sfid, bank, program) == 0, preset
        _set_interp_method(self.fs.synth, chan, self.interp)

    def render(self, seconds: float) -> np.ndarray:
        n = int(round(seconds * self.rate))
        self.now += n
        return self.fs.get_samples(n)[::2].astype(np.float64)  # left channel

    def close(self) -> None:
        self.fs.delete()


def render_note(preset: str, key: int, seconds: float, rate: int = RATE, hold: float | None = None,
                velocity: int = 127, interp: int = INTERP_NONE) -> np.ndarray:
    synth = Synth(rate=rate, interp=interp)
    try:
        chan = DRUM_CHANNEL if preset == "drumkit" else 0
        synth.select(chan, preset)
        synth.fs.noteon(chan, key, velocity)
        if hold is None or hold >= seconds:
            return synth.render(seconds)
        head = synth.render(hold)
        synth.fs.noteoff(chan, key)
        return np.concatenate([head, synth.render(seconds - hold)])
    finally:
        synth.close()


# --- measurements ---


def frequency(x: np.ndarray, rate: int) -> float:
    """Mean frequency from rising zero crossings (sub-sample, linear) over the whole window."""
    x = x - x.mean()
    neg = np.signbit(x)
    i = np.nonzero(neg[:-1] & ~neg[1:])[0]
    t = i + x[i] / (x[i] - x[i + 1])
    return (len(t) - 1) * rate / (t[-1] - t[0])


def high_fraction(x: np.ndarray) -> float:
    """Share of the time a two-level wave spends on its upper level (threshold between levels)."""
    x = x - x.mean()
    lo, hi = np.percentile(x, [1, 99])
    return float(np.mean(x > (lo + hi) / 2))


def plateau_levels(x: np.ndarray) -> int:
    """Number of distinct flat levels: cluster the samples that sit on a step, ignore edges."""
    span = x.max() - x.min()
    d = np.abs(np.diff(x))
    flat = (d[:-1] < 0.01 * span) & (d[1:] < 0.01 * span)
    v = np.sort(x[1:-1][flat])
    cuts = np.nonzero(np.diff(v) > 0.01 * span)[0]
    sizes = np.diff(np.concatenate([[0], cuts + 1, [len(v)]]))
    return int(np.sum(sizes >= 0.005 * len(v)))


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    x = x - x.mean()
    spec = np.fft.rfft(x, 2 * len(x))
    r = np.fft.irfft(spec * np.conj(spec))[:max_lag + 1]
    return r / r[0]


def rms_db(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS per frame in dB relative to the loudest frame."""
    frames = x[:len(x) // frame * frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-9
    return 20 * np.log10(rms / rms.max())


def test_measurements_tell_right_from_wrong():
    """The analysers themselves, on synthetic waves, so a pass below means something."""
    t = np.arange(RATE)
    square = np.where((t * 441.0 / RATE) % 1 < 0.25, 1.0, -1.0)
    assert abs(frequency(square, RATE) - 441.0) < 0.05
    assert abs(high_fraction(square) - 0.25) < 0.005
    staircase = np.repeat(np.tile(np.arange(32), 40), 10).astype(float)
    assert plateau_levels(staircase) == 32
    assert plateau_levels(np.sin(t / 50.0)) < 4  # a smooth wave has no plateaus to speak of
    periodic = np.tile(np.random.default_rng(0).standard_normal(93), 200)
    assert np.argmax(autocorrelation(periodic, 150)[20:]) + 20 == 93


# --- loading ---


def test_fluidsynth_loads_the_soundfont_and_plays_every_preset_without_complaint():
    with fluid_log() as messages:
        synth = Synth()
        try:
            assert synth.sfid >= 0
            for chan, preset in enumerate(p for p in soundfonts.PRESETS if p != "drumkit"):
                synth.select(chan, preset)
                for key in (21, 45, 69, 93, 108):
                    synth.fs.noteon(chan, key, 100)
            synth.select(DRUM_CHANNEL, "drumkit")
            for key in range(27, 88):
                synth.fs.noteon(DRUM_CHANNEL, key, 100)
            audio = synth.render(0.5)
        finally:
            synth.close()
    assert problems(messages) == []
    assert np.abs(audio).max() > 0


def _corrupt(data: bytes, how: str) -> bytes:
    out = bytearray(data)
    shdr = out.find(b"shdr") + 8
    if how == "sample_end_past_data":
        struct.pack_into("<I", out, shdr + 24, 10_000_000)
    elif how == "loop_end_past_data":
        struct.pack_into("<I", out, shdr + 32, 10_000_000)
    elif how == "truncated":
        del out[-100:]
    elif how == "bad_sample_reference":
        igen = out.find(b"igen") + 8
        first_sample_id = next(i for i in range(igen, len(out), 4)
                               if struct.unpack_from("<H", out, i)[0] == 53)
        struct.pack_into("<Hh", out, first_sample_id, 53, 999)
    return bytes(out)


@pytest.mark.parametrize("how", ["sample_end_past_data", "loop_end_past_data", "truncated",
                                 "bad_sample_reference"])
def test_a_broken_copy_is_noticed(tmp_path, how):
    """The clean-load test above would fail on a broken file: its log watch sees these."""
    broken = tmp_path / f"{how}.sf2"
    broken.write_bytes(_corrupt(SF2.read_bytes(), how))
    with fluid_log() as messages:
        synth = fluidsynth.Synth()
        try:
            sfid = synth.sfload(str(broken))
        finally:
            synth.delete()
    assert problems(messages), f"no FluidSynth complaint about a {how} file (sfload gave {sfid})"


# --- pitch, duty, levels ---


@pytest.mark.parametrize("preset", ["pulse12", "pulse25", "pulse50", "triangle", "keys"])
def test_a4_sounds_at_440_hz(preset):
    audio = render_note(preset, 69, 2.0)
    window = audio[int(0.5 * RATE):]  # sustained part, past attack and filter settling
    assert np.abs(window).max() > 500
    assert frequency(window, RATE) == pytest.approx(440.0, abs=1.0)


def test_short_noise_is_tuned_to_440_hz_at_a4():
    audio = render_note("noise_short", 69, 1.5)[int(0.3 * RATE):]
    r = autocorrelation(audio, 2000)
    period = 50 + int(np.argmax(r[50:150]))  # whole samples: 100 at 440 Hz
    # refine over ten periods (1002.27 samples at 440 Hz), parabolic interpolation around the peak
    k = 10 * period - 10 + int(np.argmax(r[10 * period - 10:10 * period + 11]))
    lag = k + 0.5 * (r[k - 1] - r[k + 1]) / (r[k - 1] - 2 * r[k] + r[k + 1])
    assert 10 * RATE / lag == pytest.approx(440.0, abs=1.0)


@pytest.mark.parametrize(("preset", "duty"), [("pulse12", 0.125), ("pulse25", 0.25), ("pulse50", 0.5)])
def test_pulse_duty_cycle(preset, duty):
    audio = render_note(preset, 45, 1.0)[int(0.25 * RATE):]  # A2: about 400 samples a cycle
    assert high_fraction(audio) == pytest.approx(duty, rel=0.02)


def test_triangle_has_16_levels():
    audio = render_note("triangle", 45, 1.0)[int(0.25 * RATE):]
    assert plateau_levels(audio) == 16


# --- noise ---


def test_long_noise_has_no_period_within_half_a_second():
    rate = 40920  # the noise samples' own rate: one LFSR step per output sample at key 69
    audio = render_note("noise_long", 69, 1.6, rate=rate)[int(0.1 * rate):]
    r = autocorrelation(audio, int(0.5 * rate))
    assert np.abs(r[20:]).max() < 0.05


def test_short_noise_repeats_every_93_steps():
    rate = 40920
    audio = render_note("noise_short", 69, 1.2, rate=rate)[int(0.2 * rate):]
    r = autocorrelation(audio, 200)
    assert int(np.argmax(r[20:150])) + 20 == 93
    assert r[93] > 0.9
    assert np.abs(r[20:90]).max() < 0.6


# --- drums ---

KIT_PIECES = {**soundfonts.DRUM_KEYS, "cymbal": 49, "shaker": 54}


@pytest.mark.parametrize(("piece", "key"), sorted(KIT_PIECES.items()))
def test_drum_hit_decays_and_ends(piece, key):
    frame = RATE // 100  # 10 ms
    audio = render_note("drumkit", key, 2.0)  # note held: the hit must end on its own
    db = rms_db(audio, frame)
    peak = int(np.argmax(db))
    assert np.abs(audio).max() > 2000, piece
    sounding = np.nonzero(db > -60)[0]
    end = int(sounding[-1]) + 1
    assert end < len(db) - 5, f"{piece} still sounds after 2 s"
    last_50ms = audio[max(end - 5, peak + 1) * frame:end * frame]
    level = 20 * np.log10(np.sqrt(np.mean(last_50ms ** 2)) / np.sqrt(np.mean(
        audio[peak * frame:(peak + 1) * frame] ** 2)))
    assert level < -20, f"{piece}: last 50 ms only {level:.1f} dB under the peak (cut off?)"
    assert db[-5:].max() < -60


def test_every_general_midi_drum_key_sounds():
    synth = Synth()
    silent = []
    try:
        synth.select(DRUM_CHANNEL, "drumkit")
        for key in range(35, 82):
            synth.fs.noteon(DRUM_CHANNEL, key, 100)
            audio = synth.render(0.15)
            synth.fs.noteoff(DRUM_CHANNEL, key)
            synth.fs.cc(DRUM_CHANNEL, 120, 0)  # all sound off before the next key
            synth.render(0.01)
            if np.sqrt(np.mean(audio ** 2)) < 300:  # about -40 dBFS
                silent.append(key)
    finally:
        synth.close()
    assert silent == []
    assert set(range(35, 82)) <= set(GM_DRUM_MAP)


def _hat_choke(first: int, then: int = 42) -> float:
    """dB of `first` 250..400 ms after `then` was struck at 100 ms, relative to `first` alone."""
    def play(with_second: bool) -> np.ndarray:
        synth = Synth()
        try:
            synth.select(DRUM_CHANNEL, "drumkit")
            synth.fs.noteon(DRUM_CHANNEL, first, 100)
            head = synth.render(0.1)
            if with_second:
                synth.fs.noteon(DRUM_CHANNEL, then, 1)  # barely audible itself
            return np.concatenate([head, synth.render(0.5)])
        finally:
            synth.close()
    # FluidSynth fades a choked voice out with a fixed 0.9 s release (144 dB), not at once
    tail = slice(int(0.35 * RATE), int(0.5 * RATE))
    alone, choked = play(False)[tail], play(True)[tail]
    return 20 * np.log10(np.sqrt(np.mean(choked ** 2)) / np.sqrt(np.mean(alone ** 2)))


def test_closed_hat_chokes_the_open_hat_but_not_a_cymbal():
    assert _hat_choke(46) < -20
    assert _hat_choke(49) > -3
