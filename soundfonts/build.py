"""Build chiplofi's own 8-bit SoundFont (`chiplofi.sf2`) from waveforms synthesized with numpy.

Usage: ``python -m soundfonts.build [-o PATH]`` (default: ``soundfonts/chiplofi.sf2``).

Notes for the renderer (FluidSynth):

* Set the interpolation to ``FLUID_INTERP_NONE`` (0) on every channel with
  ``fluid_synth_set_interp_method(synth, chan, 0)``; FluidSynth's default 4th-order interpolation
  rounds the corners of the stepped pulse/triangle/noise waveforms (ringing at each edge).
* Turn reverb and chorus off (``synth.reverb.active`` / ``synth.chorus.active`` = 0): the radio's
  own lo-fi effects chain does the colouring.
* FluidSynth always runs its voice low-pass at 0.45 x the output rate (it cannot be switched off),
  so render at 44.1 kHz or more to keep the edges sharp. Every instrument except "keys" sets
  initialFilterFc to 13500 cents and overrides the default velocity->filter-cutoff modulator with
  amount 0, so velocity changes loudness only, never brightness.
* Levels: at synth.gain 0.5 and velocity 127 one voice peaks around -13 dBFS (pulse12, drums),
  -14 to -17 dBFS (pulse25, pulse50, noise), -16 dBFS (triangle) and -19 dBFS (keys), which leaves
  room for four voices plus drums without clipping.
  A polyphony of 64 is plenty (at most a handful of voices sound at once).

Layout: bank 0 programs 0..6 are pulse12, pulse25, pulse50, triangle, keys, noise_long,
noise_short (see `soundfonts.PRESETS`); bank 128 program 0 is the drum kit, which maps every
General MIDI drum key 27..87 (so at least the GM 1 range 35..81) to one of kick, snare, closed hat,
open hat, tom, cymbal (open-hat noise without the hi-hat exclusive class) and shaker (closed-hat
noise without it), transposed per key.

Pitched samples are single waveform cycles repeated and looped over whole cycles; their sample
rate is chosen so that the root key (69) plays exactly 440 Hz with pitchCorrection 0:
96-sample cycles at 42240 Hz (pulses, triangle) and 93-step short-mode noise at 40920 Hz.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.errors import SoundFontError
from soundfonts import DRUM_KEYS, PRESETS, SOUNDFONT_PATH

__all__ = ["build_soundfont", "soundfont_bytes", "main", "GM_DRUM_MAP", "LOOP_GUARD"]

# --- waveform constants ---

ROOT_KEY = 69  # A4
ROOT_HZ = 440.0
CYCLE = 96  # samples per waveform cycle: divisible by 8 (duties) and by 32 (triangle steps)
PITCHED_RATE = int(ROOT_HZ * CYCLE)  # 42240 Hz
LOOP_CYCLES = 4  # cycles per loop
SHORT_PERIOD = 93  # short-mode LFSR period (from the all-ones-but-one seed used below)
NOISE_RATE = int(ROOT_HZ * SHORT_PERIOD)  # 40920 Hz: short-mode noise at key 69 has a 440 Hz period
LONG_PERIOD = 32767
DRUM_RATE = 44100
DRUM_ROOT_KEY = 60  # unused for pitch (the kit's scaleTuning is 0), kept a valid MIDI key
LOOP_GUARD = 32  # samples of waveform kept before the loop start and after the loop end
ZERO_PAD = 46  # zero samples the SF2 spec requires after each sample

PULSE_P2P = 28000  # peak-to-peak of the pulse waves (fits 12.5 % duty DC-free in 16 bits)
TRIANGLE_STEP = 1400  # one of the 15 steps between the 16 triangle levels (x2, DC-free)
NOISE_AMP = 12000

# --- SF2 generator and modulator numbers ---

G_FILTER_FC = 8
G_PAN = 17
G_ATTACK_VOL = 34
G_HOLD_VOL = 35
G_DECAY_VOL = 36
G_SUSTAIN_VOL = 37
G_RELEASE_VOL = 38
G_INSTRUMENT = 41
G_KEY_RANGE = 43
G_VEL_RANGE = 44
G_ATTENUATION = 48
G_COARSE_TUNE = 51
G_SAMPLE_ID = 53
G_SAMPLE_MODES = 54
G_SCALE_TUNING = 56
G_EXCLUSIVE_CLASS = 57

FILTER_OFF = 13500  # cents; SF2's "filter off" value
# Default modulator "note-on velocity -> initial filter cutoff" (SF2.01 8.4.2), overridden with
# amount 0. FluidSynth's own copy uses a velocity switch as amount source, so both variants are
# overridden (an instrument modulator replaces a default one with the same sources and destination).
MOD_SRC_VELOCITY_NEG = 0x0102  # velocity, linear, unipolar, negative
MOD_SRC_VELOCITY_SWITCH = 0x0C02  # velocity, switch, unipolar, positive
VEL_TO_FILTER_OFF = (
    (MOD_SRC_VELOCITY_NEG, G_FILTER_FC, 0, 0x0000, 0),
    (MOD_SRC_VELOCITY_NEG, G_FILTER_FC, 0, MOD_SRC_VELOCITY_SWITCH, 0),
)


def timecents(seconds: float) -> int:
    """SF2 time in timecents (1200 * log2 s)."""
    return round(1200 * math.log2(seconds))


def hz_to_cents(hz: float) -> int:
    """SF2 absolute cents of a frequency (8.176 Hz = 0)."""
    return round(1200 * math.log2(hz / 8.176))


# --- waveforms ---


@lru_cache(maxsize=4)
def lfsr_bits(short: bool, count: int) -> np.ndarray:
    """NES noise channel: 15-bit LFSR, feedback bit0 ^ bit1 (long) or bit0 ^ bit6 (short).

    Returns `count` output bits (1 = channel high, i.e. bit 0 of the register clear).
    """
    tap = 6 if short else 1
    reg = 1
    out = np.empty(count, dtype=np.int8)
    for i in range(count):
        out[i] = 1 - (reg & 1)
        feedback = (reg ^ (reg >> tap)) & 1
        reg = (reg >> 1) | (feedback << 14)
    out.setflags(write=False)
    return out


def _periodic_extract(cycle: np.ndarray, loop_len: int) -> tuple[np.ndarray, int, int]:
    """Repeat a periodic waveform: LOOP_GUARD samples, a loop of `loop_len`, LOOP_GUARD samples.

    Returns the samples, loop start and loop end (relative to the sample's first point).
    """
    total = LOOP_GUARD + loop_len + LOOP_GUARD
    idx = (np.arange(total) - LOOP_GUARD) % len(cycle)
    return cycle[idx], LOOP_GUARD, LOOP_GUARD + loop_len


def pulse_cycle(duty_eighths: int) -> np.ndarray:
    """One DC-free pulse cycle of CYCLE samples, high for duty_eighths/8 of it."""
    high = CYCLE * duty_eighths // 8
    duty = high / CYCLE
    cycle = np.full(CYCLE, -duty * PULSE_P2P)
    cycle[:high] = (1 - duty) * PULSE_P2P
    return np.round(cycle).astype(np.int16)


def triangle_cycle() -> np.ndarray:
    """NES triangle: 32-step sequence 15..0, 0..15 (16 levels), DC-free, CYCLE samples."""
    steps = np.concatenate([np.arange(15, -1, -1), np.arange(0, 16)])
    levels = (2 * steps - 15) * TRIANGLE_STEP
    return np.repeat(levels, CYCLE // 32).astype(np.int16)


def noise_cycle(short: bool) -> np.ndarray:
    """One full LFSR period as a DC-free two-level wave (one LFSR step per sample)."""
    period = SHORT_PERIOD if short else LONG_PERIOD
    bits = lfsr_bits(short, period).astype(np.float64)
    wave = (2 * bits - 1) * NOISE_AMP
    return np.round(wave - wave.mean()).astype(np.int16)


# --- drums ---

def _long_noise(n: int, step_rate: float) -> np.ndarray:
    """Long-mode LFSR noise (+-1) clocked at `step_rate` steps per second, sampled at DRUM_RATE."""
    steps = np.floor(np.arange(n) * (step_rate / DRUM_RATE)).astype(np.int64) % LONG_PERIOD
    bits = lfsr_bits(False, LONG_PERIOD)[steps].astype(np.float64)
    return 2 * bits - 1


def _stepped_triangle(freq: np.ndarray) -> np.ndarray:
    """4-bit NES triangle (+-1, 16 levels) following a per-sample frequency curve."""
    phase = np.cumsum(freq) / DRUM_RATE
    step = np.floor(np.mod(phase, 1.0) * 32).astype(np.int64)
    # Start at the sequence point nearest zero (step 8: level 7) so the hit starts without a jump.
    seq = np.concatenate([np.arange(15, -1, -1), np.arange(0, 16)])
    level = seq[(step + 8) % 32]
    return (2 * level - 15) / 15.0


def _env(n: int, tau: float) -> np.ndarray:
    t = np.arange(n) / DRUM_RATE
    return np.exp(-t / tau)


def _fade_tail(x: np.ndarray, fraction: float = 0.15) -> np.ndarray:
    """Raised-cosine fade over the last `fraction` of the hit, ending at exact zero."""
    n = len(x)
    m = max(int(n * fraction), 8)
    fade = 0.5 * (1 + np.cos(np.linspace(0, math.pi, m)))
    y = x.copy()
    y[-m:] *= fade
    return y


def _sweep(n: int, f_start: float, f_end: float, tau: float) -> np.ndarray:
    t = np.arange(n) / DRUM_RATE
    return f_end + (f_start - f_end) * np.exp(-t / tau)


def _to_int16(x: np.ndarray, peak: float) -> np.ndarray:
    x = x / max(np.max(np.abs(x)), 1e-9) * peak * 32767
    return np.round(x).astype(np.int16)


def drum_kick() -> np.ndarray:
    n = int(0.45 * DRUM_RATE)
    body = _stepped_triangle(_sweep(n, 180.0, 48.0, 0.035)) * _env(n, 0.075)
    click = _long_noise(n, 447443.0 / 2) * _env(n, 0.004) * 0.35
    return _to_int16(_fade_tail(body + click), 0.85)


def drum_snare() -> np.ndarray:
    n = int(0.40 * DRUM_RATE)
    noise = _long_noise(n, 13983.0) * _env(n, 0.065)
    body = _stepped_triangle(_sweep(n, 240.0, 160.0, 0.03)) * _env(n, 0.035) * 0.7
    return _to_int16(_fade_tail(noise + body), 0.75)


def drum_closed_hat() -> np.ndarray:
    n = int(0.12 * DRUM_RATE)
    noise = _long_noise(n, DRUM_RATE) * _env(n, 0.017)
    return _to_int16(_fade_tail(noise, 0.3), 0.5)


def drum_open_hat() -> np.ndarray:
    n = int(0.80 * DRUM_RATE)
    noise = _long_noise(n, DRUM_RATE) * _env(n, 0.13)
    return _to_int16(_fade_tail(noise, 0.3), 0.5)


def drum_tom() -> np.ndarray:
    n = int(0.50 * DRUM_RATE)
    body = _stepped_triangle(_sweep(n, 200.0, 110.0, 0.12)) * _env(n, 0.09)
    return _to_int16(_fade_tail(body), 0.8)


# Where each kit piece sits in the stereo image, in SF2 pan units (-500 left .. 500 right), as
# a kit is heard from the front: kick centred (the low end stays mono), snare near the centre,
# hats to one side, toms and cymbals to the other. The kit then has width of its own, without
# any effect on its attack.
KIT_PAN: dict[str, int] = {"kick": 0, "snare": -50, "closed_hat": 150, "open_hat": 150, "tom": -100,
                           "cymbal": -175, "shaker": 100}

# General MIDI drum key -> (kit piece, transpose in semitones). 35..81 is GM 1; 27..34 and 82..87
# are the GM 2 extras, mapped too so files written for GS/XG/GM 2 kits do not drop notes.
GM_DRUM_MAP: dict[int, tuple[str, int]] = {
    27: ("shaker", 5),  # high Q
    28: ("snare", 4),  # slap
    29: ("shaker", -5),  # scratch push
    30: ("shaker", -7),  # scratch pull
    31: ("snare", 9),  # sticks
    32: ("shaker", 7),  # square click
    33: ("shaker", 3),  # metronome click
    34: ("tom", 19),  # metronome bell
    35: ("kick", -2),  # acoustic bass drum
    36: ("kick", 0),  # bass drum 1
    37: ("snare", 7),  # side stick
    38: ("snare", 0),  # acoustic snare
    39: ("snare", 4),  # hand clap
    40: ("snare", 2),  # electric snare
    41: ("tom", -7),  # low floor tom
    42: ("closed_hat", 0),  # closed hi-hat
    43: ("tom", -5),  # high floor tom
    44: ("closed_hat", -3),  # pedal hi-hat
    45: ("tom", -3),  # low tom
    46: ("open_hat", 0),  # open hi-hat
    47: ("tom", 0),  # low-mid tom
    48: ("tom", 2),  # hi-mid tom
    49: ("cymbal", -4),  # crash cymbal 1
    50: ("tom", 5),  # high tom
    51: ("cymbal", 2),  # ride cymbal 1
    52: ("cymbal", -6),  # chinese cymbal
    53: ("cymbal", 5),  # ride bell
    54: ("shaker", 3),  # tambourine
    55: ("cymbal", 0),  # splash cymbal
    56: ("tom", 17),  # cowbell
    57: ("cymbal", -3),  # crash cymbal 2
    58: ("shaker", -4),  # vibraslap
    59: ("cymbal", 1),  # ride cymbal 2
    60: ("tom", 12),  # hi bongo
    61: ("tom", 9),  # low bongo
    62: ("tom", 10),  # mute hi conga
    63: ("tom", 8),  # open hi conga
    64: ("tom", 6),  # low conga
    65: ("tom", 11),  # high timbale
    66: ("tom", 7),  # low timbale
    67: ("tom", 21),  # high agogo
    68: ("tom", 19),  # low agogo
    69: ("shaker", 1),  # cabasa
    70: ("shaker", 6),  # maracas
    71: ("tom", 26),  # short whistle
    72: ("tom", 24),  # long whistle
    73: ("shaker", -2),  # short guiro
    74: ("cymbal", 7),  # long guiro
    75: ("tom", 24),  # claves
    76: ("tom", 22),  # hi wood block
    77: ("tom", 20),  # low wood block
    78: ("tom", 14),  # mute cuica
    79: ("tom", 15),  # open cuica
    80: ("shaker", 9),  # mute triangle
    81: ("cymbal", 9),  # open triangle
    82: ("shaker", 4),  # shaker
    83: ("shaker", 8),  # jingle bell
    84: ("cymbal", 10),  # belltree
    85: ("snare", 10),  # castanets
    86: ("kick", 3),  # mute surdo
    87: ("kick", 5),  # open surdo
}

# --- the SoundFont's contents ---


@dataclass
class Sample:
    name: str
    data: np.ndarray  # int16
    rate: int
    root: int
    loop: tuple[int, int]  # relative to the sample's first point
    looped: bool


@dataclass
class Zone:
    gens: list[tuple[int, int]]  # (generator, amount); ranges are (lo | hi << 8)
    mods: list[tuple[int, int, int, int, int]] = field(default_factory=list)


@dataclass
class Instrument:
    name: str
    zones: list[Zone]


@dataclass
class Preset:
    name: str
    bank: int
    program: int
    zones: list[Zone]


def _range(lo: int, hi: int) -> int:
    return lo | (hi << 8)


def _looped_sample(name: str, cycle: np.ndarray, loop_len: int, rate: int) -> Sample:
    data, ls, le = _periodic_extract(cycle, loop_len)
    return Sample(name, data.astype(np.int16), rate, ROOT_KEY, (ls, le), True)


def _oneshot_sample(name: str, data: np.ndarray) -> Sample:
    # Loop points are unused (sampleModes 0) but kept valid and inside the sample.
    return Sample(name, data, DRUM_RATE, DRUM_ROOT_KEY, (8, len(data) - 8), False)


def _envelope(attack: float, hold: float, decay: float, sustain_cb: int, release: float) -> list:
    return [
        (G_ATTACK_VOL, timecents(attack)),
        (G_HOLD_VOL, timecents(hold)),
        (G_DECAY_VOL, timecents(decay)),
        (G_SUSTAIN_VOL, sustain_cb),
        (G_RELEASE_VOL, timecents(release)),
    ]


def _contents() -> tuple[list[Sample], list[Instrument], list[Preset]]:
    samples = [
        _looped_sample("pulse12", pulse_cycle(1), CYCLE * LOOP_CYCLES, PITCHED_RATE),
        _looped_sample("pulse25", pulse_cycle(2), CYCLE * LOOP_CYCLES, PITCHED_RATE),
        _looped_sample("pulse50", pulse_cycle(4), CYCLE * LOOP_CYCLES, PITCHED_RATE),
        _looped_sample("triangle", triangle_cycle(), CYCLE * LOOP_CYCLES, PITCHED_RATE),
        _looped_sample("noise_long", noise_cycle(False), LONG_PERIOD, NOISE_RATE),
        _looped_sample("noise_short", noise_cycle(True), SHORT_PERIOD * 8, NOISE_RATE),
        _oneshot_sample("kick", drum_kick()),
        _oneshot_sample("snare", drum_snare()),
        _oneshot_sample("closed_hat", drum_closed_hat()),
        _oneshot_sample("open_hat", drum_open_hat()),
        _oneshot_sample("tom", drum_tom()),
    ]
    sid = {s.name: i for i, s in enumerate(samples)}
    full = (G_KEY_RANGE, _range(0, 127))

    def pitched(sample: str, env: list, extra: list | None = None, raw: bool = True) -> Zone:
        gens = [full, *(extra or [])]
        if raw:
            gens.append((G_FILTER_FC, FILTER_OFF))
        gens += env + [(G_SAMPLE_MODES, 1), (G_SAMPLE_ID, sid[sample])]
        return Zone(gens, list(VEL_TO_FILTER_OFF) if raw else [])

    lead_env = _envelope(0.003, 0.001, 2.0, 30, 0.12)
    noise_env = _envelope(0.002, 0.001, 0.001, 0, 0.15)
    instruments = [
        Instrument("pulse12", [pitched("pulse12", lead_env)]),
        Instrument("pulse25", [pitched("pulse25", lead_env)]),
        Instrument("pulse50", [pitched("pulse50", lead_env)]),
        Instrument("triangle", [pitched("triangle", _envelope(0.002, 0.001, 0.001, 0, 0.06))]),
        Instrument("keys", [pitched(
            "pulse50", _envelope(0.04, 0.02, 1.6, 100, 0.9),
            extra=[(G_FILTER_FC, hz_to_cents(4500.0)), (G_ATTENUATION, 20)], raw=False)]),
        Instrument("noise_long", [pitched("noise_long", noise_env)]),
        Instrument("noise_short", [pitched("noise_short", noise_env)]),
    ]

    # Drums: one-shot, no key tracking (scaleTuning 0), a decaying envelope on top of the decaying
    # sample, and a long release so that a short MIDI note-off does not choke the hit.
    def drum(sample: str, decay: float, exclusive: int = 0) -> Zone:
        gens = [full, (G_FILTER_FC, FILTER_OFF)]
        gens += _envelope(0.001, 0.001, decay, 1440, 4.0)
        gens += [(G_SCALE_TUNING, 0), (G_SAMPLE_MODES, 0)]
        if exclusive:
            gens.append((G_EXCLUSIVE_CLASS, exclusive))
        gens.append((G_SAMPLE_ID, sid[sample]))
        return Zone(gens, list(VEL_TO_FILTER_OFF))

    drum_instruments = {
        "kick": drum("kick", 3.0),
        "snare": drum("snare", 2.5),
        "closed_hat": drum("closed_hat", 1.0, exclusive=1),
        "open_hat": drum("open_hat", 5.0, exclusive=1),
        "tom": drum("tom", 3.0),
        "cymbal": drum("open_hat", 6.0),
        "shaker": drum("closed_hat", 1.0),
    }
    for piece, key in DRUM_KEYS.items():  # the contract in soundfonts/__init__.py
        if GM_DRUM_MAP[key][0] not in (piece, piece.split("_")[0]):
            raise SoundFontError(
                f"drum key {key} should play {piece}, maps to {GM_DRUM_MAP[key][0]}")
    for name, zone in drum_instruments.items():
        instruments.append(Instrument(name, [zone]))
    iid = {inst.name: i for i, inst in enumerate(instruments)}

    presets = []
    for name, (bank, program) in PRESETS.items():
        if bank == 128:
            zones = []
            for key, (piece, transpose) in sorted(GM_DRUM_MAP.items()):
                gens = [(G_KEY_RANGE, _range(key, key))]
                if transpose:
                    gens.append((G_COARSE_TUNE, transpose))
                if KIT_PAN[piece]:
                    gens.append((G_PAN, KIT_PAN[piece]))
                gens.append((G_INSTRUMENT, iid[piece]))
                zones.append(Zone(gens))
        else:
            zones = [Zone([(G_INSTRUMENT, iid[name])])]
        presets.append(Preset(name, bank, program, zones))
    return samples, instruments, presets


# --- RIFF writing ---


def _chunk(tag: bytes, data: bytes) -> bytes:
    pad = b"\0" if len(data) % 2 else b""
    return tag + struct.pack("<I", len(data)) + data + pad


def _list(kind: bytes, chunks: list[bytes]) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _zstr(text: str) -> bytes:
    """Zero-terminated string padded to an even length (INFO sub-chunks)."""
    raw = text.encode("ascii") + b"\0"
    return raw + (b"\0" if len(raw) % 2 else b"")


def _name20(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > 19:
        raise ValueError(f"name too long for SF2: {text!r}")
    return raw.ljust(20, b"\0")


def _gen(oper: int, amount: int) -> bytes:
    if oper in (G_KEY_RANGE, G_VEL_RANGE):
        return struct.pack("<HH", oper, amount)
    return struct.pack("<Hh", oper, amount)


def _hydra(zoned: list) -> tuple[list[bytes], bytes, bytes, bytes]:
    """Bags, modulators and generators of presets or instruments.

    Returns (first bag of each item + terminal index, pbag/ibag, pmod/imod, pgen/igen bytes).
    """
    bag_starts, bags, mods, gens = [], [], [], []
    n_gen = n_mod = 0
    for item in zoned:
        bag_starts.append(len(bags))
        for zone in item.zones:
            bags.append(struct.pack("<HH", n_gen, n_mod))
            for oper, amount in zone.gens:
                gens.append(_gen(oper, amount))
            for src, dest, amount, amt_src, trans in zone.mods:
                mods.append(struct.pack("<HHhHH", src, dest, amount, amt_src, trans))
            n_gen += len(zone.gens)
            n_mod += len(zone.mods)
    bag_starts.append(len(bags))
    bags.append(struct.pack("<HH", n_gen, n_mod))  # terminal bag
    mods.append(b"\0" * 10)  # terminal modulator
    gens.append(b"\0" * 4)  # terminal generator
    return bag_starts, b"".join(bags), b"".join(mods), b"".join(gens)


def soundfont_bytes() -> bytes:
    """The whole SoundFont file, deterministic byte for byte."""
    samples, instruments, presets = _contents()

    smpl = bytearray()
    shdr = []
    for s in samples:
        start = len(smpl) // 2
        smpl += s.data.astype("<i2").tobytes()
        smpl += b"\0" * (2 * ZERO_PAD)
        end = start + len(s.data)
        loop_start, loop_end = start + s.loop[0], start + s.loop[1]
        # pitchCorrection 0, sampleLink 0, sampleType 1 (mono)
        shdr.append(_name20(s.name) + struct.pack(
            "<IIIIIBbHH", start, end, loop_start, loop_end, s.rate, s.root, 0, 0, 1))
    shdr.append(_name20("EOS") + b"\0" * 26)

    p_starts, pbag, pmod, pgen = _hydra(presets)
    phdr = [
        _name20(p.name) + struct.pack("<HHHIII", p.program, p.bank, p_starts[i], 0, 0, 0)
        for i, p in enumerate(presets)
    ]
    phdr.append(_name20("EOP") + struct.pack("<HHHIII", 0, 0, p_starts[-1], 0, 0, 0))

    i_starts, ibag, imod, igen = _hydra(instruments)
    inst = [_name20(x.name) + struct.pack("<H", i_starts[i]) for i, x in enumerate(instruments)]
    inst.append(_name20("EOI") + struct.pack("<H", i_starts[-1]))

    info = _list(b"INFO", [
        _chunk(b"ifil", struct.pack("<HH", 2, 1)),
        _chunk(b"isng", _zstr("EMU8000")),
        _chunk(b"INAM", _zstr("chiplofi 8-bit")),
        _chunk(b"ICMT", _zstr("NES-style pulse, triangle, LFSR noise and drums for chiplofi. "
                              "Render with interpolation off (FLUID_INTERP_NONE).")),
        _chunk(b"ISFT", _zstr("chiplofi soundfonts/build.py")),
    ])
    sdta = _list(b"sdta", [_chunk(b"smpl", bytes(smpl))])
    pdta = _list(b"pdta", [
        _chunk(b"phdr", b"".join(phdr)),
        _chunk(b"pbag", pbag),
        _chunk(b"pmod", pmod),
        _chunk(b"pgen", pgen),
        _chunk(b"inst", b"".join(inst)),
        _chunk(b"ibag", ibag),
        _chunk(b"imod", imod),
        _chunk(b"igen", igen),
        _chunk(b"shdr", b"".join(shdr)),
    ])
    return _chunk(b"RIFF", b"sfbk" + info + sdta + pdta)


def build_soundfont(path: Path = SOUNDFONT_PATH) -> Path:
    """Write the SoundFont to `path` atomically (temporary file + rename); returns the path."""
    path = Path(path)
    data = soundfont_bytes()
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except OSError as exc:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        raise SoundFontError(f"{path}: cannot write the SoundFont ({exc.strerror or exc})") from exc
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soundfonts.build",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=SOUNDFONT_PATH,
                        help=f"where to write the SoundFont (default: {SOUNDFONT_PATH})")
    args = parser.parse_args(argv)
    try:
        path = build_soundfont(args.output)
    except SoundFontError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
