"""The file sink: the stream's audio as 16-bit stereo WAV files, written from the sink's own thread.

A WAV file cannot hold more than 4 GiB, so the recording is cut into parts of at most
`segment_seconds`: `NAME.wav`, `NAME-001.wav`, `NAME-002.wav`, ... Each part appears under its
name when it is complete (see streamer.wavfile); a write error stops this sink only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from streamer.errors import OutputFileError
from streamer.ringbuffer import AudioBlock
from streamer.sinks import QueuedSink, SinkState
from streamer.wavfile import WavWriter

log = logging.getLogger(__name__)

MAX_SEGMENT_SECONDS = 6 * 3600.0  # 16-bit stereo 48 kHz: 6 h ≈ 4.1 GB, under WAV's 4 GiB limit


class FileSink(QueuedSink):
    kind = "file"

    def __init__(self, path: str | Path, sample_rate: int, queue_seconds: float = 3.0,
                 segment_seconds: float = 3600.0, name: str | None = None) -> None:
        super().__init__(name or f"file:{path}", sample_rate, queue_seconds)
        self.path = Path(path)
        self.segment_frames = int(min(segment_seconds, MAX_SEGMENT_SECONDS) * sample_rate)
        self._writer: WavWriter | None = None
        self._segment = 0
        self.files: list[Path] = []

    def _segment_path(self) -> Path:
        if self._segment == 0:
            return self.path
        return self.path.with_name(f"{self.path.stem}-{self._segment:03d}{self.path.suffix}")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = WavWriter(self._segment_path(), self.sample_rate)

    def _write(self, block: AudioBlock) -> None:
        assert self._writer is not None
        try:
            self._writer.write(block.pcm)
            if self._writer.frames_written >= self.segment_frames:
                self._finish()
                self._segment += 1
                self._open()
        except OutputFileError as exc:
            self.state = SinkState.FAILED
            self.last_error = str(exc)
            log.error("file output stopped: %s", exc)
            self._writer = None
            self._stop.set()
            self.queue.clear()
            raise _Stopped from exc

    def _run(self) -> None:
        try:
            super()._run()
        except _Stopped:
            pass

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.files.append(self._writer.path)
            log.info("recording %s finished (%.1f s)", self._writer.path,
                     self._writer.frames_written / self.sample_rate)
            self._writer = None

    def _close(self) -> None:
        try:
            self._finish()
        except OutputFileError as exc:
            self.last_error = str(exc)
            log.error("file output: %s", exc)


class _Stopped(Exception):
    pass
