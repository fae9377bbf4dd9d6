"""Write 16-bit stereo WAV files safely: into a hidden temporary file beside the target
(`.NAME.XXXX.part`), renamed at the end, so a failed or interrupted render never leaves a
truncated file under the requested name.

A failed write (a full disk) keeps every whole frame already on disk: `close()` still finishes
the file with what it holds; `abort()` is for callers that want nothing rather than a part. A
`.part` file left by a process that was killed is finished by `recover_part`.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from types import TracebackType

import numpy as np

from streamer.errors import OutputFileError
from streamer.files import create_temporary_beside

HEADER_BYTES = 44  # RIFF + fmt (16-byte PCM) + data chunk headers
PART_SUFFIX = ".part"


def to_pcm16(block: np.ndarray) -> bytes:
    """(frames, 2) float in [-1, 1] → interleaved little-endian int16 bytes (clipped, rounded)."""
    return np.clip(np.round(block * 32767.0), -32768, 32767).astype("<i2").tobytes()


def wav_header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file holding `data_bytes` of samples."""
    block_align = 2 * channels
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align,
                                    block_align, 16)
            + b"data" + struct.pack("<I", min(data_bytes, 0xFFFFFFFF)))


class WavWriter:
    """`with WavWriter(path, rate) as wav: wav.write(block)`; the file appears only on success."""

    def __init__(self, path: str | Path, sample_rate: int, channels: int = 2) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        try:
            self._fd, temp_name = create_temporary_beside(self.path, PART_SUFFIX)
        except OSError as exc:
            raise OutputFileError(f"{self.path}: cannot write here ({exc.strerror or exc})") from exc
        self._temp_path = Path(temp_name)
        self._closed = False
        try:
            self._write_all(wav_header(sample_rate, channels, 0))  # sizes filled in by close()
        except OSError as exc:
            self.abort()
            raise OutputFileError(f"{self.path}: cannot write here ({exc.strerror or exc})") from exc

    @property
    def frame_bytes(self) -> int:
        return 2 * self.channels

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def write(self, block: np.ndarray) -> None:
        """Append a (frames, channels) block. On a failed write the frames that reached the disk
        whole are kept (a partial frame is cut off) and OutputFileError is raised; `close()` then
        finishes the file with them."""
        data = to_pcm16(block)
        try:
            self._write_all(data)
        except OSError as exc:
            self._cut_to_whole_frames()
            raise OutputFileError(f"{self.path}: write failed ({exc.strerror or exc})") from exc
        self.frames_written += len(block)

    def _cut_to_whole_frames(self) -> None:
        try:
            size = os.fstat(self._fd).st_size
            frames = max(0, size - HEADER_BYTES) // self.frame_bytes
            os.ftruncate(self._fd, HEADER_BYTES + frames * self.frame_bytes)
            os.lseek(self._fd, 0, os.SEEK_END)
            self.frames_written = frames
        except OSError:
            pass

    def close(self) -> None:
        """Finish the header and move the file into place (overwrites only `path` itself)."""
        if self._closed:
            return
        try:
            # Rewriting the header's bytes needs no new disk blocks: this works on a full disk.
            os.pwrite(self._fd, wav_header(self.sample_rate, self.channels, self.frames_written * self.frame_bytes), 0)
            os.fsync(self._fd)
            self._closed = True
            os.close(self._fd)
            os.replace(self._temp_path, self.path)
        except OSError as exc:
            # The part stays on disk (the file sink finishes it with `recover_part` when it can write
            # again), but its descriptor goes: a writer given up on must not hold one for ever.
            if not self._closed:
                self._closed = True
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            raise OutputFileError(f"{self.path}: cannot finish writing ({exc.strerror or exc}); what was "
                                  f"written is in {self._temp_path}") from exc

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._temp_path.unlink(missing_ok=True)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def recover_part(part: Path, target: Path) -> float:
    """Finish a `.part` file left by a process that was killed while writing it: its header gets
    the sizes of the whole frames it holds, and it is renamed to `target`. Returns its seconds
    (OSError if it cannot be done; a file without a WAV header is left alone: ValueError)."""
    with open(part, "r+b") as handle:
        head = handle.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{part}: not a WAV file this program began")
        channels, sample_rate = struct.unpack("<HI", head[22:28])
        if not channels or not sample_rate:
            raise ValueError(f"{part}: not a WAV file this program began")
        frame_bytes = 2 * channels
        size = os.fstat(handle.fileno()).st_size
        frames = (size - HEADER_BYTES) // frame_bytes
        handle.truncate(HEADER_BYTES + frames * frame_bytes)
        handle.seek(0)
        handle.write(wav_header(sample_rate, channels, frames * frame_bytes))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, target)
    return frames / sample_rate
