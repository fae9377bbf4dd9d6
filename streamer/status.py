"""The status HTTP server (stdlib `ThreadingHTTPServer`, default 127.0.0.1:8080).

    /           the page: now playing, buffer and output health, a piano roll of the recent bars,
                the recent tracks with their downloads, a live audio player
    /status     JSON: now playing, buffer, clock, sinks, checkpoint, schedule, counters
    /bars       JSON: the recent bars' notes (the page's piano roll)
    /metrics    Prometheus text (prometheus-client, the server's own CollectorRegistry)
    /healthz    200 while the daemon is alive and its clock advances, else 503
    /readyz     200 while the buffer is ahead by the threshold and an output is connected
    /live.wav   the stream's audio as it plays (16-bit WAV of unbounded length)
    /tracks     JSON: the archived tracks, newest first (`?limit=N`, default 20)
    /tracks/<id>.mid, /tracks/<id>.json   one archived track (ids as streamer.archive writes them)
    /thumbnail.jpg   the latest frame of the encoded video, as ffmpeg writes it (404 until then)

/status and /metrics are built from the same snapshot function, so they always agree. Unknown
paths get 404, other methods 405; each connection has a socket timeout and the number of
connections is capped (503 beyond), so malformed or slow clients cannot take the server down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamer.config import StatusSettings, shown
from streamer.errors import ConfigError
from streamer.ringbuffer import AudioBlock
from streamer.sinks import SinkSnapshot, SinkState
from streamer.status_snapshot import NowPlaying, StatusSnapshot

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0  # each read
HEADER_SECONDS = 10.0  # the whole request line and headers (or the wait for the next keep-alive request)
TRACKS_DEFAULT, TRACKS_MAX = 20, 500  # /tracks?limit=
LISTENER_QUEUE_SECONDS = 2.0


class StatusProvider(Protocol):
    def snapshot(self) -> StatusSnapshot: ...  # /metrics

    def status(self) -> dict[str, Any]: ...  # /status: the snapshot's JSON

    def recent_bars(self) -> list[dict[str, Any]]: ...

    def health(self) -> tuple[bool, str]: ...

    def readiness(self) -> tuple[bool, str]: ...


class TrackSource(Protocol):
    """The track archive as the server reads it (streamer.archive.TrackArchive)."""

    def recent(self, limit: int) -> list[dict[str, Any]]: ...

    def file_for(self, name: str) -> Path | None: ...


def parse_addr(text: str, key: str = "status.addr") -> tuple[str, int]:
    """'HOST:PORT' → (host, port); raises ConfigError naming `key`."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # [::1]:8080, an IPv6 address
        host = host[1:-1]
    if (not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535
            or not host.isprintable()):
        raise ConfigError(f"{key}: expected HOST:PORT (IPv6: [ADDRESS]:PORT) with a port from 0 to 65535, "
                          f"got {shown(text)}")
    return host, int(port)


# ----------------------------------------------------------------------------- live audio


class _Listener:
    def __init__(self, max_bytes: int) -> None:
        self.chunks: deque[bytes] = deque()
        self.bytes = 0
        self.max_bytes = max_bytes
        self.dropped = 0
        self.cond = threading.Condition()
        self.closed = False

    def push(self, data: bytes) -> None:
        with self.cond:
            self.chunks.append(data)
            self.bytes += len(data)
            while self.bytes > self.max_bytes and len(self.chunks) > 1:
                self.bytes -= len(self.chunks.popleft())
                self.dropped += 1
            self.cond.notify()

    def pop(self, timeout: float) -> bytes | None:
        with self.cond:
            if not self.chunks and not self.closed:
                self.cond.wait(timeout)
            if not self.chunks:
                return None
            data = self.chunks.popleft()
            self.bytes -= len(data)
            return data


class LiveAudioHub:
    """A sink that fans the stream's audio out to HTTP listeners (/live.wav); free without any."""

    kind = "live"

    def __init__(self, sample_rate: int, max_listeners: int, name: str = "live") -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.max_listeners = max_listeners
        self._listeners: list[_Listener] = []
        self._lock = threading.Lock()
        self.state = SinkState.STARTING
        self.bytes_written = 0
        self.frames_written = 0
        self.listeners_total = 0

    def start(self) -> None:
        self.state = SinkState.RUNNING

    def stop(self, timeout: float) -> None:
        self.state = SinkState.STOPPED
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            with listener.cond:
                listener.closed = True
                listener.cond.notify_all()

    def submit(self, block: AudioBlock, timeout: float = 0.0) -> bool:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.push(block.pcm16)
        if listeners:
            self.bytes_written += len(block.pcm16) * len(listeners)
            self.frames_written += block.frames
        return True

    def subscribe(self) -> _Listener | None:
        with self._lock:
            if len(self._listeners) >= self.max_listeners or self.state != SinkState.RUNNING:
                return None
            listener = _Listener(int(LISTENER_QUEUE_SECONDS * self.sample_rate * 4))
            self._listeners.append(listener)
            self.listeners_total += 1
            return listener

    def unsubscribe(self, listener: _Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)

    def wav_header(self) -> bytes:
        """A 16-bit stereo WAV header whose sizes say 'as long as it gets' (0xFFFFFFFF)."""
        rate, channels, width = self.sample_rate, 2, 2
        return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
                + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * width,
                                        channels * width, 8 * width)
                + b"data" + struct.pack("<I", 0xFFFFFFFF))

    def snapshot(self) -> SinkSnapshot:
        running = self.state == SinkState.RUNNING
        return SinkSnapshot(self.name, self.kind, self.state, healthy=running, connected=False,
                            bytes_written=self.bytes_written, frames_written=self.frames_written,
                            detail={"listeners": self.listeners, "listeners_total": self.listeners_total})


# ----------------------------------------------------------------------------- metrics


class StatusCollector:
    """Prometheus metrics read from the provider's status snapshot at scrape time."""

    def __init__(self, provider: StatusProvider) -> None:
        self.provider = provider

    def collect(self) -> Iterator[Any]:
        yield from status_metrics(self.provider.snapshot())


def status_metrics(status: StatusSnapshot) -> Iterator[Any]:
    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, value=value)

    clock, buffer, counters = status.clock, status.buffer, status.counters
    checkpoint, playing = status.checkpoint, status.now_playing or NowPlaying()
    yield gauge("chiplofi_uptime_seconds", "Seconds since the daemon started", status.uptime_seconds)
    yield counter("chiplofi_audio_seconds", "Seconds of audio played (stream time)", clock.position_seconds)
    yield gauge("chiplofi_clock_advancing", "1 while the clock releases audio", int(clock.advancing))
    yield gauge("chiplofi_clock_lag_seconds", "How far playback is behind schedule", clock.lag_seconds)
    yield counter("chiplofi_clock_resyncs", "Times the clock re-anchored after a stall", clock.resyncs)
    yield gauge("chiplofi_buffer_ahead_seconds", "Seconds of music composed ahead of playback", buffer.ahead_seconds)
    yield gauge("chiplofi_buffer_target_seconds", "Seconds of music the composer keeps ahead", buffer.target_seconds)
    for key, doc in (("underruns", "Bars the composer did not deliver in time (fallback played)"),
                     ("fallback_bars", "Fallback bars played"),
                     ("composer_errors", "Composer exceptions and rejected bars"),
                     ("nonfinite_samples", "NaN/Inf samples replaced"),
                     ("bars_played", "Bars played"),
                     ("bars_composed", "Bars composed"),
                     ("pcm_underruns", "Audio blocks the renderer did not deliver in time"),
                     ("archive_errors", "Tracks the archive could not write (or dropped)"),
                     ("bars_dropped_on_swap", "Queued bars of an old model dropped when a new one took over")):
        yield counter(f"chiplofi_{key}", doc, getattr(counters, key))
    reloads = CounterMetricFamily("chiplofi_reloads", "Checkpoint reloads (SIGHUP) by result", labels=["result"])
    reloads.add_metric(["ok"], checkpoint.reloads)
    reloads.add_metric(["failed"], checkpoint.reload_failures)
    yield reloads
    info = InfoMetricFamily("chiplofi_checkpoint", "The loaded composer / checkpoint")
    info.add_metric([], {"id": checkpoint.id})
    yield info
    playing_info = InfoMetricFamily("chiplofi_now_playing", "What is playing")
    playing_info.add_metric([], {"track_id": playing.track_id, "key": playing.key, "section": playing.section,
                                 "composer_id": playing.composer_id})
    yield playing_info
    yield gauge("chiplofi_tempo_bpm", "Tempo of the bar playing", playing.tempo_bpm or 0.0)

    labels = ["sink", "kind"]
    families = {
        "up": GaugeMetricFamily("chiplofi_sink_healthy", "1 while the output works", labels=labels),
        "connected": GaugeMetricFamily("chiplofi_sink_connected", "1 while the output delivers", labels=labels),
        "restarts": CounterMetricFamily("chiplofi_sink_restarts", "Output restarts", labels=labels),
        "bytes": CounterMetricFamily("chiplofi_sink_bytes", "PCM bytes delivered to the output", labels=labels),
        "dropped": CounterMetricFamily("chiplofi_sink_dropped_frames", "Audio frames the output dropped",
                                       labels=labels),
        "queued": GaugeMetricFamily("chiplofi_sink_queued_seconds", "Audio waiting for the output", labels=labels),
    }
    for sink in status.sinks:
        values = [sink.name, sink.kind]
        families["up"].add_metric(values, int(sink.healthy))
        families["connected"].add_metric(values, int(sink.connected))
        families["restarts"].add_metric(values, sink.restarts)
        families["bytes"].add_metric(values, sink.bytes_written)
        families["dropped"].add_metric(values, sink.frames_dropped)
        families["queued"].add_metric(values, sink.queued_seconds)
    yield from families.values()


# ----------------------------------------------------------------------------- HTTP


@dataclass
class _Context:
    provider: StatusProvider
    registry: CollectorRegistry
    hub: LiveAudioHub | None
    archive: TrackSource | None
    page: bytes
    stopping: threading.Event
    thumbnail: Path | None = None


def _page() -> bytes:
    return resources.files("streamer").joinpath("status_page.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "chiplofi"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_SECONDS
    context: _Context  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http %s " + format, self.address_string(), *args)

    # The read timeout restarts with every byte: a client trickling its request (slowloris) would
    # hold a connection slot for ever, and `status.max_clients` of them would shut everyone out.
    # Each request gets HEADER_SECONDS for its request line and headers in full.
    def handle_one_request(self) -> None:
        self._header_deadline = threading.Timer(HEADER_SECONDS, self._drop_slow_client)
        self._header_deadline.daemon = True
        self._header_deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._header_deadline.cancel()

    def parse_request(self) -> bool:
        try:
            return super().parse_request()  # reads the headers
        finally:
            self._header_deadline.cancel()

    def _drop_slow_client(self) -> None:
        log.debug("http %s: request not complete after %g s; closing", self.address_string(), HEADER_SECONDS)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler answers an unknown method with 501; a method we do not allow is 405.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _send(self, status: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, value: Any, head: bool, status: int = 200) -> None:
        self._send(status, (json.dumps(value, indent=1) + "\n").encode(), "application/json", head)

    def _dispatch(self, head: bool) -> None:
        path, _, query = self.path.split("#", 1)[0].partition("?")
        context = self.context
        try:
            if path == "/":
                self._send(200, context.page, "text/html; charset=utf-8", head)
            elif path == "/status":
                self._json(context.provider.status(), head)
            elif path == "/bars":
                self._json(context.provider.recent_bars(), head)
            elif path == "/metrics":
                self._send(200, generate_latest(context.registry), CONTENT_TYPE_LATEST, head)
            elif path in ("/healthz", "/readyz"):
                ok, reason = (context.provider.health() if path == "/healthz" else context.provider.readiness())
                self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8", head)
            elif path == "/live.wav" and context.hub is not None:
                self._live(head)
            elif path == "/tracks" and context.archive is not None:
                self._tracks(context.archive, query, head)
            elif path.startswith("/tracks/") and context.archive is not None:
                self._track_file(context.archive, path[len("/tracks/"):], head)
            elif path == "/thumbnail.jpg" and context.thumbnail is not None:
                self._thumbnail(context.thumbnail, head)
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:  # a bug in one request must not take the server down
            log.exception("status request %s failed", path)
            self.close_connection = True

    def _tracks(self, archive: TrackSource, query: str, head: bool) -> None:
        values = urllib.parse.parse_qs(query, keep_blank_values=True).get("limit", [str(TRACKS_DEFAULT)])
        # ASCII digits only: "²" and "①" are digits to str.isdigit() but not to int().
        if not (values[-1].isascii() and values[-1].isdigit() and 1 <= int(values[-1]) <= TRACKS_MAX):
            self._send(400, f"limit: expected a whole number from 1 to {TRACKS_MAX}\n".encode(),
                       "text/plain; charset=utf-8", head)
            return
        self._json(archive.recent(int(values[-1])), head)

    def _track_file(self, archive: TrackSource, name: str, head: bool) -> None:
        # `name` is the raw path: nothing is decoded, and the archive takes only its own file names.
        path = archive.file_for(name)
        try:
            body = path.read_bytes() if path is not None else None
        except OSError:  # deleted by the archive's bound since it was found
            body = None
        if body is None:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
            return
        if name.endswith(".json"):
            self._send(200, body, "application/json", head)
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/midi")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Disposition", f'attachment; filename="chiplofi-{name}"')
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _thumbnail(self, path: Path, head: bool) -> None:
        try:
            body = path.read_bytes()  # ffmpeg replaces it whole (atomic_writing): never a half frame
        except OSError:
            body = b""
        if not body:
            self._send(404, b"no thumbnail yet\n", "text/plain; charset=utf-8", head)
            return
        self._send(200, body, "image/jpeg", head)

    def _live(self, head: bool) -> None:
        hub = self.context.hub
        assert hub is not None
        if head:
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.end_headers()
            return
        listener = hub.subscribe()
        if listener is None:
            self._send(503, b"too many listeners\n", "text/plain; charset=utf-8", head)
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(hub.wav_header())
            while not self.context.stopping.is_set() and not listener.closed:
                data = listener.pop(timeout=1.0)
                if data:
                    self.wfile.write(data)
        finally:
            hub.unsubscribe(listener)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], handler: type[_Handler], max_clients: int) -> None:
        if ":" in addr[0]:  # an IPv6 address ("::1"): the class default is IPv4
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)
        self._slots = threading.BoundedSemaphore(max_clients)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("status connection from %s failed", client_address, exc_info=True)


class StatusServer:
    """Runs the HTTP server in its own thread."""

    def __init__(self, addr: tuple[str, int], provider: StatusProvider, hub: LiveAudioHub | None = None,
                 max_clients: int = 32, archive: TrackSource | None = None, thumbnail: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(provider))  # type: ignore[arg-type]
        self._stopping = threading.Event()
        context = _Context(provider, self.registry, hub, archive, _page(), self._stopping, thumbnail)
        handler = type("StatusHandler", (_Handler,), {"context": context})
        self._server = _Server(addr, handler, max_clients)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="status-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def serve_status(settings: StatusSettings, provider: StatusProvider, sample_rate: int, *,
                 archive: TrackSource | None = None,
                 thumbnail: Path | None = None) -> tuple[StatusServer, LiveAudioHub]:
    """Start the status server `[status]` asks for, with its live audio hub (a sink, not started)."""
    hub = LiveAudioHub(sample_rate, settings.max_listeners)
    host, port = parse_addr(settings.addr)
    try:
        server = StatusServer((host, port), provider, hub, settings.max_clients, archive=archive, thumbnail=thumbnail)
    except OSError as exc:
        raise ConfigError(f"status.addr: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    server.start()
    host, port = server.address
    log.info("status page at http://%s:%d/", host, port)
    return server, hub
