"""Write 16-bit stereo WAV files safely: into a temporary file beside the target, renamed at the end,
so a failed or interrupted render never leaves a truncated file under the requested name."""

from __future__ import annotations

import os
import wave
from pathlib import Path
from types import TracebackType

import numpy as np

from streamer.errors import OutputFileError
from streamer.files import create_temporary_beside


def to_pcm16(block: np.ndarray) -> bytes:
    """(frames, 2) float in [-1, 1] → interleaved little-endian int16 bytes (clipped, rounded)."""
    return np.clip(np.round(block * 32767.0), -32768, 32767).astype("<i2").tobytes()


class WavWriter:
    """`with WavWriter(path, rate) as wav: wav.write(block)`; the file appears only on success."""

    def __init__(self, path: str | Path, sample_rate: int, channels: int = 2) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        try:
            handle, temp_name = create_temporary_beside(self.path)
        except OSError as exc:
            raise OutputFileError(f"{self.path}: cannot write here ({exc.strerror or exc})") from exc
        self._temp_path = Path(temp_name)
        self._file = os.fdopen(handle, "wb")
        self._wave = wave.open(self._file, "wb")
        self._wave.setnchannels(channels)
        self._wave.setsampwidth(2)
        self._wave.setframerate(sample_rate)

    def write(self, block: np.ndarray) -> None:
        try:
            self._wave.writeframes(to_pcm16(block))
        except OSError as exc:
            self.abort()
            raise OutputFileError(f"{self.path}: write failed ({exc.strerror or exc})") from exc
        self.frames_written += len(block)

    def close(self) -> None:
        """Finish the header and move the file into place."""
        try:
            self._wave.close()
            self._file.close()
            os.replace(self._temp_path, self.path)
        except OSError as exc:
            self.abort()
            raise OutputFileError(f"{self.path}: cannot finish writing ({exc.strerror or exc})") from exc

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._file.close()
        except OSError:
            pass
        self._temp_path.unlink(missing_ok=True)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
