"""Changing a running effects chain's settings without a click or a jump in level: `retune_chain`
keeps each stage whose settings are unchanged (with its state: filter memory, the loudness
follower's gain, the noise streams) and crossfades each changed one from its old settings to its new
ones (`Crossfade`). A mood of the schedule and a SIGHUP reload of [effects] both change the chain so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamer.config import EffectsSettings

CROSSFADE_SECONDS = 0.05  # a changed effect stage fades from its old settings to its new ones


# The [effects] keys each stage of `EffectsChain.from_settings` is built from. A stage whose keys a
# mood leaves alone is carried over with its state (filter memory, the loudness follower's gain, the
# noise streams), so a change of colour neither jumps in level nor clicks; a changed stage fades
# from its old to its new settings. A stage not listed here (a new kind) is always faded.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "Sanitizer": (),
    "SampleRateReducer": ("downsample_hz",),
    "BitCrusher": ("bitcrush_bits",),
    "WowFlutter": ("wow_rate_hz", "wow_depth_cents", "flutter_rate_hz", "flutter_depth_cents"),
    "ToneFilter": ("highpass_hz", "lowpass_hz", "tilt_db", "low_shelf_hz", "low_shelf_db", "low_cut_hz"),
    "BassCentre": ("mono_below_hz",),
    "LoudnessNormalizer": ("loudness_target_lufs", "loudness_window_s", "loudness_gate_lufs", "max_gain_db"),
    "VinylCrackle": ("crackle_per_second", "crackle_db", "dust_per_second", "surface_noise_db"),
    "TapeHiss": ("hiss_db",),
    "SoftLimiter": ("limiter_ceiling_dbfs", "limiter_knee_db"),
}


class Crossfade:
    """An effect stage changing settings: for its first `frames` frames the old stage's output
    fades into the new one's; after that it is the new stage. Blocks are (2, frames)."""

    def __init__(self, old: Any, new: Any, frames: int) -> None:
        self.old: Any | None = old
        self.new = new
        self.frames = max(1, frames)
        self.done_frames = 0

    @property
    def settled(self) -> Any:
        """The stage to keep once the fade is over."""
        return self.new if self.old is None else self

    def reset(self) -> None:
        self.new.reset()
        self.old = None

    def process(self, block: np.ndarray) -> np.ndarray:
        out = self.new.process(block)
        if self.old is None:
            return out
        n = min(block.shape[1], self.frames - self.done_frames)
        faded = self.old.process(block[:, :n])
        ramp = (self.done_frames + np.arange(1, n + 1)) / self.frames  # (n,): towards 1 = the new stage
        out = np.array(out, dtype=np.float64, copy=True)
        out[:, :n] = faded * (1.0 - ramp) + out[:, :n] * ramp
        self.done_frames += n
        if self.done_frames >= self.frames:
            self.old = None
        return out


def _stage_name(stage: Any) -> str:
    return type(stage.new if isinstance(stage, Crossfade) else stage).__name__


def retune_chain(chain: Any, old: EffectsSettings, new: EffectsSettings, sample_rate: int, seed: int,
                 fresh: Any = None) -> Any:
    """An `EffectsChain` for `new` that continues `chain` (running `old`) without a jump: stages
    whose settings are unchanged carry on with their state, changed ones crossfade. `fresh`, a
    chain already built from `new`, saves building one here."""
    from streamer.effects import EffectsChain

    if fresh is None:
        fresh = EffectsChain.from_settings(new, sample_rate, seed)
    previous = {_stage_name(stage): stage for stage in chain.effects}
    stages = []
    for stage in fresh.effects:
        name = type(stage).__name__
        before = previous.get(name)
        if isinstance(before, Crossfade):
            before = before.settled
        keys = STAGE_KEYS.get(name)
        if before is None:
            stages.append(stage)
        elif keys is not None and all(getattr(old, key) == getattr(new, key) for key in keys):
            stages.append(before)
        else:
            stages.append(Crossfade(before, stage, round(CROSSFADE_SECONDS * sample_rate)))
    return EffectsChain(stages)
