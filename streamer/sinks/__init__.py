"""Outputs of the stream. Each sink is independent: it owns its queue and its threads, so one
failing (a dead ffmpeg, a full disk, no sound card) never stalls another or the clock.

The clock hands every block to every sink with `submit(block, timeout)`: paced, the timeout
is 0 and a full queue drops its oldest audio (counted); unpaced (`--speed 0`), sinks push back
for up to `timeout` so that nothing is dropped when the pipeline runs as fast as it can.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from streamer.ringbuffer import AudioBlock, BlockQueue

log = logging.getLogger(__name__)


class SinkState:
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    UNAVAILABLE = "unavailable"  # e.g. no sound card: waits and retries quietly
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class SinkSnapshot:
    """What /status and /metrics show about one sink."""

    name: str
    kind: str
    state: str
    healthy: bool  # working as intended right now
    connected: bool  # delivering audio to its destination
    network: bool = False  # streams to an RTMP ingest: readiness and the watchdog follow these sinks
    restarts: int = 0
    bytes_written: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    queued_seconds: float = 0.0
    last_error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Sink(Protocol):
    name: str
    kind: str

    def start(self) -> None: ...

    def submit(self, block: AudioBlock, timeout: float = 0.0) -> bool:
        """Queue a block; never blocks longer than `timeout`. False if audio had to be dropped."""
        ...

    def stop(self, timeout: float) -> None: ...

    def snapshot(self) -> SinkSnapshot: ...


class QueuedSink:
    """A sink with a bounded queue drained by its own thread into `_write` (subclasses)."""

    kind = "queued"

    def __init__(self, name: str, sample_rate: int, queue_seconds: float) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.queue = BlockQueue(max(1, int(queue_seconds * sample_rate)))
        self.state = SinkState.STARTING
        self.restarts = 0
        self.bytes_written = 0
        self.frames_written = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_guarded, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, block: AudioBlock, timeout: float = 0.0) -> bool:
        if self._stop.is_set():
            return False
        return self.queue.put(block, timeout if self._accepting() else 0.0) == 0

    def _accepting(self) -> bool:
        """Worth waiting for (unpaced back-pressure) only while the sink works."""
        return self.state == SinkState.RUNNING

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug in a sink must not take the stream down; say so loudly
            self.state = SinkState.FAILED
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("sink %s failed", self.name)

    def _run(self) -> None:
        self._open()
        if self.state == SinkState.STARTING:  # `_open` may have said otherwise (a file sink retrying)
            self.state = SinkState.RUNNING
        while True:
            block = self.queue.get(timeout=0.2)
            if block is None:
                if self._stop.is_set():
                    break
                continue
            self._write(block)
            self.bytes_written += len(block.pcm16)
            self.frames_written += block.frames
        self._close()

    def _open(self) -> None:
        pass

    def _write(self, block: AudioBlock) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("sink %s did not stop within %.1f s", self.name, timeout)
        if self.state != SinkState.FAILED:
            self.state = SinkState.STOPPED

    def snapshot(self) -> SinkSnapshot:
        return SinkSnapshot(
            name=self.name, kind=self.kind, state=self.state,
            healthy=self.state == SinkState.RUNNING, connected=self.state == SinkState.RUNNING,
            restarts=self.restarts, bytes_written=self.bytes_written, frames_written=self.frames_written,
            frames_dropped=self.queue.stats.frames_dropped,
            queued_seconds=self.queue.frames / self.sample_rate, last_error=self.last_error)


class BackoffDelays:
    """Doubling waits between restarts, reset after a run that lasted `healthy_after` seconds."""

    def __init__(self, initial: float, maximum: float, healthy_after: float = 60.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.healthy_after = healthy_after
        self._next = initial

    def next(self, ran_for: float) -> float:
        if ran_for >= self.healthy_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay


class Stoppable(Protocol):
    def stop(self, timeout: float) -> None: ...


def stop_together(parts: list[Stoppable], budget: float, started: float) -> None:
    """Stop every part at once, each on its own thread, all within `budget` seconds of the monotonic
    time `started`: a sink that hangs cannot hold up the others (ffmpeg finishing its files)."""
    stoppers = [threading.Thread(target=part.stop, args=(budget - 0.5,), daemon=True) for part in parts]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join(max(0.1, budget - (time.monotonic() - started)))
