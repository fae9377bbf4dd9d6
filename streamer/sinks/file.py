"""The file sink: the stream's audio as 16-bit stereo WAV files, written from the sink's own thread.

A WAV file cannot hold more than 4 GiB, so the recording is cut into parts of at most
`segment_seconds`: `NAME.wav`, `NAME-001.wav`, `NAME-002.wav`, ... Each part appears under its
name when it is complete (see streamer.wavfile), and never over an earlier file: a restart of
the daemon continues with the next free name, and finishes first the parts a killed daemon left
(`.NAME.XXXX.part`).

A write error (a full disk) stops the current part, which keeps what was written, and the sink
retries every `RETRY_SECONDS` (5 s) with a new part; meanwhile its audio is dropped (counted) and
/status says why. Nothing else waits for it.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from streamer.errors import OutputFileError
from streamer.logs import RateLimitedLog
from streamer.ringbuffer import AudioBlock
from streamer.sinks import QueuedSink, SinkSnapshot, SinkState
from streamer.wavfile import PART_SUFFIX, WavWriter, recover_part

log = logging.getLogger(__name__)

MAX_SEGMENT_SECONDS = 6 * 3600.0  # 16-bit stereo 48 kHz: 6 h ≈ 4.1 GB, under WAV's 4 GiB limit
RETRY_SECONDS = 5.0  # after a write error, wait this long before trying a new part


class FileSink(QueuedSink):
    kind = "file"

    def __init__(self, path: str | Path, sample_rate: int, queue_seconds: float = 3.0,
                 segment_seconds: float = 3600.0, name: str | None = None,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        super().__init__(name or f"file:{path}", sample_rate, queue_seconds)
        self.path = Path(path)
        self.segment_frames = int(min(segment_seconds, MAX_SEGMENT_SECONDS) * sample_rate)
        self._writer: WavWriter | None = None
        self._segment = 0
        self._retry_at = 0.0
        self.retry_seconds = retry_seconds
        self.files: list[Path] = []
        self.write_errors = 0
        self.frames_lost = 0  # audio that came while no part could be written
        self._log = RateLimitedLog(log, interval=60.0)

    def _segment_path(self) -> Path:
        if self._segment == 0:
            return self.path
        return self.path.with_name(f"{self.path.stem}-{self._segment:03d}{self.path.suffix}")

    def _next_free_segment(self) -> Path:
        while self._segment_path().exists():
            self._segment += 1
        return self._segment_path()

    def _open(self) -> None:
        """At start: a disk that is full or a directory that cannot be made is a failure like
        any later one (retried), not the end of the sink."""
        self._reopen()

    def _new_part(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recover_parts()
        self._writer = WavWriter(self._next_free_segment(), self.sample_rate)

    def _recover_parts(self) -> None:
        """Finish what a killed daemon was writing, under the next free part name."""
        own = re.compile(rf"\.{re.escape(self.path.stem)}(-\d{{3,}})?{re.escape(self.path.suffix)}\.[\w.]+"
                         rf"{re.escape(PART_SUFFIX)}")
        parts = [p for p in self.path.parent.iterdir() if own.fullmatch(p.name)]
        for part in sorted(parts, key=lambda p: p.stat().st_mtime):
            target = self._next_free_segment()
            try:
                seconds = recover_part(part, target)
            except (OSError, ValueError) as exc:
                log.warning("cannot finish %s, left by an earlier run: %s", part, exc)
                continue
            self.files.append(target)
            log.info("finished %s (%.1f s), left unfinished by an earlier run", target, seconds)

    def _write(self, block: AudioBlock) -> None:
        if self._writer is None and not self._reopen():
            self.frames_lost += block.frames
            return
        assert self._writer is not None
        try:
            self._writer.write(block.pcm)
        except OutputFileError as exc:
            self._fail(exc)
            self.frames_lost += block.frames
            return
        if self._writer.frames_written >= self.segment_frames:
            try:
                self._finish()
            except OutputFileError as exc:
                self._fail(exc)
                return
            self._segment += 1
            self._reopen()

    def _reopen(self) -> bool:
        """A new part, unless a failure was too recent; False while it cannot be written."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._new_part()
        except (OutputFileError, OSError) as exc:
            self._fail(exc)
            return False
        if self.state == SinkState.RESTARTING:
            log.info("file output writing again: %s", self._writer.path if self._writer else self.path)
        self.state = SinkState.RUNNING
        return True

    def _fail(self, exc: Exception) -> None:
        """Keep what the part holds, and try again in a while; the sink goes on draining its queue."""
        self.write_errors += 1
        self.state = SinkState.RESTARTING
        self.last_error = str(exc)
        self._retry_at = time.monotonic() + self.retry_seconds
        self._log.log(logging.ERROR, "file output: %s; its audio is dropped, trying again every %g s",
                      exc, self.retry_seconds)
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if writer.frames_written == 0:
            writer.abort()  # nothing in it
            return
        try:
            writer.close()
            self.files.append(writer.path)
            log.info("recording %s kept with the %.1f s written before the error", writer.path,
                     writer.frames_written / self.sample_rate)
        except OutputFileError as close_error:
            log.error("file output: %s", close_error)

    def _finish(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            self.files.append(writer.path)
            log.info("recording %s finished (%.1f s)", writer.path, writer.frames_written / self.sample_rate)

    def _close(self) -> None:
        try:
            self._finish()
        except OutputFileError as exc:
            self.last_error = str(exc)
            log.error("file output: %s", exc)

    def snapshot(self) -> SinkSnapshot:
        snap = super().snapshot()
        snap.frames_dropped += self.frames_lost  # counted as written by the queue's loop: they were not
        snap.frames_written -= self.frames_lost
        snap.bytes_written -= self.frames_lost * 4  # 16-bit stereo
        snap.detail = {"file": str(self._writer.path if self._writer else self.path), "write_errors": self.write_errors,
                       "frames_lost": self.frames_lost}
        return snap
