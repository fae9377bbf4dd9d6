"""The ffmpeg sink: one long-lived ffmpeg encoding audio + video to every target at once.

PCM goes to ffmpeg's stdin from this sink's writer thread, in non-blocking writes with a
timeout: a dead or stuck ffmpeg can fill the pipe, and a plain blocking write would then hang
forever. A supervisor thread watches the process and restarts it when it exits, when a write
times out, or when it makes no progress: after the shortest wait (≤ 2 s) if the run had been on
air, with doubling waits while runs keep failing before they encode anything; the music
timeline does not wait (the clock keeps running and the queue drops the oldest audio).

Several targets share one encoder through the `tee` muxer, each slave behind a `fifo` with
`attempt_recovery`: a target that fails (an ingest server restarting, a full disk) is retried
on its own every few seconds while the others carry on, and `drop_pkts_on_overflow` keeps a
slow target from blocking the encoder. `onfail=ignore` keeps ffmpeg running when a slave
gives up. Local recordings go through the `segment` muxer, so they are cut into timestamped
files that a restart never overwrites.

An RTMP target counts as up only while its peer acknowledges bytes (streamer.sinks.delivery:
the kernel's count for ffmpeg's connection), never because the encoder makes progress. One that
hangs (accepts TCP and never answers the handshake, or stops reading mid-stream) is cut after
`sinks.target_timeout_seconds` without a byte acknowledged (ffmpeg's `rw_timeout` for a read,
streamer.sinks.delivery.cut for a write, which that timeout does not cover) and retried like a
refused one, the other targets untouched; only if the connection cannot be cut is the whole
ffmpeg restarted. The socket's send buffer is held to about a second of the stream so that a
peer that stops reading fills it at once, and the per-target queue to a few seconds: a
reconnect never flushes a stale backlog.

Live, the audio written to ffmpeg but not yet encoded is held under MAX_ENCODER_LAG_SECONDS:
when ffmpeg falls behind (its CPU taken by other work), newer blocks are dropped before they
are written instead of piling up in its input queue, so it never catches up in a burst
toward the receiver and the stream stays as live as before.

python-ffmpeg builds the command line (`FFmpeg().option/input/output`) and parses ffmpeg's
progress lines (`Statistics.from_line`). Its `execute()` is not used: it feeds stdin with
blocking writes from its own copy loop (no timeout, so a stalled ffmpeg would hang the feeder)
and owns the process, while the supervisor here needs the handle to watch, signal and replace
it, and a writer that gives up after a timeout.

The stream key is part of ffmpeg's command line: the ingest URL is a positional argument, and
ffmpeg 5.1 reads no argument from a file or the environment (docs/RELIABILITY.md, "Secrets", says
who can see it and how to hide it). Every line this module logs or reports is redacted
(streamer.logs.redact), and ffmpeg's environment is given without the key.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ffmpeg import FFmpeg
from ffmpeg.statistics import Statistics

from streamer.config import SinkSettings, VideoSettings
from streamer.logs import RateLimitedLog, redact
from streamer.ringbuffer import AudioBlock
from streamer.sinks import BackoffDelays, QueuedSink, SinkSnapshot, SinkState
from streamer.sinks.delivery import Connection, connections_of, cut
from streamer.sinks.recordings import RecordingsKeeper, first_free_name
from streamer.video import (
    build_video_graph,
    encoder_options,
    pipe_bytes,
    pipe_channels,
    pipe_layout,
    preset_of,
    thumbnail_output,
)
from streamer.video_files import VideoFiles

log = logging.getLogger(__name__)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1 << 15  # ≈ 0.19 s of 44.1 kHz stereo s16: little audio can hide in the pipe
START_BACKLOG_SECONDS = 0.3  # while ffmpeg starts, older queued audio is dropped: it starts live
MUXERS = {".flv": "flv", ".mkv": "matroska", ".mp4": "mp4", ".ts": "mpegts", ".mov": "mov"}
NETWORK_SCHEMES = ("rtmp", "rtmps")
RECORDING_PATTERN = "chiplofi-%Y%m%d-%H%M%S.mkv"
TARGET_BACKLOG_SECONDS = 3.0  # per-target queue, in media time: more is stale, dropped not flushed
AAC_FRAME_SAMPLES = 1024  # one AAC packet; audio packets per second = sample rate / this
SEND_BUFFER_SECONDS = 1.0  # of the stream's bitrate in an RTMP socket's send buffer
SEND_BUFFER_MIN_BYTES = 64 * 1024  # still covers the bandwidth-delay product of a distant ingest
DELIVERY_WINDOW_SECONDS = 3.0  # an RTMP target is up while its peer acknowledged bytes this recently
HANDSHAKE_BYTES = 16 * 1024  # acknowledged by a peer before it has taken any media (see _note_acknowledged)
PROBE_SECONDS = 1.0  # how often ffmpeg's connections are looked at
# A target's state is what the supervisor's last probe saw. An "ok" whose last delivery is older
# than this was not confirmed by a probe for a while (the supervisor starved of CPU, or stuck in a
# call): it is read as stalled, so /status and /readyz never say "ok" on deliveries nobody saw.
STALE_OK_SECONDS = DELIVERY_WINDOW_SECONDS + 2 * PROBE_SECONDS
MAX_ENCODER_LAG_SECONDS = 2.0  # live: audio written but not yet encoded; newer audio is dropped above it
STOP_EOF_SECONDS = 2.5  # after EOF, time ffmpeg gets to finish its files before SIGTERM
# An ffmpeg that encoded this much of the stream worked: its end (killed, crashed) is an incident,
# and the next one starts after the shortest wait. Only runs that never got going back off.
ON_AIR_RESET_SECONDS = 2.0
FEED_PAUSE_SECONDS = 1.0  # no block written for this long: the input paused (blocks come every ~23 ms)


@dataclass
class Target:
    """One destination of the ffmpeg sink."""

    url: str  # what ffmpeg opens; may hold the stream key: never log it, use `label`
    label: str  # redacted, for logs and /status
    muxer: str  # flv, matroska, mp4, mpegts, segment
    options: dict[str, str] = field(default_factory=dict)  # extra tee slave options
    state: str = "starting"  # starting | ok | stalled (connected, nothing acknowledged) | failing
    failures: int = 0
    overflows: int = 0  # times its queue filled and packets were dropped (a slow peer)
    last_error: str = ""
    error_at: float = 0.0  # monotonic time of last_error: a target that recovered keeps its last error, dated
    acked_bytes: int = 0  # RTMP: bytes its peer acknowledged, over all connections
    delivered_at: float = 0.0  # RTMP: monotonic time the peer last acknowledged bytes
    connections: int = 0  # RTMP: connections made to it
    cuts: int = 0  # RTMP: connections cut because the peer stopped taking bytes
    # RTMP: per open connection (socket inode): bytes acknowledged, monotonic time that last grew
    _seen: dict[int, tuple[int, float]] = field(default_factory=dict, repr=False)

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme.lower() == "rtmps" else 1935)

    @property
    def network(self) -> bool:
        return self.url.split(":", 1)[0].lower() in NETWORK_SCHEMES

    def note_error(self, text: str, now: float) -> None:
        self.last_error, self.error_at = text, now

    def state_at(self, now: float) -> str:
        """The state as of monotonic `now`: an RTMP target's "ok" goes stale (`STALE_OK_SECONDS`)."""
        if self.network and self.state == "ok" and now - self.delivered_at >= STALE_OK_SECONDS:
            return "stalled"
        return self.state

    def url_for_run(self) -> str:
        """What the next ffmpeg opens. A plain file is never overwritten, by a restart of ffmpeg or
        of the daemon: the first free one of NAME.EXT, NAME-1.EXT, ... (Network targets
        reconnect; segmented recordings are named by time.)"""
        if self.network or self.muxer == "segment":
            return self.url
        return str(first_free_name(Path(self.url)))

    def tee_slave(self, extra: dict[str, str] | None = None) -> str:
        options = {"f": self.muxer, **self.options, **(extra or {}), "onfail": "ignore"}
        # A slave's option values are unescaped twice (the tee's list of slaves, then the options).
        spec = ":".join(f"{key}={_tee_escape(_option_escape(value))}" for key, value in options.items())
        return f"[{spec}]{_tee_escape(self.url_for_run())}"


def _tee_escape(url: str) -> str:
    for char in ("\\", "'", "|", "["):
        url = url.replace(char, "\\" + char)
    return url


def _option_escape(value: str) -> str:
    for char in ("\\", "'", ":", "="):
        value = value.replace(char, "\\" + char)
    return value


def with_stream_key(url: str, key: str) -> str:
    """The ingest URL with the key: `{key}` replaced, or appended as the last path element."""
    if "{key}" in url:
        return url.replace("{key}", key)
    if not key:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + key))


def network_target(url: str, key: str) -> Target:
    full = with_stream_key(url, key)
    # A live FLV has no end to seek back to: don't try to write duration and size there.
    return Target(full, redact(full, [key]), "flv", {"flvflags": "no_duration_filesize"})


FILE_QUEUE_PACKETS = 1200  # ≈ 10–20 s of packets a slow disk may lag behind before some are dropped


def file_target(path: str | Path) -> Target:
    path = Path(path)
    muxer = MUXERS.get(path.suffix.lower())
    if muxer is None:
        raise ValueError(f"{path}: unknown video file type (use {', '.join(MUXERS)}, or .wav for audio)")
    # No recovery for a plain file: the fifo would reopen the same name and truncate what was
    # recorded (streamer.sinks.recordings has a new ffmpeg write the next name instead).
    return Target(str(path), str(path), muxer,
                  {"fifo_options": f"attempt_recovery=0:drop_pkts_on_overflow=1:queue_size={FILE_QUEUE_PACKETS}"})


def recording_target(directory: Path, segment_seconds: float) -> Target:
    """Matroska files cut every `segment_seconds`, named by their start time."""
    return Target(str(directory / RECORDING_PATTERN), str(directory / RECORDING_PATTERN), "segment",
                  {"segment_format": "matroska", "segment_time": f"{segment_seconds:g}", "strftime": "1",
                   "reset_timestamps": "1"})


_LINE = re.compile(r"^(?:\[(?P<module>\w+) @ (?P<addr>0x[0-9a-f]+)\] )?\[(?P<level>\w+)\] (?P<text>.*)$")


class FfmpegSink(QueuedSink):
    """Supervised ffmpeg process: audio in through a pipe, audio + video out to `targets`."""

    kind = "ffmpeg"

    def __init__(self, targets: list[Target], *, sample_rate: int, video: VideoSettings,
                 settings: SinkSettings, picture: VideoFiles, secrets: list[str] | None = None,
                 recordings_dir: Path | None = None, live: bool = True, name: str = "ffmpeg",
                 pass_fds: tuple[int, ...] = ()) -> None:
        super().__init__(name, sample_rate, settings.queue_seconds)
        if not targets:
            raise ValueError("the ffmpeg sink needs at least one target")
        self.targets = targets
        self.video = video
        self.settings = settings
        self.picture = picture
        self.channels = pipe_channels(video)  # the stereo mix, and the voice stems if the picture draws them
        self.pass_fds = pass_fds  # inherited by ffmpeg (the now-playing texts' memfds)
        self.secrets = [s for s in (secrets or []) if s]
        self.recordings_dir = recordings_dir
        self.live = live  # paced: start each ffmpeg with current audio (unpaced: keep every sample)
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self._incarnation_over = threading.Event()
        self._write_error = ""
        self._last_write_ok = 0.0
        self._progress_seconds = 0.0  # output time ffmpeg reported
        self._progress_changed = 0.0  # monotonic time it last moved
        self._started_at = 0.0
        self._stderr_tail: list[str] = []
        self._fifo_targets: dict[str, Target] = {}
        self._ffmpeg_log = RateLimitedLog(log, interval=60.0)
        self.exit_codes: list[int] = []
        self.restart_reasons: list[str] = []
        self.pid: int | None = None
        self.clean_exit: bool | None = None
        self.runs = 0  # ffmpeg processes started so far
        self.overflows = 0
        self._run_bytes = 0  # written to the current one
        self._stop_timeout = STOP_EOF_SECONDS + 1.5
        self._last_probe = 0.0
        self._sink_started = 0.0
        self.frames_behind = 0  # live: dropped before ffmpeg because it was behind (MAX_ENCODER_LAG_SECONDS)
        self._restart_request = ""
        self.keeper = RecordingsKeeper(targets, recordings_dir, settings.record_keep_mb * 1e6,
                                       self._request_restart)

    @property
    def network_targets(self) -> list[Target]:
        return [target for target in self.targets if target.network]

    # ----------------------------------------------------------------- command line

    def arguments(self) -> list[str]:
        picture = build_video_graph(self.video, self.picture, self.sample_rate)
        ff = (FFmpeg(executable=self.settings.ffmpeg)
              .option("hide_banner")
              .option("loglevel", "level+info")
              .option("stats")
              .option("stats_period", "0.5")
              .option("filter_complex", picture.graph)
              # Raw PCM needs no probing: without these ffmpeg reads ~1 s of input before starting.
              .input("pipe:0", {"f": "s16le", "ar": self.sample_rate, "ac": self.channels,
                                "ch_layout": pipe_layout(self.channels),
                                # Live, a deep queue absorbs hiccups; unpaced, a shallow one makes
                                # ffmpeg push back instead of hoarding audio it has not encoded.
                                "thread_queue_size": 1024 if self.live else 8,
                                "probesize": 32, "analyzeduration": 0}))
        for path, input_options in picture.inputs:
            ff = ff.input(path, input_options)
        options: dict[str, object] = {"map": ["[vout]", "[aout]"]}
        options.update(encoder_options(self.video, self.sample_rate))
        recovery = max(0.5, self.settings.target_retry_seconds)
        preset = preset_of(self.video)
        packets_per_second = self.sample_rate / AAC_FRAME_SAMPLES + preset.fps
        queue_packets = max(16, round(TARGET_BACKLOG_SECONDS * packets_per_second))
        options.update({
            "f": "tee", "use_fifo": "1",
            "fifo_options": (f"attempt_recovery=1:recover_any_error=1:recovery_wait_time={recovery:g}:"
                             f"drop_pkts_on_overflow=1:restart_with_keyframe=1:queue_size={queue_packets}"),
        })
        stream_bytes_per_second = (preset.video_kbps + self.video.audio_kbps) * 1000 / 8
        network = {
            # Passed down to the TCP connection: a read or write waiting longer fails, and the fifo
            # reconnects this target (an ingest that never answers the handshake, or stops reading).
            "rw_timeout": str(round(self.settings.target_timeout_seconds * 1e6)),
            # Autotuned, a loopback send buffer grows to megabytes: seconds of stream that a frozen
            # peer would get late in a burst, and that delay the timeout above.
            "send_buffer_size": str(max(SEND_BUFFER_MIN_BYTES, round(SEND_BUFFER_SECONDS * stream_bytes_per_second))),
        }
        slaves = [target.tee_slave(network if target.network else None) for target in self.targets]
        ff.output("|".join(slaves), options)  # type: ignore[arg-type]
        if picture.thumbnail is not None:
            ff.output(*thumbnail_output(picture.thumbnail))  # type: ignore[arg-type]
        return ff.arguments

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._sink_started = time.monotonic()
        for target in self.targets:
            if target.muxer == "segment" or not target.network:
                Path(target.url).parent.mkdir(parents=True, exist_ok=True)
        self.keeper.start()
        self._supervisor = threading.Thread(target=self._supervise_guarded, name=f"sink-{self.name}",
                                            daemon=True)
        self._supervisor.start()

    def _supervise_guarded(self) -> None:
        try:
            self._supervise()
        except Exception as exc:  # a bug here must not end the stream; it is reported
            self.state = SinkState.FAILED
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("ffmpeg supervisor failed")

    def _accepting(self) -> bool:
        return self.state == SinkState.RUNNING

    def _supervise(self) -> None:
        backoff = BackoffDelays(self.settings.restart_initial_seconds, self.settings.restart_max_seconds,
                                healthy_after=ON_AIR_RESET_SECONDS)
        while not self._stop.is_set():
            started = time.monotonic()
            reason = self._run_once()
            if reason is None:  # stopped on request
                return
            ran_for = time.monotonic() - started
            self.restarts += 1
            self.restart_reasons.append(reason)
            del self.restart_reasons[:-20]
            delay = backoff.next(self._progress_seconds)  # seconds of the stream this run encoded
            self.state = SinkState.RESTARTING
            self.last_error = reason
            log.warning("ffmpeg %s after %.1f s; restarting in %.1f s (restart %d)", reason, ran_for, delay,
                        self.restarts)
            if self._stop.wait(delay):
                return

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = self.arguments()
        log.debug("starting %s", redact(" ".join(args), self.secrets))
        # ffmpeg needs no secret from the environment ($CHIPLOFI_STREAM_KEY): it does not inherit one.
        env = {name: value for name, value in os.environ.items() if not any(s in value for s in self.secrets)}
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                bufsize=0, process_group=0,  # own group: a terminal's Ctrl-C is ours
                                env=env, pass_fds=self.pass_fds)

    def _run_once(self) -> str | None:
        """Run one ffmpeg until it fails (→ reason) or the sink is stopped (→ None)."""
        self.state = SinkState.STARTING
        self._write_error = ""
        over = self._incarnation_over = threading.Event()  # this ffmpeg's: an old writer keeps its own
        self.runs += 1
        try:
            proc = self._spawn()
        except OSError as exc:
            return f"could not start ({self.settings.ffmpeg}: {exc.strerror or exc})"
        with self._proc_lock:
            self._proc = proc
        self.pid = proc.pid
        now = time.monotonic()
        self._started_at = self._progress_changed = self._last_write_ok = now
        self._progress_seconds = 0.0
        self._run_bytes = 0
        self._fifo_targets.clear()
        for target in self.targets:
            target.state = "starting"
            target._seen.clear()
        reader = threading.Thread(target=self._read_stderr, args=(proc,), name=f"{self.name}-stderr", daemon=True)
        writer = threading.Thread(target=self._write_loop, args=(proc, over), name=f"{self.name}-writer", daemon=True)
        reader.start()
        writer.start()
        log.info("ffmpeg started (pid %d) → %s", proc.pid, ", ".join(t.label for t in self.targets))
        self.state = SinkState.RUNNING
        reason = None
        while reason is None:
            if self._stop.wait(0.2):
                self._finish(proc, writer, reader)
                return None
            reason = self._check(proc)
        self._incarnation_over.set()
        self._kill(proc)
        writer.join(2.0)
        reader.join(2.0)
        return reason

    def _check(self, proc: subprocess.Popen[bytes]) -> str | None:
        code = proc.poll()
        if code is not None:
            self.exit_codes.append(code)
            del self.exit_codes[:-20]
            tail = " | ".join(self._stderr_tail[-3:])
            return f"exited with code {code}" + (f" ({tail})" if tail else "")
        if self._write_error:
            return self._write_error
        if self._restart_request:
            reason, self._restart_request = self._restart_request, ""
            return reason
        now = time.monotonic()
        if self.network_targets and now - self._last_probe >= PROBE_SECONDS:
            self._last_probe = now
            hung = self._probe_delivery(proc.pid, now)
            if hung:
                return hung
        stall = self.settings.stall_seconds
        fed_recently = now - self._last_write_ok < stall
        if fed_recently and now - self._progress_changed > stall and now - self._started_at > stall:
            return f"made no progress for {stall:g} s"
        return None

    def _probe_delivery(self, pid: int, now: float) -> str | None:
        """Mark each RTMP target by what its peer acknowledged, and cut a connection whose peer
        took nothing for `target_timeout_seconds` (ffmpeg retries it). A reason to restart the
        whole ffmpeg only if that cut is impossible."""
        try:
            connections = connections_of(pid)
        except OSError as exc:
            # No sock_diag (a sandbox refusing AF_NETLINK, an old unit file): judged by the encoder's
            # progress as a local file is, rather than never up (the watchdog would restart us for
            # ever). Said once a minute.
            self._ffmpeg_log.warning("cannot read ffmpeg's connections (%s): RTMP targets are judged by "
                                     "the encoder's progress only", exc)
            for target in self.network_targets:
                if target.state == "starting" and self._progress_seconds > 0:
                    target.state = "ok"
                target.delivered_at = self._progress_changed  # delivering as far as progress shows
            return None
        timeout = self.settings.target_timeout_seconds
        for target in self.network_targets:
            # Told apart by port: ffmpeg resolves the host itself (round-robin DNS may give it
            # another address than a lookup here would). Two targets on one port (a primary and
            # a backup ingest) share their connections' figures; a hung connection is still cut.
            mine = [c for c in connections if c.port == target.port and c.established]
            if self._note_acknowledged(target, mine, now):
                target.delivered_at = now
                if target.state != "ok":
                    log.info("ffmpeg target %s delivering", target.label)
                target.state = "ok"
            elif not mine:
                if target.state in ("ok", "stalled"):
                    target.state = "failing"  # the connection is gone; the fifo retries it
            elif now - target.delivered_at >= DELIVERY_WINDOW_SECONDS and target.state != "stalled":
                if target.state == "ok":
                    target.failures += 1
                    log.warning("ffmpeg target %s stalled: connected, its peer acknowledges nothing", target.label)
                target.state = "stalled"
                target.note_error("connected, nothing acknowledged", now)
            for connection in mine:
                acked, changed = target._seen[connection.inode]
                if now - changed >= timeout:
                    target._seen[connection.inode] = (acked, now)  # one cut per timeout at most
                    reason = self._cut(pid, target, connection, now - changed, now)
                    if reason:
                        return reason
        return None

    def _cut(self, pid: int, target: Target, connection: Connection, silent: float, now: float) -> str | None:
        log.warning("ffmpeg target %s: its peer took nothing for %.0f s; cutting the connection to retry it",
                    target.label, silent)
        try:
            cut(pid, connection)
        except OSError as exc:
            return f"target {target.label} took nothing for {silent:.0f} s and its connection cannot be cut ({exc})"
        target.cuts += 1
        target.note_error(f"peer took nothing for {silent:.0f} s; connection cut", now)
        return None

    @staticmethod
    def _note_acknowledged(target: Target, connections: list[Connection], now: float) -> bool:
        """Note what each connection's peer acknowledged since the last look; True if the target
        delivered (a connection past its handshake acknowledged more)."""
        grew = False
        seen = {}
        for connection in connections:
            before, changed = target._seen.get(connection.inode, (None, now))
            if before is None:
                target.connections += 1
                before = connection.bytes_acked
            if connection.bytes_acked > before:
                target.acked_bytes += connection.bytes_acked - before
                changed = now
                # The kernel of any listening socket acknowledges the SYN and the handshake's first
                # packet (C0+C1, 1537 bytes), read or not: more than that is the peer taking media.
                grew = grew or connection.bytes_acked > HANDSHAKE_BYTES
            seen[connection.inode] = (connection.bytes_acked, changed)
        target._seen = seen  # connections that closed are forgotten
        return grew

    def _finish(self, proc: subprocess.Popen[bytes], writer: threading.Thread, reader: threading.Thread) -> None:
        """Stop cleanly: the writer sends what is queued and closes its copy of the input, this closes
        stdin, and ffmpeg, at the end of its input, ends its files."""
        writer.join(1.0)
        self._incarnation_over.set()
        writer.join(0.5)
        self._close_stdin(proc)
        # Nothing written: there is nothing to finish (ffmpeg may still be starting up).
        grace = max(STOP_EOF_SECONDS, self._stop_timeout - 1.5) if self._run_bytes else 0.5
        try:
            code = proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("ffmpeg did not end %.1f s after its input; terminating", grace)
            code = self._kill(proc)
        reader.join(1.0)
        self.exit_codes.append(code)
        self.clean_exit = code == 0
        log.info("ffmpeg ended (exit code %d)", code)

    def _close_stdin(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass

    def _kill(self, proc: subprocess.Popen[bytes]) -> int:
        self._close_stdin(proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # ffmpeg finishes its files on SIGTERM
            try:
                return proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def _request_restart(self, reason: str) -> None:
        """From the recordings keeper: a new ffmpeg is needed (a plain file's disk has space again)."""
        self._restart_request = reason

    def stop(self, timeout: float) -> None:
        self._stop_timeout = timeout
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
            if self._supervisor.is_alive():
                log.warning("ffmpeg sink did not stop within %.1f s; killing ffmpeg", timeout)
                with self._proc_lock:
                    if self._proc is not None and self._proc.poll() is None:
                        self._proc.kill()
        self.keeper.stop()  # after ffmpeg: the last segment's end is pruned for too
        self.state = SinkState.STOPPED

    # ----------------------------------------------------------------- writer

    def _write_loop(self, proc: subprocess.Popen[bytes], over: threading.Event) -> None:
        """Feed this ffmpeg until its incarnation is `over` (or the sink stops with nothing queued).

        The writer writes to its own duplicate of ffmpeg's stdin and only it closes that: when the
        supervisor closes `proc.stdin` while a write waits on a full pipe, a descriptor number the
        writer still used would be free, and the next file or socket the process opens (a /status
        connection, a recording) would take it and receive the PCM.
        """
        assert proc.stdin is not None
        fd = os.dup(proc.stdin.fileno())
        try:
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
            except OSError as exc:  # not Linux, or above /proc/sys/fs/pipe-max-size
                log.debug("pipe size unchanged: %s", exc)
            os.set_blocking(fd, False)
            timeout = self.settings.write_timeout_seconds
            while not over.is_set():
                block = self.queue.get(timeout=0.1)
                if block is None:
                    if self._stop.is_set() and not self.queue.frames:
                        return
                    continue
                if self._behind():
                    # ffmpeg has more than it can encode in time (starved of CPU): this block would only
                    # add to a backlog sent later in a burst. Dropping it keeps the stream live.
                    self.frames_behind += block.frames
                    self._fed(time.monotonic())
                    continue
                error = self._write_all(fd, block, timeout, over)
                if error:
                    if not over.is_set():  # a writer of an ffmpeg already given up on reports nothing
                        self._write_error = error
                    return
        finally:
            os.close(fd)  # ffmpeg sees the end of its input once proc.stdin is closed too

    def encoder_lag(self) -> float:
        """Seconds of audio this ffmpeg was given and has not encoded yet (0 before it starts)."""
        if self._progress_seconds == 0.0:
            return 0.0
        # s16: 2 bytes a sample
        return self._run_bytes / (2 * self.channels * self.sample_rate) - self._progress_seconds

    def _behind(self) -> bool:
        return self.live and self.encoder_lag() > MAX_ENCODER_LAG_SECONDS

    def _starting(self) -> bool:
        """Live (paced) stream, and this ffmpeg has not reported progress yet."""
        return self.live and self._progress_seconds == 0.0

    def _write_all(self, fd: int, block: AudioBlock, timeout: float, over: threading.Event) -> str:
        view = memoryview(pipe_bytes(block, self.channels))
        deadline = time.monotonic() + timeout
        # poll(), not select(): select() cannot wait on a descriptor numbered 1024 or more, which a
        # long-running daemon with many files open may be given.
        pipe = select.poll()
        pipe.register(fd, select.POLLOUT)
        while view:
            if over.is_set():
                return ""  # this ffmpeg is being stopped: the rest of the block is not its to have
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"stopped reading its input (write blocked {timeout:g} s)"
            try:
                # Ready to write, or an error or hang-up that the write below then reports.
                if not pipe.poll(1000 * min(remaining, 0.05 if self._starting() else 0.5)):
                    if self._starting():
                        # ffmpeg is not reading yet: keep only the newest audio, so that it starts
                        # with what is playing now instead of bursting a backlog to the receiver.
                        self.queue.trim_to(int(START_BACKLOG_SECONDS * self.sample_rate))
                    continue
                written = os.write(fd, view)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF):
                    return "closed its input"
                return f"input write failed ({exc.strerror or exc})"
            view = view[written:]
            self.bytes_written += written
            self._run_bytes += written
        self.frames_written += block.frames
        self._fed(time.monotonic())
        return ""

    def _fed(self, now: float) -> None:
        """A block was handed to ffmpeg (or dropped because it is behind): input is there."""
        if now - self._last_write_ok > FEED_PAUSE_SECONDS:
            # ffmpeg got no input for a while (this process was stopped, say): it could make no
            # progress meanwhile, so the stall watch starts again from now.
            self._progress_changed = max(self._progress_changed, now)
        self._last_write_ok = now

    # ----------------------------------------------------------------- stderr

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        pending = b""
        while True:
            try:
                chunk = proc.stderr.read(4096)
            except (OSError, ValueError):
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]+", pending)
            for raw in lines:
                if raw:
                    self._on_line(redact(raw.decode("utf-8", "replace"), self.secrets), raw)
        if pending:
            self._on_line(redact(pending.decode("utf-8", "replace"), self.secrets), pending)

    def _on_line(self, line: str, raw: bytes) -> None:
        match = _LINE.match(line)
        level, text, addr = (match["level"], match["text"], match["addr"]) if match else ("info", line, None)
        if "time=" in text and "bitrate=" in text:
            stats = Statistics.from_line(text)
            if stats is not None:
                seconds = stats.time.total_seconds()
                if seconds > self._progress_seconds:
                    self._progress_seconds = seconds
                    self._progress_changed = time.monotonic()
                    for target in self.targets:
                        # An RTMP target is up when its peer takes bytes (_probe_delivery), not
                        # when the encoder runs.
                        if target.state == "starting" and not target.network:
                            target.state = "ok"
                return
        if match and match["module"] == "fifo" and addr:
            self._on_fifo_line(addr, text, raw)
        if not self.live and "queue blocking" in text:
            level = "info"  # unpaced, ffmpeg pushing back is the point
        if level in ("error", "fatal", "panic", "warning"):
            self._stderr_tail.append(text)
            del self._stderr_tail[:-10]
            self._ffmpeg_log.warning("ffmpeg: %s", line)
        else:
            log.debug("ffmpeg: %s", line)

    def _on_fifo_line(self, addr: str, text: str, raw: bytes) -> None:
        if "queue full" in text:
            self.overflows += 1  # a target's queue filled up: packets were dropped for it
        target = self._fifo_targets.get(addr)
        if target is None:
            raw_text = raw.decode("utf-8", "replace")
            for candidate in self.targets:
                # A line naming no URL ("FIFO queue full") can only be about the one target there is.
                if candidate.url in raw_text or len(self.targets) == 1:
                    target = self._fifo_targets[addr] = candidate
                    break
        if target is None:
            return
        if "queue full" in text:
            target.overflows += 1
        elif text.startswith("Recovery successful"):
            log.info("ffmpeg target %s reconnected", target.label)
            if not target.network:
                target.state = "ok"
        elif text.startswith("Error") or "failed" in text:
            if target.state != "failing":
                target.failures += 1
            target.state = "failing"
            target.note_error(text, time.monotonic())

    # ----------------------------------------------------------------- status

    def connected(self) -> bool:
        """Delivering: with RTMP targets, one whose peer acknowledges bytes (a recording that
        still works does not count); with local files only, the encoder making progress."""
        now = time.monotonic()
        fresh = now - self._progress_changed < self.settings.stall_seconds
        vital = self.network_targets or self.targets
        return (self.state == SinkState.RUNNING and fresh and self._progress_seconds > 0
                and any(t.state_at(now) == "ok" for t in vital))

    def _grace_from(self) -> float:
        """A new ffmpeg counts as healthy for `stall_seconds` before it must show that it works.
        With RTMP targets only the sink's first start has that grace: an ffmpeg restarted over and
        over because its ingest hangs never looks healthy (a short reconnect only delays a ping)."""
        return self._sink_started if self.network_targets else self._started_at

    def snapshot(self) -> SinkSnapshot:
        connected = self.connected()
        now = time.monotonic()
        return SinkSnapshot(
            name=self.name, kind=self.kind, state=self.state,
            healthy=self.state in (SinkState.RUNNING, SinkState.STARTING) and (
                connected or now - self._grace_from() < self.settings.stall_seconds),
            connected=connected, network=bool(self.network_targets), restarts=self.restarts,
            bytes_written=self.bytes_written, frames_written=self.frames_written,
            frames_dropped=self.queue.stats.frames_dropped + self.frames_behind,
            queued_seconds=self.queue.frames / self.sample_rate, last_error=self.last_error,
            detail={
                "pid": self.pid,
                "encoded_seconds": round(self._progress_seconds, 2),
                "encoder_lag_seconds": round(self.encoder_lag(), 2),
                "frames_dropped_behind": self.frames_behind,
                "target_overflows": self.overflows,
                "targets": [self._target_status(t, now) for t in self.targets],
                "restart_reasons": list(self.restart_reasons[-5:]),
            })

    @staticmethod
    def _target_status(target: Target, now: float) -> dict[str, object]:
        status: dict[str, object] = {"target": target.label, "state": target.state_at(now), "failures": target.failures,
                                     "overflows": target.overflows, "last_error": target.last_error,
                                     "last_error_seconds_ago": round(now - target.error_at, 1) if target.last_error
                                     else None}
        if target.network:
            delivered_ago = round(now - target.delivered_at, 1) if target.delivered_at else None
            status.update(acked_bytes=target.acked_bytes, connections=target.connections, cuts=target.cuts,
                          last_delivery_seconds_ago=delivered_ago)
        return status
