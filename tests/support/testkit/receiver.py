"""A real RTMP receiver for the stream's integration tests, and checks over what it recorded.

    receiver = Receiver(tmp_path / "receiver", key)   # nginx-rtmp on free loopback ports + recorder
    ... stream to receiver.ingest_url (the daemon appends the key) ...
    receiver.wait_for_bytes(100_000, timeout=30)
    receiver.ingest.first_media_after(t)                # when a new publisher's media reached nginx
    receiver.stop_server(); receiver.start_server()     # an ingest outage, same port
    receiver.close()
    for recording in receiver.recordings():             # one file per publish session
        report = check_continuity(recording.path)      # audio gaps, non-monotonic timestamps, A/V drift
        silences = detect_silence(recording.path)       # silencedetect: (start, seconds) of 200 ms or more
        frames = decode_frames(recording.path, fps=5)   # the picture, as RGB arrays
        recording.live_offsets(audio_packets)           # arrival time minus media time, per packet

- `Nginx`: nginx with the RTMP module, from deploy/nginx-rtmp.conf with its own ports and
  prefix, in the foreground; it can be stopped and started again on the same port. Its
  statistics page (`rtmp_stat`) tells what each publisher has sent so far.
- `IngestMonitor`: polls that page every 50 ms: when each publish session began and when its
  first media reached nginx — the receiver's side of "back on air", with no player in between.
- `Recorder`: an ffmpeg that plays the stream from nginx and copies it (`-c copy -copyts`, FLV)
  into its stdout, which a thread writes to a file while noting when each byte arrived. The
  timestamps in the file are the ones the publisher sent. nginx is told to end a player's
  stream when its publisher goes (`play_restart on`), so ffmpeg ends with each publish session
  and the recorder starts the next one at once: a file per session, each with a timeline of its
  own. (One ffmpeg across a publisher restart would rewrite the new session's timestamps,
  which start at 0 again, to keep its output monotonic, and hide exactly what is checked.)
  While nginx is down the recorder keeps trying to connect. ffmpeg holds the first
  ANALYZE_SECONDS of a session back while it looks for the streams, so arrival times are
  exact in steady state only; `IngestMonitor` gives the start of a session.
- `HungIngest`: a deliberately broken ingest that accepts TCP and never reads or answers.
- `probe_packets`, `check_continuity`, `detect_silence`: ffprobe / ffmpeg over a recording (any
  container ffprobe reads, so also the daemon's own files).

A missing nginx, RTMP module, ffmpeg or ffprobe is an AssertionError (`require_tools`): the tests
that need them fail, they never skip.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from xml.etree import ElementTree

import pytest

from testkit.drift import packet_drift  # one A/V drift figure for the soak and the receiver
from testkit.waiting import free_port, wait_for

ROOT = Path(__file__).resolve().parents[3]  # the repository (for deploy/nginx-rtmp.conf)

NGINX_CONF = ROOT / "deploy" / "nginx-rtmp.conf"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
APPLICATION = "live"
GAP_SECONDS = 0.050  # an audio timestamp step above this is a gap (AAC packets are 21–23 ms)
SILENCE_DB = -60.0  # the lo-fi chain's hiss and crackle sit well above this: below it is silence
SILENCE_SECONDS = 0.2
RECONNECT_SECONDS = 0.25  # the recorder's wait between attempts while nginx is down
ANALYZE_SECONDS = 3.0
STAT_POLL_SECONDS = 0.05
HISTORY_POLLS = round(600 / STAT_POLL_SECONDS)  # what each Publish keeps of its media timestamps


def require_tools() -> None:
    """`make setup` installs them; their absence is a failure, never a skip."""
    missing = [tool for tool in ("nginx", "ffmpeg", "ffprobe") if not shutil.which(tool)]
    missing += [] if RTMP_MODULE.exists() else [str(RTMP_MODULE)]
    assert not missing, f"missing {', '.join(missing)}: run make setup"


# ----------------------------------------------------------------------------- nginx-rtmp


class Nginx:
    """nginx-rtmp on 127.0.0.1:`port` (a free one by default), foreground, files under `prefix`."""

    def __init__(self, prefix: Path, port: int | None = None) -> None:
        self.prefix = prefix
        self.port = port or free_port()
        self.stat_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        prefix.mkdir(parents=True, exist_ok=True)
        conf = NGINX_CONF.read_text()
        conf = conf.replace("listen 127.0.0.1:1935;", f"listen 127.0.0.1:{self.port};")
        conf = conf.replace("live on;", "live on;\n            play_restart on;")
        assert f"127.0.0.1:{self.port}" in conf and "play_restart on;" in conf, "deploy/nginx-rtmp.conf changed"
        # The RTMP module's statistics page: what each publisher has sent, as nginx saw it.
        conf += (f"\nhttp {{\n    access_log off;\n    server {{\n        listen 127.0.0.1:{self.stat_port};\n"
                 "        location /stat { rtmp_stat all; }\n    }\n}\n")
        (prefix / "nginx.conf").write_text(conf)
        self.start()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "nginx is already running"
        self.starts += 1
        with open(self.prefix / f"nginx-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(["nginx", "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                          "-e", "stderr"], stdout=log, stderr=subprocess.STDOUT)
        if not wait_for(self.ready, 10):
            self.stop()
            raise RuntimeError(f"nginx did not start: {self.log_text()}")

    def ready(self) -> bool:
        """nginx itself is up: running, its RTMP port taking connections and its statistics page
        answering (while nginx retries a bind() that fails, another process on the port would
        take the connections)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            pass
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stat_port}/stat", timeout=0.5):
            return True

    def stop(self) -> None:
        """SIGQUIT (graceful), SIGKILL if it lingers; returns once the port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.prefix.glob("nginx-*.log")))

    def publishers(self, stream: str) -> list[dict[str, int | str]]:
        """The clients publishing `stream` now: nginx's id, media timestamp reached (ms), bytes in."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stat_port}/stat", timeout=2) as response:
            root = ElementTree.fromstring(response.read())
        found = []
        for node in root.iter("stream"):
            if node.findtext("name") != stream:
                continue
            for client in node.iter("client"):
                if client.find("publishing") is not None:
                    found.append({"id": client.findtext("id", ""),
                                  "timestamp_ms": int(client.findtext("timestamp", "0")),
                                  "bytes_in": int(node.findtext("bytes_in", "0"))})
        return found


@dataclass
class Publish:
    """One publish session as nginx saw it (its statistics page, polled every STAT_POLL_SECONDS)."""

    client: str  # "<nginx run>:<nginx's client id>"
    seen: float  # monotonic time it was first seen publishing
    first_media: float | None = None  # first seen with a media timestamp past 0: data is arriving
    last_seen: float = 0.0
    timestamp_ms: int = 0  # media time reached
    bytes_in: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, timestamp_ms) per poll

    def media_in(self, start: float, seconds: float) -> float:
        """Media seconds that reached nginx between `start` and `start + seconds` (monotonic): about
        `seconds` while the stream is live, far more when a backlog is pushed."""
        # (0 until the first media: the connect and publish commands carry timestamp 0.)
        inside = [ms for at, ms in self.history if start <= at <= start + seconds and ms > 0]
        return (max(inside) - min(inside)) / 1000 if inside else 0.0


class IngestMonitor:
    """Polls nginx's statistics for the publishers of one stream; `publishes` in order of arrival."""

    def __init__(self, nginx: Nginx, stream: str) -> None:
        self.nginx = nginx
        self.stream = stream
        self._publishes: dict[str, Publish] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(STAT_POLL_SECONDS):
            # nginx numbers its clients afresh when it restarts: a session after a restart may get
            # the id of one before it, so a session is known by the nginx run and the id.
            run = self.nginx.starts
            try:
                publishers = self.nginx.publishers(self.stream)
            except (OSError, ElementTree.ParseError):  # nginx down or restarting
                continue
            if self.nginx.starts != run:  # restarted during the poll: whose ids these are is unclear
                continue
            now = time.monotonic()
            with self._lock:
                for publisher in publishers:
                    client = f"{run}:{publisher['id']}"
                    publish = self._publishes.setdefault(client, Publish(client, now))
                    publish.last_seen = now
                    publish.timestamp_ms = int(publisher["timestamp_ms"])
                    publish.history.append((now, publish.timestamp_ms))
                    if len(publish.history) > 2 * HISTORY_POLLS:  # a soak runs for hours: the last 10 min
                        del publish.history[:-HISTORY_POLLS]
                    publish.bytes_in = int(publisher["bytes_in"])
                    if publish.first_media is None and publish.timestamp_ms > 0:
                        publish.first_media = now

    def publishes(self) -> list[Publish]:
        with self._lock:
            return sorted((dataclasses.replace(p, history=list(p.history)) for p in self._publishes.values()),
                          key=lambda p: p.seen)

    def first_media_after(self, moment: float) -> float | None:
        """When media of a publish session that started after `moment` first reached nginx."""
        times = [p.first_media for p in self.publishes() if p.first_media is not None and p.seen > moment]
        return min(times, default=None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class HungIngest:
    """A deliberately broken ingest on 127.0.0.1:`port`: it accepts TCP connections and never
    reads or answers (the RTMP handshake waits for ever). Notes when each connection came."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: list[float] = []  # monotonic times
        self._connections: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        threading.Thread(target=self._accept, name="hung-ingest", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self._connections.append(connection)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        for sock in [self._listener, *self._connections]:
            sock.close()


# ----------------------------------------------------------------------------- recorder


@dataclass
class Recording:
    """One publish session as the receiver got it: the FLV file and when its bytes arrived."""

    path: Path
    launched: float  # monotonic time its ffmpeg was started
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, bytes so far)
    exit_code: int | None = None

    @property
    def size(self) -> int:
        return self.arrivals[-1][1] if self.arrivals else 0

    @property
    def first_arrival(self) -> float:
        return self.arrivals[0][0]

    @property
    def last_arrival(self) -> float:
        return self.arrivals[-1][0]

    def arrival(self, packet: Packet) -> float:
        """Monotonic time at which the receiver had all of `packet`."""
        end = packet.pos + packet.size
        sizes = [size for _, size in self.arrivals]
        index = min(bisect.bisect_left(sizes, end), len(self.arrivals) - 1)
        return self.arrivals[index][0]

    def live_offsets(self, packets: list[Packet]) -> list[float]:
        """Per packet: arrival time minus media time, i.e. when media time 0 was live by that packet."""
        return [self.arrival(packet) - packet.pts for packet in packets]


class Recorder:
    """Plays `url` from nginx into files in `directory`, a new file for each publish session."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.sessions: list[Recording] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            recording = Recording(self.directory / f"session-{attempt:03d}.flv", time.monotonic())
            with open(self.directory / f"session-{attempt:03d}.log", "wb") as log:
                proc = subprocess.Popen(
                    ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning",
                     # Streams of an RTMP play appear as their packets do: after an ingest
                     # reconnect, video waits for its next keyframe (≤ 2 s). Look long enough to
                     # see both (the first bytes of a session come out that much later).
                     "-analyzeduration", str(int(ANALYZE_SECONDS * 1e6)), "-i", self.url,
                     "-map", "0", "-c", "copy", "-copyts", "-flush_packets", "1", "-flvflags",
                     "no_duration_filesize", "-f", "flv", "pipe:1"],
                    stdout=subprocess.PIPE, stderr=log, bufsize=0)
            with self._lock:
                self._proc = proc
            with open(recording.path, "wb") as out:
                total = 0
                assert proc.stdout is not None
                while chunk := proc.stdout.read(65536):
                    out.write(chunk)
                    out.flush()
                    total += len(chunk)
                    with self._lock:
                        if not recording.arrivals:
                            self.sessions.append(recording)
                        recording.arrivals.append((time.monotonic(), total))
            recording.exit_code = proc.wait()
            if not recording.arrivals:  # nginx down, or stopped before anything came
                recording.path.unlink(missing_ok=True)
                self._stop.wait(RECONNECT_SECONDS)

    def recordings(self) -> list[Recording]:
        with self._lock:
            return list(self.sessions)

    def bytes_received(self) -> int:
        return sum(recording.size for recording in self.recordings())

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT lets ffmpeg finish its output; one that waits on a silent stream gets killed."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(timeout)


class Receiver:
    """nginx-rtmp, a recorder playing `APPLICATION/key` from it, and a monitor of its publishers."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = key
        self.nginx = Nginx(directory / "nginx")
        self.ingest = IngestMonitor(self.nginx, key)
        self.recorder = Recorder(f"rtmp://127.0.0.1:{self.nginx.port}/{APPLICATION}/{key}", directory)

    @property
    def port(self) -> int:
        return self.nginx.port

    @property
    def ingest_url(self) -> str:
        """Where to publish: the daemon appends the stream key."""
        return f"rtmp://127.0.0.1:{self.nginx.port}/{APPLICATION}"

    def recordings(self) -> list[Recording]:
        return self.recorder.recordings()

    def wait_for_bytes(self, count: int, timeout: float) -> bool:
        """At least `count` more bytes than now received within `timeout` seconds."""
        start = self.recorder.bytes_received()
        return bool(wait_for(lambda: self.recorder.bytes_received() - start >= count, timeout))

    def wait_for_recording(self, seconds: float, timeout: float) -> bool:
        """The current session's file has been growing for `seconds`: the recorder is past its
        start-up hold, and arrival times are live."""
        def long_enough() -> bool:
            recordings = self.recorder.recordings()
            return bool(recordings) and recordings[-1].last_arrival - recordings[-1].first_arrival >= seconds
        return bool(wait_for(long_enough, timeout))

    def stop_server(self) -> None:
        self.nginx.stop()

    def start_server(self) -> None:
        self.nginx.start()

    def close(self) -> None:
        """Stop the recorder (its files are complete afterwards), then nginx."""
        self.recorder.stop()
        self.ingest.stop()
        self.nginx.stop()


def receiver_fixture(key: str):
    """A pytest fixture giving each test a `Receiver` of `key` under its tmp_path, closed after
    it: `receiver = receiver_fixture(KEY)` in a test module."""

    @pytest.fixture
    def receiver(tmp_path: Path) -> Iterator[Receiver]:
        require_tools()
        rx = Receiver(tmp_path / "receiver", key)
        yield rx
        rx.close()

    return receiver


# ----------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Packet:
    codec_type: str  # "audio" | "video"
    codec: str  # "aac", "h264"
    pts: float  # seconds
    dts: float
    duration: float  # seconds (0 if the container does not say)
    keyframe: bool
    pos: int  # byte offset in the file
    size: int


def probe_packets(path: Path) -> list[Packet]:
    """Every audio/video packet of `path` with a timestamp, in file order."""
    result = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                             "packet=stream_index,pts_time,dts_time,duration_time,flags,pos,size"
                             ":stream=index,codec_name,codec_type", "-of", "json", str(path)],
                            capture_output=True, text=True, timeout=600, check=True)
    data = json.loads(result.stdout)
    streams = {s["index"]: (s.get("codec_type", ""), s.get("codec_name", "")) for s in data.get("streams", [])}
    packets = []
    for raw in data.get("packets", []):
        codec_type, codec = streams.get(raw.get("stream_index"), ("", ""))
        pts, dts = raw.get("pts_time", "N/A"), raw.get("dts_time", "N/A")
        if codec_type not in ("audio", "video") or pts in (None, "N/A"):
            continue
        duration = raw.get("duration_time", "N/A")
        packets.append(Packet(codec_type, codec, float(pts), float(dts) if dts not in (None, "N/A") else float(pts),
                              float(duration) if duration not in (None, "N/A") else 0.0,
                              "K" in raw.get("flags", ""), int(raw.get("pos", -1)), int(raw.get("size", 0))))
    return packets


@dataclass(frozen=True)
class Continuity:
    """What the timestamps of a recording say about its continuity (seconds throughout)."""

    codecs: frozenset[str]
    audio_packets: int
    video_packets: int
    audio_seconds: float  # audio timeline covered, first packet to the end of the last
    video_seconds: float
    audio_gaps: tuple[tuple[float, float], ...]  # (pts where it starts, length) of steps over the threshold
    max_audio_step: float  # largest step between consecutive audio timestamps
    non_monotonic: tuple[tuple[str, float, float], ...]  # (codec type, pts before, pts after) going back
    av_drift: float  # largest |audio slip − video slip| (testkit.drift.packet_drift)

    @property
    def ok(self) -> bool:
        return not self.audio_gaps and not self.non_monotonic


def check_continuity(path: Path, gap_seconds: float = GAP_SECONDS) -> Continuity:
    """Audio gaps, non-monotonic timestamps and A/V drift of a recording, from ffprobe's packets.

    Audio timestamps are checked in file order; video by decode timestamp (its presentation
    order may legitimately differ). A/V drift is the soak benchmark's figure: each stream's slip
    (how far a packet's timestamp is from where the packets before it put it) and the largest
    difference of the two slips along the recording.
    """
    packets = probe_packets(path)
    audio = [p for p in packets if p.codec_type == "audio"]
    video = [p for p in packets if p.codec_type == "video"]
    non_monotonic = []
    for kind, stamps in (("audio", [p.pts for p in audio]), ("video", [p.dts for p in video])):
        non_monotonic += [(kind, a, b) for a, b in pairwise(stamps) if b <= a]
    steps = [(a.pts, b.pts - a.pts) for a, b in pairwise(audio)]
    gaps = tuple((at, step) for at, step in steps if step > gap_seconds)

    def span(stream: list[Packet]) -> float:
        if not stream:
            return 0.0
        ends = [p.pts + p.duration for p in stream]
        return max(ends) - min(p.pts for p in stream)

    audio_seconds, video_seconds = span(audio), span(video)
    drift = packet_drift(path, max(audio_seconds, 1e-3)).max_drift if audio and video else 0.0
    return Continuity(
        codecs=frozenset(p.codec for p in packets), audio_packets=len(audio), video_packets=len(video),
        audio_seconds=audio_seconds, video_seconds=video_seconds, audio_gaps=gaps,
        max_audio_step=max((step for _, step in steps), default=0.0), non_monotonic=tuple(non_monotonic),
        av_drift=drift)


_SILENCE_START = re.compile(r"silence_start: (-?[\d.]+)")
_SILENCE_END = re.compile(r"silence_end: (-?[\d.]+) \| silence_duration: ([\d.]+)")


def detect_silence(path: Path, noise_db: float = SILENCE_DB, min_seconds: float = SILENCE_SECONDS
                   ) -> list[tuple[float, float]]:
    """(start, seconds) of every stretch of the audio quieter than `noise_db` for `min_seconds` or
    more (ffmpeg's silencedetect; a silence running to the end of the file counts too)."""
    result = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "info", "-i", str(path), "-vn",
                             "-af", f"silencedetect=noise={noise_db:g}dB:d={min_seconds:g}", "-f", "null", "-"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    silences = [(float(m[1]) - float(m[2]), float(m[2])) for m in _SILENCE_END.finditer(result.stderr)]
    starts = [float(m[1]) for m in _SILENCE_START.finditer(result.stderr)]
    if len(starts) > len(silences):  # silent until the end: no silence_end line
        duration = audio_duration(path)
        silences.append((starts[-1], duration - starts[-1]))
    return silences


def decode_frames(path: Path, fps: float, start: float = 0.0, seconds: float | None = None):
    """The video of a recording as RGB frames, `fps` a second from `start`: (frames, height, width, 3) uint8."""
    import numpy as np

    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, timeout=60, check=True)
    width, height = (int(v) for v in probe.stdout.strip().split(",")[:2])
    command = ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{start:g}", "-i", str(path)]
    if seconds is not None:
        command += ["-t", f"{seconds:g}"]
    command += ["-vf", f"fps={fps:g}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(command, capture_output=True, timeout=600, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


def audio_duration(path: Path) -> float:
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                             "format=duration", "-of", "csv=p=0", str(path)],
                            capture_output=True, text=True, timeout=120, check=True)
    return float(result.stdout.strip() or 0.0)


__all__ = ["Continuity", "IngestMonitor", "Nginx", "Packet", "Publish", "Receiver", "Recorder", "Recording",
           "audio_duration", "check_continuity", "decode_frames", "detect_silence", "probe_packets", "receiver_fixture",
           "require_tools"]
