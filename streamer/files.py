"""Files other processes read while the daemon rewrites them (track archive, now-playing text)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a part.

    `durable` also waits for the disk (fsync) before the rename, so a power cut leaves the old or
    the new file; without it a crash may leave an empty file, which is fine for what is rewritten
    every few seconds anyway and spares a slow SD card a flush."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temp, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            temp.unlink()
        except OSError:
            pass
        raise
