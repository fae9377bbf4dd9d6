"""The track archive: every track listeners heard, as MIDI plus JSON, in `<state_dir>/tracks`.

    audio thread: TrackRecorder.bar_started() per bar as it starts playing (keeps references)
        │  a bar of another track starts → the finished track, put on a bounded queue (never waits)
        ▼
    archive thread: TrackArchive writes <id>.mid (models.midi_write) and <id>.json, each into a
        temporary file renamed into place, then deletes the oldest tracks beyond
        `archive.keep_tracks` / `archive.keep_mb` (the newest track is always kept)

A track is archived when it has finished *playing*, with what played: the composer's bars in
order (fallback bars that covered an underrun are not part of it). A track still playing when
the stream stops is archived too, marked `"ended": "stream stopped"`.

Ids are `YYYYMMDD-HHMMSS-<track id>` (UTC start time, then the composer's track id), so they
sort oldest first and never repeat across restarts; `file_for()` accepts nothing else, which is
what keeps `/tracks/<id>.mid` inside the archive directory.

An unwritable directory or a full disk never touches the stream: the track is counted in
`errors` (/status and /metrics `archive_errors`), one warning is logged when writing starts to
fail and one line when it works again.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.midi_write import voices_to_midi
from streamer.config import ArchiveSettings
from streamer.files import write_atomic
from streamer.logs import RateLimitedLog
from streamer.ringbuffer import BarEntry
from streamer.status_snapshot import ArchiveStatus
from streamer.track_titles import track_title
from streamer.types import Bar

log = logging.getLogger(__name__)

ARCHIVE_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[A-Za-z0-9_-]{1,64}")
FILE_NAME = re.compile(rf"({ARCHIVE_ID.pattern})\.(mid|json)")
STEPS_PER_BEAT = 4  # the MIDI writer counts 16th steps
MAX_TRACK_BARS = 2048  # a track this long (≈ 2 h) is archived in parts, so memory stays bounded
QUEUE_TRACKS = 16  # finished tracks waiting for the disk; beyond, a track is dropped and counted
NEXT_TRACK, STREAM_STOPPED, TOO_LONG = "next track", "stream stopped", "too long: continued in the next part"


@dataclass(frozen=True)
class PlayedTrack:
    """One track as it played: the composer's bars in order, and when it started."""

    track_id: str
    composer_id: str
    seed: int
    bars: tuple[Bar, ...]
    started_at: float  # wall clock (time.time()) when its first bar started playing
    stream_seconds: float  # the stream's own timeline at that moment
    ended: str  # NEXT_TRACK, STREAM_STOPPED or TOO_LONG

    @property
    def duration_seconds(self) -> float:
        return sum(bar.seconds for bar in self.bars)


def track_midi_bytes(track: PlayedTrack) -> bytes:
    """The track as a standard MIDI file (four named instruments, tempo, 4/4, key)."""
    notes = []
    origin = 0.0  # steps from the track's first played bar
    for bar in track.bars:
        notes += [(n.voice, n.pitch, origin + n.start * STEPS_PER_BEAT, n.duration * STEPS_PER_BEAT, n.velocity)
                  for n in bar.notes]
        origin += bar.beats * STEPS_PER_BEAT
    first = track.bars[0]
    out = io.BytesIO()
    voices_to_midi(notes, first.tempo_bpm, first.key).write(out)
    return out.getvalue()


def track_record(track: PlayedTrack, archive_id: str) -> dict[str, Any]:
    """What `<id>.json` holds (and /tracks lists)."""
    first = track.bars[0]
    started = time.gmtime(track.started_at)
    millis = int(track.started_at * 1000) % 1000
    return {
        "id": archive_id, "track_id": track.track_id, "title": track_title(track.track_id), "seed": track.seed,
        "model_id": track.composer_id, "key": first.key, "tempo_bpm": first.tempo_bpm,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", started) + f".{millis:03d}Z",
        "stream_position_seconds": round(track.stream_seconds, 3),
        "duration_seconds": round(track.duration_seconds, 3), "bars": len(track.bars),
        "first_bar": first.bar_index, "ended": track.ended,
    }


def _remove(path: str) -> None:
    """Delete a file; already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class TrackArchive:
    """Writes finished tracks on its own thread; lists and finds them for the status server."""

    def __init__(self, directory: str | Path, keep_tracks: int, keep_bytes: int,
                 queue_tracks: int = QUEUE_TRACKS) -> None:
        self.directory = Path(directory)
        self.keep_tracks = keep_tracks
        self.keep_bytes = keep_bytes
        self._queue: queue.Queue[PlayedTrack | None] = queue.Queue(maxsize=queue_tracks)
        self._thread: threading.Thread | None = None
        self._failing = False
        self._drop_log = RateLimitedLog(log, 60.0)
        # Each counter has one writing thread: `dropped` the audio thread's, the rest the archive's.
        self.written = 0
        self.deleted = 0
        self.write_errors = 0
        self.dropped = 0
        self.last_error = ""
        self.bytes_written = 0  # of the tracks written by this process (MIDI + JSON)

    @classmethod
    def start_in(cls, directory: Path, settings: ArchiveSettings) -> TrackArchive:
        """The archive `[archive]` asks for, in `directory`, started."""
        archive = cls(directory, settings.keep_tracks, int(settings.keep_mb * 1_000_000))
        archive.start()
        return archive

    @property
    def errors(self) -> int:
        """Tracks not archived: write failures plus tracks dropped from a full queue."""
        return self.write_errors + self.dropped

    # ------------------------------------------------------------------ producer side (audio thread)

    def submit(self, track: PlayedTrack) -> bool:
        """Queue a finished track for writing; never waits. False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(track)
            return True
        except queue.Full:
            self.dropped += 1
            self._drop_log.warning("track archive: %d tracks waiting for the disk; %s not archived",
                                   self._queue.qsize(), track.track_id)
            return False

    # ------------------------------------------------------------------ the archive thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="archive", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is queued (within `timeout` seconds), then end the thread."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("track archive: %d tracks not written before the stop", self._queue.qsize())

    def _run(self) -> None:
        self._tidy()
        while True:
            track = self._queue.get()
            if track is None:
                return
            self.write(track)

    def write(self, track: PlayedTrack) -> str | None:
        """Write one track now (on the calling thread); returns its id, None if it failed (counted)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            archive_id = self._new_id(track)
            midi = track_midi_bytes(track)
            record = track_record(track, archive_id)
            record["midi_bytes"] = len(midi)
            text = (json.dumps(record, indent=1) + "\n").encode()
            # The MIDI first: a track is listed once its JSON exists, and then its MIDI is there.
            write_atomic(self._path(f"{archive_id}.mid"), midi)
            write_atomic(self._path(f"{archive_id}.json"), text)
        except Exception as exc:  # a full disk, a file where the directory should be, a bug: never the stream
            self.write_errors += 1
            self.last_error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
            if not self._failing:
                self._failing = True
                log.warning("track archive: cannot write to %s (%s); tracks are not archived until it works "
                            "again (counted in archive_errors)", self.directory, self.last_error)
            return None
        self.written += 1
        self.bytes_written += len(midi) + len(text)
        if self._failing:
            self._failing = False
            log.info("track archive: writing to %s again", self.directory)
        self._prune()
        return archive_id

    def _new_id(self, track: PlayedTrack) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(track.started_at))
        name = re.sub(r"[^A-Za-z0-9_-]", "_", track.track_id)[:56] or "track"
        archive_id, n = f"{stamp}-{name}", 1
        while os.path.exists(self._path(f"{archive_id}.json")) or os.path.exists(self._path(f"{archive_id}.mid")):
            n += 1
            archive_id = f"{stamp}-{name}-{n}"
        return archive_id

    def _path(self, name: str) -> str:
        """A file of the archive, as a plain string: see `_files`."""
        return os.path.join(self.directory, name)

    def _files(self) -> dict[str, list[tuple[str, int]]]:
        """Archive files by id: [(path, bytes)], only names the archive writes.

        Plain strings, not `Path`s, on purpose (as in streamer/files.py): Python 3.11's pathlib
        interns every path part, and a `Path` per file, for up to 2 × keep_tracks files after
        every track, wore out the interpreter's interned-string table until it doubled (a 3.7 MB
        block, about 9 h into a day's soak, never given back).
        """
        found: dict[str, list[tuple[str, int]]] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = FILE_NAME.fullmatch(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    found.setdefault(match.group(1), []).append((entry.path, entry.stat().st_size))
        return found

    def _prune(self) -> None:
        """Delete the oldest tracks beyond the bounds (never the newest)."""
        try:
            files = self._files()
            ids = sorted(files)
            total = sum(size for entries in files.values() for _, size in entries)
            while len(ids) > 1 and (len(ids) > self.keep_tracks or total > self.keep_bytes):
                oldest = ids.pop(0)
                # The JSON first: a listed track always has its MIDI.
                for path, size in sorted(files[oldest], key=lambda item: not item[0].endswith(".json")):
                    _remove(path)
                    total -= size
                self.deleted += 1
        except OSError as exc:
            self._drop_log.warning("track archive: cannot delete old tracks in %s (%s)", self.directory,
                                   exc.strerror or exc)

    def _tidy(self) -> None:
        """At start: remove temporary files a crash left, and MIDI files whose JSON never came."""
        try:
            if not self.directory.is_dir():
                return
            for path in self.directory.glob(".*.tmp"):
                path.unlink(missing_ok=True)
            for entries in self._files().values():
                if not any(path.endswith(".json") for path, _ in entries):
                    for path, _ in entries:
                        _remove(path)
        except OSError as exc:
            log.debug("track archive: tidying %s failed: %s", self.directory, exc)

    # ------------------------------------------------------------------ readers (status server threads)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` tracks' records, newest first (unreadable ones are left out)."""
        try:
            ids = sorted((archive_id for archive_id, entries in self._files().items()
                          if any(path.endswith(".json") for path, _ in entries)), reverse=True)
        except OSError:
            return []
        records = []
        for archive_id in ids[:max(0, limit)]:
            try:
                with open(self._path(f"{archive_id}.json"), encoding="utf-8") as file:
                    records.append(json.load(file))
            except (OSError, ValueError):
                continue  # deleted meanwhile, or not ours
        return records

    def file_for(self, name: str) -> Path | None:
        """The archive file `name` ('<id>.mid' or '<id>.json') if it exists; None for any other name."""
        if not FILE_NAME.fullmatch(name):
            return None
        path = self.directory / name
        return path if path.is_file() and not path.is_symlink() else None

    def snapshot(self) -> ArchiveStatus:
        return ArchiveStatus(str(self.directory), self.written, self.bytes_written, self.deleted, self.errors,
                             self.dropped, self.last_error, self._queue.qsize())


class TrackRecorder:
    """Collects the bars that start playing into tracks (audio thread; no disk, no waiting)."""

    def __init__(self, archive: TrackArchive, max_bars: int = MAX_TRACK_BARS) -> None:
        self.archive = archive
        self.max_bars = max_bars
        self._bars: list[Bar] = []
        self._first: BarEntry | None = None
        self._started_at = 0.0
        self._stream_seconds = 0.0

    def bar_started(self, entry: BarEntry, fallback: bool, stream_seconds: float) -> None:
        """`entry` starts playing at `stream_seconds` on the stream's timeline."""
        if fallback:
            return  # the bed that covered an underrun is not part of the composer's track
        first = self._first
        if first is not None:
            if entry.bar.track_id != first.bar.track_id or entry.composer_id != first.composer_id:
                self.finish(NEXT_TRACK)
            elif len(self._bars) >= self.max_bars:
                self.finish(TOO_LONG)
        if self._first is None:
            self._first = entry
            self._started_at = time.time()
            self._stream_seconds = stream_seconds
        self._bars.append(entry.bar)

    def finish(self, ended: str = STREAM_STOPPED) -> None:
        """The track being collected is over: hand it to the archive."""
        first = self._first
        if first is None:
            return
        track = PlayedTrack(first.bar.track_id, first.composer_id, first.seed, tuple(self._bars),
                            self._started_at, self._stream_seconds, ended)
        self._bars, self._first = [], None
        self.archive.submit(track)
