"""What the ffmpeg sink keeps on disk: file names that never overwrite, the recordings directory
kept within `sinks.record_keep_mb`, and a watch on the free space under every file target.

Why the daemon watches the disk rather than ffmpeg's messages: ffmpeg 5.1 reports a failed
write to a file (a full disk) nowhere at its `info` level, and the Matroska muxer holds up to 5 s
of media per cluster, so a file can fail without a line. Worse, once a write failed, a Matroska
file or segment takes nothing more even when space is back: the failure surfaces only when the
segment ends (up to `sinks.record_segment_minutes` later), and then the fifo's recovery reopens
the target. For a plain file (`out.mkv`) that recovery would truncate it (it opens the same name
again), so plain files get none.

So the keeper marks a file target failing when its disk is full (under `LOW_SPACE_BYTES` free),
and once space is back (`RESUME_SPACE_BYTES`) asks the sink for a new ffmpeg: a plain file goes
on under the next free name (`out-1.mkv`), a recording in a new segment. The 0-byte files that
recovery attempts leave on a full disk are deleted (they hold nothing).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from streamer.logs import RateLimitedLog

log = logging.getLogger(__name__)

RECORDING_GLOB = "chiplofi-*.mkv"
WATCH_SECONDS = 1.0  # how often the keeper looks at the disk
# Below this much free space a file target counts as failing (a second of 720p30 is ~330 kB; ffmpeg
# cannot even finish a cluster); a plain file target asks for its new part only above the second
# figure, so that one write does not fill the disk again at once.
LOW_SPACE_BYTES = 1 << 20
RESUME_SPACE_BYTES = 8 << 20


class FileTarget(Protocol):
    """What the keeper reads and sets of a target (streamer.sinks.ffmpeg.Target)."""

    url: str
    label: str
    muxer: str
    state: str
    failures: int
    last_error: str

    @property
    def network(self) -> bool: ...

    def note_error(self, text: str, now: float) -> None: ...


def first_free_name(path: Path) -> Path:
    """`path` if nothing is there, else the first of NAME-1.EXT, NAME-2.EXT, ... that is free:
    a restart of ffmpeg, or of the daemon, never overwrites what an earlier one recorded."""
    candidate, number = path, 0
    while os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use under `directory` (None: cannot tell)."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def prune_recordings(directory: Path, keep_bytes: float) -> int:
    """Delete the oldest recordings until the rest fit in `keep_bytes`, and any empty one (a
    segment ffmpeg opened on a full disk); never the newest, which is being written. Returns
    the number of files deleted."""
    try:
        files = sorted((p for p in directory.glob(RECORDING_GLOB) if p.is_file()), key=lambda p: p.stat().st_mtime)
        sizes = [p.stat().st_size for p in files]
    except OSError:
        return 0
    total = sum(sizes)
    deleted = 0
    for path, size in zip(files[:-1], sizes[:-1], strict=True):
        if total <= keep_bytes and size > 0:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot delete old recording %s: %s", path, exc)
            break
        deleted += 1
        total -= size
        if size:
            log.info("deleted old recording %s (recordings are kept within %.0f MB)", path.name, keep_bytes / 1e6)
    return deleted


class RecordingsKeeper:
    """A thread beside the ffmpeg sink: recreates the recordings directory, keeps it pruned (at
    start, then every second: so on every new segment), and watches the free space under every
    file target."""

    def __init__(self, targets: Sequence[FileTarget], recordings_dir: Path | None, keep_bytes: float,
                 request_restart: Callable[[str], None]) -> None:
        self.targets = [t for t in targets if not t.network]
        self.recordings_dir = recordings_dir
        self.keep_bytes = keep_bytes
        self.request_restart = request_restart
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = RateLimitedLog(log, interval=60.0)
        self._full: set[str] = set()  # labels of the targets now failing for want of space

    def start(self) -> None:
        self.tick()  # at start: before ffmpeg opens its first segment
        self._thread = threading.Thread(target=self._run, name="recordings", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread, after a last look (the recordings as ffmpeg left them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self.recordings_dir is not None:
            self._keep_recordings(self.recordings_dir)

    def _run(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            try:
                self.tick()
            except Exception:  # a bug here must not end the stream; it is reported
                log.exception("recordings keeper failed; trying again")

    def tick(self) -> None:
        if self.recordings_dir is not None:
            self._keep_recordings(self.recordings_dir)
        for target in self.targets:
            self._watch_space(target)

    def _keep_recordings(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)  # deleted under us: ffmpeg needs it back
        except OSError as exc:
            self._log.warning("recordings directory %s unusable: %s", directory, exc)
            return
        # Every second rather than only when a segment begins: one listing of a few hundred names
        # is cheap, and a failed empty segment is gone before the next one is attempted.
        prune_recordings(directory, self.keep_bytes)

    def _watch_space(self, target: FileTarget) -> None:
        directory = Path(target.url).parent
        free = free_bytes(directory)
        if free is None:
            return
        if free < LOW_SPACE_BYTES:
            if target.label not in self._full:
                self._full.add(target.label)
                target.failures += 1
                self._log.warning("disk full under %s (%d kB free): %s is not being written", directory,
                                  free // 1024, target.label)
            target.state = "failing"
            target.note_error(f"disk full: {free // 1024} kB free in {directory}", time.monotonic())
            return
        if target.label in self._full and free >= RESUME_SPACE_BYTES:
            self._full.discard(target.label)
            log.info("space again under %s (%d MB free): %s resumes in a new file", directory, free >> 20,
                     target.label)
            self.request_restart(f"disk space is back for {target.label}: a new file is started")
