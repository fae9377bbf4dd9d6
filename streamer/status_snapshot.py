"""What /status reports, typed: the daemon's counters, and (see `StatusSnapshot`) a snapshot of every stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    """Events counted since the start; each is bumped by the one thread that sees it happen."""

    underruns: int = 0  # audio thread: no bar in time, the fallback bed played
    fallback_bars: int = 0
    composer_errors: int = 0  # composer thread: an exception or a rejected bar
    nonfinite_samples: int = 0  # NaN/Inf samples replaced after the effects
    bars_played: int = 0
    bars_composed: int = 0
    pcm_underruns: int = 0  # audio blocks padded with silence (the renderer fell behind)
    render_errors: int = 0
    tracks_started: int = 0
    bars_dropped_on_swap: int = 0  # queued bars of an old model dropped when a new one took over
    swaps: int = 0
