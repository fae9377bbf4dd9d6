"""What the daemon reports, typed: `StatusSnapshot` (every stage at one moment; /status is its JSON,
/metrics, the stats line and systemd's STATUS= line read its fields), and `StreamStatus`, which takes
snapshots of a running daemon and answers the status server (/status, /bars, /healthz, /readyz).

The JSON keys are the API (`chiplofi status`, the status page and monitoring read them): a field
added here is a key added to /status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamer.logs import redact
from streamer.ringbuffer import BarEntry
from streamer.sinks import Sink, SinkSnapshot
from streamer.track_titles import track_title

if TYPE_CHECKING:
    from streamer.daemon import Daemon

UPCOMING_BARS = 4  # bars after the one playing, on /bars


@dataclass
class Counters:
    """Events counted since the start, bumped by the thread that sees them happen. Plain `+=` on
    ints: where two threads bump one (`bars_composed`: the composer thread and the fast-start
    loader's first bar) a count can be lost at the same instant; /status figures, not accounting."""

    underruns: int = 0  # audio thread: no bar in time, the fallback bed played
    fallback_bars: int = 0
    composer_errors: int = 0  # composer thread: an exception or a rejected bar
    nonfinite_samples: int = 0  # NaN/Inf samples replaced after the effects
    bars_played: int = 0
    bars_composed: int = 0
    pcm_underruns: int = 0  # audio blocks padded with silence (the renderer fell behind)
    render_errors: int = 0
    tracks_started: int = 0
    bars_dropped_on_swap: int = 0  # queued bars of an old model dropped when a new one took over
    swaps: int = 0


@dataclass
class StatusCounters(Counters):
    archive_errors: int = 0  # tracks the archive could not write (or dropped)


@dataclass(frozen=True)
class NowPlaying:
    track_id: str = ""
    title: str = ""
    bar: int = 0
    section: str = ""
    key: str = ""
    chord: str = ""
    tempo_bpm: float = 0.0
    composer_id: str = ""
    fallback: bool = False  # a bar of the fallback bed


@dataclass(frozen=True)
class BufferStatus:
    ahead_seconds: float  # composed and rendered music ahead of playback
    target_seconds: float
    bars: int


@dataclass(frozen=True)
class ClockStatus:
    position_seconds: float  # audio played (stream time)
    speed: float
    advancing: bool
    lag_seconds: float
    resyncs: int


@dataclass(frozen=True)
class CheckpointStatus:
    id: str
    setting: str
    loaded_at: str  # ISO 8601, UTC
    reloads: int
    reload_failures: int
    last_reload_error: str
    error: str
    reloading: bool
    swap_at: str
    swap_pending: bool
    last_swap_wait_seconds: float


@dataclass(frozen=True)
class PositionStatus:
    seed: int
    next_track: int
    starts: int
    kept: bool


@dataclass(frozen=True)
class ComposerStatus:
    busy_seconds: float  # how long the composer call running has taken (0: none running)


@dataclass(frozen=True)
class VideoStatus:
    background: str
    layout: list[str]
    thumbnail_age_seconds: float | None  # None: no thumbnail of the encoded video yet


@dataclass(frozen=True)
class ArchiveStatus:
    """streamer.archive's figures."""

    directory: str
    written: int
    bytes_written: int
    deleted: int
    errors: int  # write failures plus tracks dropped from a full queue
    dropped: int
    last_error: str
    queued: int


@dataclass(frozen=True)
class NextProgram:
    program: str
    starts: str | None  # ISO 8601 in the schedule's time zone


@dataclass(frozen=True)
class ScheduleStatus:
    """streamer.schedule's: the program playing (None: none, the config's settings play) and the next."""

    timezone: str
    program: str | None
    mood: str | None
    since: str | None
    until: str | None
    composer: dict[str, Any]  # the mood's composer settings
    effects: dict[str, Any]  # the mood's [effects] changes
    effects_applied: dict[str, Any]  # the changes the effects chain runs with now
    next: NextProgram | None
    next_reload: str | None
    stats_interval_seconds: float


@dataclass(frozen=True)
class StatusSnapshot:
    uptime_seconds: float
    state: str  # starting, running, stopping
    sample_rate: int
    now_playing: NowPlaying | None  # None: nothing has played yet
    buffer: BufferStatus
    clock: ClockStatus
    checkpoint: CheckpointStatus
    position: PositionStatus
    composer: ComposerStatus
    sinks: list[SinkSnapshot]
    archive: ArchiveStatus | None  # None: no archive
    schedule: ScheduleStatus
    video: VideoStatus | None  # None: no video output
    counters: StatusCounters = field(default_factory=StatusCounters)

    def to_json(self) -> dict[str, Any]:
        """The /status document."""
        video = {"enabled": False} if self.video is None else {"enabled": True, **dataclasses.asdict(self.video)}
        archive = {"enabled": False} if self.archive is None else {"enabled": True, **dataclasses.asdict(self.archive)}
        return {
            "uptime_seconds": self.uptime_seconds, "state": self.state, "sample_rate": self.sample_rate,
            "now_playing": dataclasses.asdict(self.now_playing or NowPlaying()),
            "buffer": dataclasses.asdict(self.buffer), "clock": dataclasses.asdict(self.clock),
            "checkpoint": dataclasses.asdict(self.checkpoint), "position": dataclasses.asdict(self.position),
            "composer": dataclasses.asdict(self.composer), "sinks": [dataclasses.asdict(s) for s in self.sinks],
            "archive": archive, "schedule": dataclasses.asdict(self.schedule), "video": video,
            "counters": dataclasses.asdict(self.counters),
        }


def duration_text(seconds: float) -> str:
    """[Nd ]HH:MM:SS of `seconds` (the stats line, `chiplofi status`)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def stats_line(snapshot: StatusSnapshot) -> str:
    """The periodic stats line (`schedule.stats_interval_seconds`)."""
    counters = snapshot.counters
    sinks = ", ".join(f"{s.name} {s.state}{'' if s.connected else ' (not connected)'}"
                      for s in snapshot.sinks) or "none"
    program = snapshot.schedule.program or "none"
    return (f"stats: up {duration_text(snapshot.uptime_seconds)}, "
            f"audio {duration_text(snapshot.clock.position_seconds)}; "
            f"tracks {counters.tracks_started}, bars {counters.bars_played}, "
            f"underruns {counters.underruns}, composer errors {counters.composer_errors}; "
            f"buffer {snapshot.buffer.ahead_seconds:.1f} s; sinks: {sinks}; program {program}")


def _bar_json(entry: BarEntry, playing: bool = False) -> dict[str, Any]:
    bar = entry.bar
    return {"track_id": bar.track_id, "title": track_title(bar.track_id), "bar": bar.bar_index,
            "beats": bar.beats, "tempo_bpm": bar.tempo_bpm, "key": bar.key, "chord": bar.chord,
            "section": bar.section, "composer_id": entry.composer_id, "playing": playing,
            "notes": [{"voice": n.voice, "pitch": n.pitch, "start": n.start, "duration": n.duration,
                       "velocity": n.velocity} for n in bar.notes]}


class StreamStatus:
    """The status of one daemon (the status server's StatusProvider), read from its parts."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def snapshot(self) -> StatusSnapshot:
        d = self.daemon
        audio, composers, record, position = d.audio, d.composers, d.composers.record, d.position.current
        playing = audio.playing
        now_playing = None
        if playing is not None:
            bar = playing.entry.bar
            now_playing = NowPlaying(bar.track_id, track_title(bar.track_id), bar.bar_index, bar.section, bar.key,
                                     bar.chord, bar.tempo_bpm, playing.entry.composer_id, playing.fallback)
        composing = composers.composing_since
        counters = StatusCounters(**dataclasses.asdict(d.counters),
                                  archive_errors=d.archive.errors if d.archive is not None else 0)
        counters.nonfinite_samples += int(getattr(audio.effects, "nonfinite_samples", 0) or 0)  # the chain's own
        return StatusSnapshot(
            uptime_seconds=round(time.monotonic() - d.started, 3),
            state="stopping" if d.stopping.is_set() else ("running" if d.ready else "starting"),
            sample_rate=d.sample_rate,
            now_playing=now_playing,
            buffer=BufferStatus(round(d.ring.ahead_seconds + audio.pending_seconds, 3), d.ring.target_seconds,
                                len(d.ring)),
            clock=ClockStatus(round(d.clock.position_seconds, 3), d.clock.speed, self.daemon.audio.clock_advancing(),
                              round(d.clock.lag_seconds(), 3), d.clock.resyncs),
            checkpoint=CheckpointStatus(
                composers.composer_id, record.setting,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.loaded_at)), record.reloads,
                record.reload_failures, record.last_reload_error, record.error, d.reloader.running,
                d.config.stream.swap_at, composers.pending is not None, record.last_swap_wait_seconds),
            position=PositionStatus(position.seed, position.next_track, position.starts, d.position.keeps),
            composer=ComposerStatus(round(time.monotonic() - composing, 3) if composing else 0.0),
            sinks=[sink.snapshot() for sink in d.sinks],
            archive=d.archive.snapshot() if d.archive is not None else None,
            schedule=d.schedule.status(),
            video=self._video(),
            counters=counters,
        )

    def status(self) -> dict[str, Any]:
        return self.snapshot().to_json()

    def recent_bars(self) -> list[dict[str, Any]]:
        audio = self.daemon.audio
        bars = [_bar_json(marker.entry) for marker in list(audio.recent)]
        playing = audio.playing
        if playing is not None:
            bars.append(_bar_json(playing.entry, playing=True))
        upcoming = [m.entry for m in list(audio.markers)[:UPCOMING_BARS]]
        upcoming += self.daemon.ring.peek_all()[:max(0, UPCOMING_BARS - len(upcoming))]
        bars += [_bar_json(entry) for entry in upcoming]
        return bars

    def _video(self) -> VideoStatus | None:
        """The picture's look, and how old the thumbnail of the encoded video is."""
        picture = self.daemon.picture
        if picture is None:
            return None
        age = None
        if picture.thumbnail is not None:
            with contextlib.suppress(OSError):
                age = round(max(0.0, time.time() - os.stat(picture.thumbnail).st_mtime), 1)
        video = self.daemon.config.video
        return VideoStatus(video.background, list(video.layout), age)

    def health(self) -> tuple[bool, str]:
        if not self.daemon.ready:
            return False, "starting"
        if self.daemon.stopping.is_set():
            return False, "stopping"
        if not self.daemon.audio.clock_advancing():
            return False, "clock not advancing"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        healthy, reason = self.health()
        if not healthy:
            return False, reason
        d = self.daemon
        if d.composers.intro:
            return False, "the configured composer is still loading"
        ahead = d.ring.ahead_seconds + d.audio.pending_seconds
        if ahead < d.config.stream.ready_seconds:
            return False, f"buffer {ahead:.1f} s ahead, below {d.config.stream.ready_seconds:g} s"
        connected = [s.name for s in self._vital_outputs() if s.connected]
        if not connected:
            return False, "no output connected"
        return True, "ready: " + ", ".join(redact(name) for name in connected)

    # ------------------------------------------------------------------ systemd

    def _output_sinks(self) -> list[Sink]:
        sinks = self.daemon.sinks
        return [s for s in sinks if s is not self.daemon.hub] or list(sinks)

    def _vital_outputs(self) -> list[SinkSnapshot]:
        """The outputs health is judged by: the RTMP ones if there are any (a recording that still
        works must not make a dead ingest look healthy), else every output."""
        outputs = [s.snapshot() for s in self._output_sinks()]
        return [s for s in outputs if s.network] or outputs

    def watchdog_ok(self, now: float) -> bool:
        """Healthy, no composer call outlasting the buffer, and at least one output working."""
        healthy, _ = self.health()
        d = self.daemon
        composing = d.composers.composing_since
        # The buffer drains at the clock's speed (unpaced, it is counted as if in real time).
        buffer_lasts = d.config.stream.buffer_seconds / (d.clock.speed if d.clock.paced else 1.0)
        stalled = composing is not None and now - composing > buffer_lasts
        return healthy and not stalled and any(s.healthy for s in self._vital_outputs())

    def summary(self) -> str:
        """systemd's STATUS= line."""
        playing = self.daemon.audio.playing
        bar = playing.entry.bar if playing else None
        what = f"{track_title(bar.track_id)!r} {bar.key} {bar.tempo_bpm:.0f} BPM" if bar else "starting"
        outputs = [s.snapshot() for s in self._output_sinks()]
        ok = sum(1 for s in outputs if s.healthy)
        return (f"playing {what}; buffer {self.daemon.ring.ahead_seconds:.0f} s; outputs {ok}/{len(outputs)} ok; "
                f"underruns {self.daemon.counters.underruns}")
