"""Stand-ins at the daemon's boundaries, for unit tests only (the integration tests run the real
sinks, composer and systemd notify socket): sinks that keep what they are given, composers that
fail, stall or hang on cue, a notifier that records its messages, and for the Daemon's factories a
renderer without FluidSynth, effects that change nothing and a clock that paces in virtual time."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from streamer.clock import SampleClock
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


# ----------------------------------------------------------------------------- the daemon's factories


class FakeRenderer:
    """Renders each bar as a quiet tone of the bar's exact length (no FluidSynth); raises on the
    bar indices in `fail_on` of tracks other than the bed's. Counts what it was asked."""

    def __init__(self, sample_rate: int = 44100, fail_on=()) -> None:
        self.sample_rate = sample_rate
        self.fail_on = set(fail_on)
        self.bars: list[Bar] = []
        self.closed = False
        self._phase = 0  # frames rendered: the tone runs on across bars, as a synth's would

    def render_bar(self, bar: Bar) -> np.ndarray:
        if bar.bar_index in self.fail_on and bar.track_id != "fallback":
            raise RuntimeError(f"cannot render bar {bar.bar_index}")
        self.bars.append(bar)
        frames = round(bar.seconds * self.sample_rate)
        t = (self._phase + np.arange(frames)) / self.sample_rate
        self._phase += frames
        tone = (0.1 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        return np.stack([tone, tone], axis=1)  # (frames, 2)

    def render_tail(self, seconds: float) -> np.ndarray:
        return np.zeros((round(seconds * self.sample_rate), 2), dtype=np.float32)

    def reset(self) -> None:
        self._phase = 0

    def close(self) -> None:
        self.closed = True


class PassThroughEffects:
    """An effects chain that changes nothing (and counts the frames it passed)."""

    nonfinite_samples = 0

    def __init__(self) -> None:
        self.frames = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        self.frames += len(block)
        return block


class VirtualClock(SampleClock):
    """A paced SampleClock in virtual time: waiting for a block moves the time on instead of
    sleeping, so a paced run takes no longer than an unpaced one and reads the same on /status."""

    def __init__(self, sample_rate: int, speed: float) -> None:
        self.now = 0.0
        super().__init__(sample_rate, speed, monotonic=lambda: self.now)

    def wait_due(self, frame: int, stop: threading.Event) -> bool:
        if self.started_at is None:
            self.start()
        if self.paced:
            self.now = max(self.now, self.due_time(frame))
        return not stop.is_set()


def fake_pipeline(renderers: list[FakeRenderer] | None = None, fail_on=()) -> dict:
    """Daemon keyword arguments for a pipeline without FluidSynth or effects DSP; every renderer
    made is appended to `renderers`."""
    made = renderers if renderers is not None else []

    def renderer_factory(settings, seed, stems):
        made.append(FakeRenderer(settings.sample_rate, fail_on))
        return made[-1]
    return {"renderer_factory": renderer_factory,
            "effects_factory": lambda settings, sample_rate, seed: PassThroughEffects()}
