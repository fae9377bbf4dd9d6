"""chiplofi's own 8-bit SoundFont: where it is and what it holds.

`soundfonts/build.py` synthesizes `chiplofi.sf2` from NES-style waveforms; this module is the
contract between that file and the renderer (preset numbers, drum keys), importing nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

SOUNDFONT_PATH = Path(__file__).with_name("chiplofi.sf2")

# Preset name → (bank, program). Bank 128 is the percussion bank.
PRESETS: dict[str, tuple[int, int]] = {
    "pulse12": (0, 0),  # pulse 12.5 % duty (thin lead)
    "pulse25": (0, 1),  # pulse 25 % duty
    "pulse50": (0, 2),  # pulse 50 % duty (square)
    "triangle": (0, 3),  # 4-bit stepped triangle (bass)
    "keys": (0, 4),  # soft "lo-fi keys": pulse with slow attack and release
    "noise_long": (0, 5),  # looped LFSR noise, long mode (aperiodic hiss)
    "noise_short": (0, 6),  # looped LFSR noise, short mode (metallic, periodic)
    "drumkit": (128, 0),  # noise + triangle drum kit
}

# General MIDI drum keys of the kit's main sounds; the kit maps every GM key 35..81 to one of them.
DRUM_KEYS: dict[str, int] = {
    "kick": 36,
    "snare": 38,
    "closed_hat": 42,
    "open_hat": 46,
    "tom_low": 45,
    "tom_mid": 47,
    "tom_high": 50,
}
