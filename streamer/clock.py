"""The stream's clock: counts samples, and paces them against a monotonic clock.

Frame `n` of the stream is due at `epoch + n / (sample_rate × speed)`. Time is never
accumulated from sleeps (which always overshoot a little), so the clock does not drift: a late
wake-up is made good by the next block. `speed` 0 means unpaced: every block is due at once.

If the process was stopped or starved for longer than `max_lag_seconds` (SIGSTOP, a suspended
VM), the clock does not race to catch up — the outputs would get a burst of minutes of audio —
it re-anchors its epoch (counted in `resyncs`) and carries on in real time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class SampleClock:
    def __init__(self, sample_rate: int, speed: float = 1.0, *, max_lag_seconds: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if speed < 0:
            raise ValueError("speed must be ≥ 0")
        self.sample_rate = sample_rate
        self.speed = speed
        self.max_lag_seconds = max_lag_seconds
        self._monotonic = monotonic
        self._epoch: float | None = None  # monotonic time of frame `_epoch_frame`
        self._epoch_frame = 0
        self.frames = 0  # frames released so far
        self.resyncs = 0
        self.last_advance: float | None = None  # monotonic time of the last release
        self.started_at: float | None = None

    @property
    def paced(self) -> bool:
        return self.speed > 0

    @property
    def position_seconds(self) -> float:
        """Seconds of audio released (stream time)."""
        return self.frames / self.sample_rate

    def start(self) -> None:
        now = self._monotonic()
        self._epoch = now
        self._epoch_frame = self.frames
        self.started_at = now
        self.last_advance = now

    def due_time(self, frame: int) -> float:
        """Monotonic time at which `frame` is due (paced clocks only)."""
        if self._epoch is None:
            raise RuntimeError("clock not started")
        return self._epoch + (frame - self._epoch_frame) / (self.sample_rate * self.speed)

    def wait_due(self, frame: int, stop: threading.Event) -> bool:
        """Sleep until `frame` is due; False if `stop` was set meanwhile."""
        if self._epoch is None:
            self.start()
        if not self.paced:
            return not stop.is_set()
        while True:
            now = self._monotonic()
            delay = self.due_time(frame) - now
            if delay <= 0:
                if -delay > self.max_lag_seconds:
                    self._epoch, self._epoch_frame = now, frame
                    self.resyncs += 1
                    log.warning("the stream clock was %.1f s behind (the process was stopped or starved): "
                                "playing on from where it was, without a catch-up burst", -delay)
                return not stop.is_set()
            if stop.wait(delay):
                return False

    def advance(self, frames: int) -> None:
        """Record that `frames` more frames were released to the outputs."""
        self.frames += frames
        self.last_advance = self._monotonic()

    def advancing(self, within_seconds: float) -> bool:
        """Has the clock released audio in the last `within_seconds`?"""
        return self.last_advance is not None and self._monotonic() - self.last_advance <= within_seconds

    def lag_seconds(self) -> float:
        """How far behind schedule the released audio is (0 when on time or unpaced)."""
        if not self.paced or self._epoch is None:
            return 0.0
        return max(0.0, self._monotonic() - self.due_time(self.frames))
