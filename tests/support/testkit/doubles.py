"""Stand-ins at the daemon's boundaries, for unit tests only (the integration tests run the real
sinks, composer and systemd notify socket): sinks that keep what they are given, composers that
fail, stall or hang on cue, and a notifier that records its messages."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from streamer.composer import RuleBasedComposer
from streamer.ringbuffer import AudioBlock
from streamer.sinks import SinkSnapshot
from streamer.types import Bar

PING_SECONDS = 0.1  # the notifier double's watchdog interval (systemd: half of WatchdogSec)


class RecordingSink:
    """Keeps every block (a test double for the sink Protocol)."""

    kind = "test"

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.blocks: list[AudioBlock] = []

    def start(self) -> None:
        pass

    def submit(self, block: AudioBlock, timeout: float = 0.0) -> bool:
        self.blocks.append(block)
        return True

    def stop(self, timeout: float) -> None:
        pass

    @property
    def frames(self) -> int:
        return sum(b.frames for b in self.blocks)

    def snapshot(self) -> SinkSnapshot:
        return SinkSnapshot(self.name, self.kind, "running", True, True, frames_written=self.frames)

    def audio(self) -> np.ndarray:
        return np.concatenate([b.pcm for b in self.blocks])


class SwitchableSink(RecordingSink):
    """A sink whose health the test switches."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.healthy = True

    def snapshot(self) -> SinkSnapshot:
        snapshot = super().snapshot()
        snapshot.healthy = snapshot.connected = self.healthy
        return snapshot


class FlakyComposer:
    """Rule-based bars, but raises (or returns a broken bar) on the bars listed."""

    def __init__(self, raise_on=(), bad_on=(), ident: str = "flaky-1", seed: int = 0) -> None:
        self.inner = RuleBasedComposer(seed)
        self.raise_on, self.bad_on = set(raise_on), set(bad_on)
        self.calls = 0
        self._id = ident

    @property
    def id(self) -> str:
        return self._id

    def next_bar(self) -> Bar:
        self.calls += 1
        if self.calls in self.raise_on:
            raise RuntimeError("model blew up")
        bar = self.inner.next_bar()
        if self.calls in self.bad_on:
            return dataclasses.replace(bar, tempo_bpm=float("nan"))
        return bar


class StallingComposer(FlakyComposer):
    """Rule-based bars; while `stall` is set, a call blocks until `release` is set."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stall = threading.Event()
        self.release = threading.Event()

    def next_bar(self) -> Bar:
        if self.stall.is_set():
            self.release.wait(60)
        return super().next_bar()


class HangingComposer(FlakyComposer):
    """Hangs (until released) in the call after `hang_after` bars."""

    def __init__(self, hang_after: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hang_after = hang_after
        self.release = threading.Event()

    def next_bar(self) -> Bar:
        if self.calls == self.hang_after:
            self.calls += 1
            self.release.wait(60)
        return super().next_bar()


class RecordingNotifier:
    """Keeps every sd_notify message with the monotonic time it was sent."""

    watchdog_seconds = PING_SECONDS

    def __init__(self) -> None:
        self.messages: list[tuple[float, str]] = []

    def notify(self, state: str) -> None:
        self.messages.append((time.monotonic(), state))

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if m == "WATCHDOG=1" and t >= since]
