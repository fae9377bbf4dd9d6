"""Bounded, thread-safe buffers between the pipeline's stages.

- `BarRing`: composed bars waiting to be played, bounded by their total duration (the composer
  keeps it `target_seconds` ahead of playback; the player takes from it and never waits long).
- `BlockQueue`: audio blocks waiting for one output, bounded by frames; when full, the oldest
  blocks are dropped (and counted), so a slow output never holds up the clock.

Both use one condition variable; every wait has a timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamer.types import Bar


@dataclass(frozen=True, slots=True)
class BarEntry:
    """A bar plus the id and seed of the composer (checkpoint) that made it."""

    bar: Bar
    composer_id: str
    seed: int = 0  # the composer's seed: the track archive records it


class BarRing:
    """FIFO of `BarEntry`s, bounded by seconds of music (plus a hard cap on entries)."""

    def __init__(self, target_seconds: float, max_entries: int = 4096) -> None:
        if target_seconds <= 0:
            raise ValueError("target_seconds must be positive")
        self.target_seconds = target_seconds
        self.max_entries = max_entries
        self._entries: deque[BarEntry] = deque()
        self._seconds = 0.0
        self._cond = threading.Condition()
        self.bars_in = 0
        self.bars_out = 0
        self.empty_gets = 0  # get() found nothing in time: the player had to cover (an underrun)
        self.last_taken: BarEntry | None = None  # the entry get() returned last

    @property
    def ahead_seconds(self) -> float:
        with self._cond:
            return self._seconds

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def has_room(self) -> bool:
        with self._cond:
            return self._seconds < self.target_seconds and len(self._entries) < self.max_entries

    def wait_for_room(self, timeout: float) -> bool:
        """Block until the ring is below its target (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seconds >= self.target_seconds or len(self._entries) >= self.max_entries:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_for_seconds(self, seconds: float, timeout: float) -> bool:
        """Block until at least `seconds` are buffered (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seconds < seconds and len(self._entries) < self.max_entries:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def put(self, entry: BarEntry) -> None:
        """Append without waiting (the composer checks `wait_for_room` first)."""
        with self._cond:
            self._entries.append(entry)
            self._seconds += entry.bar.seconds
            self.bars_in += 1
            self._cond.notify_all()

    def get(self, timeout: float = 0.0) -> BarEntry | None:
        """The oldest entry, waiting up to `timeout` seconds; None (counted) if there is none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._entries:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.empty_gets += 1
                    return None
                self._cond.wait(remaining)
            entry = self._entries.popleft()
            self._seconds = max(0.0, self._seconds - entry.bar.seconds) if self._entries else 0.0
            self.bars_out += 1
            self.last_taken = entry
            self._cond.notify_all()
            return entry

    def peek_all(self) -> list[BarEntry]:
        with self._cond:
            return list(self._entries)

    def find_start(self, starts: Callable[[Bar | None, Bar], bool]) -> tuple[BarEntry | None, Bar | None] | None:
        """The first queued entry that `starts(bar before it, its bar)` accepts, and the bar
        before it (the last one taken for the first entry); None if no queued entry starts.

        A swap on a musical boundary cuts the queue there (`cut_before`)."""
        with self._cond:
            before = self.last_taken.bar if self.last_taken is not None else None
            for entry in self._entries:
                if starts(before, entry.bar):
                    return entry, before
                before = entry.bar
            return None

    def last_queued(self) -> Bar | None:
        """The newest bar in the ring (or the last taken, if it is empty)."""
        with self._cond:
            entry = self._entries[-1] if self._entries else self.last_taken
            return entry.bar if entry is not None else None

    def cut_before(self, first_dropped: BarEntry | None, entry: BarEntry) -> tuple[int, float] | None:
        """Drop `first_dropped` and every entry after it (None: none), then queue `entry`.

        Returns (entries dropped, seconds of music still queued before `entry`), or None when
        `first_dropped` is no longer queued (it was taken meanwhile): nothing changes then."""
        with self._cond:
            kept = len(self._entries)
            if first_dropped is not None:
                kept = next((i for i, queued in enumerate(self._entries) if queued is first_dropped), -1)
                if kept < 0:
                    return None
            dropped = len(self._entries) - kept
            for _ in range(dropped):
                self._entries.pop()
            ahead = sum(queued.bar.seconds for queued in self._entries)
            self._entries.append(entry)
            self._seconds = ahead + entry.bar.seconds
            self.bars_in += 1
            self._cond.notify_all()
            return dropped, ahead


@dataclass(slots=True)
class AudioBlock:
    """A block of the stream: float PCM, its 16-bit bytes, and where it sits on the timeline."""

    pcm: np.ndarray  # (frames, 2) float32 in [-1, 1]
    pcm16: bytes  # the same, interleaved little-endian int16
    start_frame: int  # position of the first frame on the stream's sample timeline
    sample_rate: int
    stems: np.ndarray | None = None  # (frames, voices) float32: each voice alone, for the video's scopes

    @property
    def frames(self) -> int:
        return len(self.pcm)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass
class QueueStats:
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    drops: int = 0  # times something was dropped


class BlockQueue:
    """Bounded FIFO of `AudioBlock`s for one output; full → the oldest blocks are dropped."""

    def __init__(self, max_frames: int) -> None:
        if max_frames <= 0:
            raise ValueError("max_frames must be positive")
        self.max_frames = max_frames
        self._blocks: deque[AudioBlock] = deque()
        self._frames = 0
        self._cond = threading.Condition()
        self.stats = QueueStats()

    @property
    def frames(self) -> int:
        with self._cond:
            return self._frames

    def put(self, block: AudioBlock, timeout: float = 0.0) -> int:
        """Queue `block`; if there is no room after `timeout`, drop the oldest. Returns frames dropped."""
        deadline = time.monotonic() + timeout
        dropped = 0
        with self._cond:
            while self._frames + block.frames > self.max_frames and self._blocks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            while self._frames + block.frames > self.max_frames and self._blocks:
                old = self._blocks.popleft()
                self._frames -= old.frames
                dropped += old.frames
            self._blocks.append(block)
            self._frames += block.frames
            self.stats.frames_in += block.frames
            if dropped:
                self.stats.frames_dropped += dropped
                self.stats.drops += 1
            self._cond.notify_all()
        return dropped

    def get(self, timeout: float) -> AudioBlock | None:
        """The oldest block, waiting up to `timeout` seconds; None if there is none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._blocks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            block = self._blocks.popleft()
            self._frames -= block.frames
            self.stats.frames_out += block.frames
            self._cond.notify_all()
            return block

    def trim_to(self, max_frames: int) -> int:
        """Drop the oldest blocks until at most `max_frames` are queued (counted); returns frames dropped."""
        dropped = 0
        with self._cond:
            while self._frames > max_frames and self._blocks:
                old = self._blocks.popleft()
                self._frames -= old.frames
                dropped += old.frames
            if dropped:
                self.stats.frames_dropped += dropped
                self.stats.drops += 1
                self._cond.notify_all()
        return dropped

    def clear(self) -> int:
        """Drop everything queued (counted as dropped); returns the frames dropped."""
        with self._cond:
            dropped = self._frames
            self._blocks.clear()
            self._frames = 0
            if dropped:
                self.stats.frames_dropped += dropped
                self.stats.drops += 1
            self._cond.notify_all()
            return dropped
