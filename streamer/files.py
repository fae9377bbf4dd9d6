"""Files other processes read while the daemon rewrites them (track archive, now-playing text),
and the temporary files outputs are written into before they take their name.

Paths here are built with `os.path`, not pathlib, on purpose: Python 3.11's pathlib interns every
part of every `Path`, and a name interned and freed again (the temporary file of each write)
uses up a slot of the interpreter's interned-string table until the table is rebuilt, which can
double it (a 3.7 MB block) part-way through a day of streaming. The daemon writes these files
after every bar and every track.
"""

from __future__ import annotations

import contextlib
import os
import threading


def write_atomic(path: str | os.PathLike[str], data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a part.

    `durable` also waits for the disk (fsync) before the rename, so a power cut leaves the old or
    the new file; without it a crash may leave an empty file, which is fine for what is rewritten
    every few seconds anyway and spares a slow SD card a flush."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temp, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def create_temporary_beside(path: str | os.PathLike[str], suffix: str = ".part") -> tuple[int, str]:
    """(descriptor, name) of a new, empty file in `path`'s directory, to be renamed to `path`.

    Its mode is 0666 less the umask, as `open()` gives, so that the finished file can be read by
    whoever the user's umask allows (`tempfile.mkstemp` would make every output 0600).
    OSError when the directory cannot be written."""
    directory, name = os.path.split(os.fspath(path))
    for attempt in range(100):
        temp = os.path.join(directory or ".", f".{name}.{os.getpid()}.{threading.get_ident()}.{attempt}{suffix}")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), temp
        except FileExistsError:  # left by a crashed writer with the same pid and thread id
            continue
    raise FileExistsError(f"{path}: 100 temporary files beside it already exist")
