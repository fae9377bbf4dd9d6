"""The speakers sink: the stream on the local sound card (sounddevice / PortAudio).

Blocking writes from the sink's own thread; the device paces them. Without a sound card the
sink warns once, reports itself `unavailable`, discards audio and quietly tries again every
`retry_seconds` — nothing else is affected.
"""

from __future__ import annotations

import logging
from typing import Any

from streamer.ringbuffer import AudioBlock
from streamer.sinks import QueuedSink, SinkSnapshot, SinkState

log = logging.getLogger(__name__)


class SpeakersSink(QueuedSink):
    kind = "speakers"

    def __init__(self, sample_rate: int, queue_seconds: float = 1.0, retry_seconds: float = 30.0,
                 name: str = "speakers", device: Any = None) -> None:
        super().__init__(name, sample_rate, queue_seconds)
        self.retry_seconds = retry_seconds
        self.device = device
        self.underflows = 0
        self._stream: Any = None
        self._warned = False

    def submit(self, block: AudioBlock, timeout: float = 0.0) -> bool:
        if self.state == SinkState.UNAVAILABLE:
            return True  # nothing to play on: not a drop
        return super().submit(block, timeout)

    def _try_open(self) -> bool:
        try:
            import sounddevice

            stream = sounddevice.OutputStream(samplerate=self.sample_rate, channels=2, dtype="float32",
                                              device=self.device)
            stream.start()
        except Exception as exc:  # PortAudioError, OSError (no libportaudio), ValueError (no device)
            self.last_error = f"no audio output device ({exc})"
            if not self._warned:
                log.warning("speakers: %s; retrying every %.0f s, the stream is unaffected",
                            self.last_error, self.retry_seconds)
                self._warned = True
            else:
                log.debug("speakers still unavailable: %s", exc)
            return False
        self._stream = stream
        self.last_error = ""
        if self._warned:
            log.info("speakers: audio device available again")
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stream is None:
                if not self._try_open():
                    self.state = SinkState.UNAVAILABLE
                    self.queue.clear()
                    self._stop.wait(self.retry_seconds)
                    continue
                self.state = SinkState.RUNNING
            block = self.queue.get(timeout=0.2)
            if block is None:
                continue
            try:
                if self._stream.write(block.pcm):
                    self.underflows += 1
            except Exception as exc:  # device unplugged, ...
                log.warning("speakers: write failed (%s); reopening", exc)
                self.last_error = str(exc)
                self._close_stream()
                self.restarts += 1
                continue
            self.bytes_written += len(block.pcm16)
            self.frames_written += block.frames
        self._close_stream()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception as exc:  # already gone
                log.debug("speakers: close failed: %s", exc)

    def snapshot(self) -> SinkSnapshot:
        snapshot = super().snapshot()
        snapshot.detail["underflows"] = self.underflows
        return snapshot
