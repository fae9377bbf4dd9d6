"""The null sink: takes every block and throws it away (benchmarks, tests, a status-only run)."""

from __future__ import annotations

from streamer.ringbuffer import AudioBlock
from streamer.sinks import SinkSnapshot, SinkState


class NullSink:
    kind = "null"

    def __init__(self, name: str = "null") -> None:
        self.name = name
        self.state = SinkState.STARTING
        self.bytes_written = 0
        self.frames_written = 0

    def start(self) -> None:
        self.state = SinkState.RUNNING

    def submit(self, block: AudioBlock, timeout: float = 0.0) -> bool:
        self.bytes_written += len(block.pcm16)
        self.frames_written += block.frames
        return True

    def stop(self, timeout: float) -> None:
        self.state = SinkState.STOPPED

    def snapshot(self) -> SinkSnapshot:
        running = self.state == SinkState.RUNNING
        return SinkSnapshot(self.name, self.kind, self.state, healthy=running, connected=running,
                            bytes_written=self.bytes_written, frames_written=self.frames_written)
