"""Status HTTP server: endpoints, /status and /metrics agree, 404/405, malformed and
excess clients never take it down, live audio stream."""

import dataclasses
import http.client
import json
import socket
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streamer.errors import ConfigError
from streamer.ringbuffer import AudioBlock
from streamer.sinks import SinkSnapshot
from streamer.status import LiveAudioHub, StatusServer, parse_addr
from streamer.status_snapshot import BufferStatus, ClockStatus, StatusCounters, stats_line
from testkit.snapshots import example_snapshot


class FakeProvider:
    def __init__(self) -> None:
        self.healthy = True
        self.position = 12.5
        self.bytes = 1000

    def snapshot(self):
        snapshot = example_snapshot()
        return dataclasses.replace(
            snapshot, clock=dataclasses.replace(snapshot.clock, position_seconds=self.position),
            sinks=[dataclasses.replace(snapshot.sinks[0], bytes_written=self.bytes)])

    def status(self):
        return self.snapshot().to_json()

    def recent_bars(self):
        return [{"track_id": "s0-t0001", "bar": 3, "notes": []}]

    def health(self):
        return (True, "ok") if self.healthy else (False, "clock not advancing")

    def readiness(self):
        return False, "no output connected"


@pytest.fixture
def server():
    provider = FakeProvider()
    hub = LiveAudioHub(44100, max_listeners=2)
    hub.start()
    srv = StatusServer(("127.0.0.1", 0), provider, hub, max_clients=8)
    srv.start()
    yield srv, provider, hub
    hub.stop(1)
    srv.stop()


def _get(srv, path, method="GET"):
    conn = http.client.HTTPConnection(*srv.address, timeout=5)
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type"), body


def test_endpoints(server):
    srv, provider, _ = server
    status, ctype, body = _get(srv, "/status")
    assert status == 200 and ctype == "application/json" and json.loads(body)["checkpoint"]["id"] == "ck-1"
    assert _get(srv, "/healthz")[0] == 200
    provider.healthy = False
    assert _get(srv, "/healthz")[0] == 503
    status, _, body = _get(srv, "/readyz")
    assert status == 503 and b"no output" in body
    status, ctype, body = _get(srv, "/")
    assert status == 200 and ctype.startswith("text/html") and b"/live.wav" in body and b"<canvas" in body
    assert json.loads(_get(srv, "/bars?x=1")[2])[0]["bar"] == 3
    assert _get(srv, "/status", "HEAD")[:2] == (200, "application/json")


@pytest.mark.parametrize("path", ["/nope", "/status/", "/../etc/passwd", "/%00", "/metrics/x", "/live.wav/x"])
def test_unknown_paths_are_404(server, path):
    assert _get(server[0], path)[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO", "TRACE"])
def test_other_methods_are_405(server, method):
    assert _get(server[0], "/status", method)[0] == 405


def test_metrics_agree_with_status(server):
    srv, provider, _ = server
    status, ctype, body = _get(srv, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    snap = provider.status()
    assert samples[("chiplofi_audio_seconds_total", ())] == snap["clock"]["position_seconds"]
    assert samples[("chiplofi_underruns_total", ())] == 5
    assert samples[("chiplofi_nonfinite_samples_total", ())] == 9
    assert samples[("chiplofi_archive_errors_total", ())] == 2
    assert samples[("chiplofi_bars_dropped_on_swap_total", ())] == 9
    assert samples[("chiplofi_reloads_total", (("result", "failed"),))] == 1
    assert samples[("chiplofi_checkpoint_info", (("id", "ck-1"),))] == 1
    labels = (("kind", "ffmpeg"), ("sink", "ffmpeg"))
    assert samples[("chiplofi_sink_restarts_total", labels)] == 4
    assert samples[("chiplofi_sink_bytes_total", labels)] == 1000
    assert samples[("chiplofi_sink_dropped_frames_total", labels)] == 7


def _raw(srv, data: bytes) -> bytes:
    with socket.create_connection(srv.address, timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server already answered and closed
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _is_client_error(reply: bytes, code: bytes = b"4") -> bool:
    """An HTTP/1.x status line with a 4xx code, or (for an HTTP/0.9-style request line, which
    gets no status line) the stdlib's error page with that code; or nothing at all."""
    if reply.startswith(b"HTTP/1."):
        return reply[9:9 + len(code)] == code
    return reply == b"" or b"Error code: " + code in reply


@pytest.mark.parametrize("request_bytes,expected", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET\r\n\r\n", b"400"),
    (b"GET /status HTTP/9.9\r\n\r\n", b"505"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET /status HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", b"431"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)), b"4"),  # a TLS hello
])
def test_malformed_requests_get_an_error_and_the_server_lives(server, request_bytes, expected):
    srv = server[0]
    reply = _raw(srv, request_bytes)
    assert _is_client_error(reply, expected) or (expected == b"505" and b" 505 " in reply[:20])
    assert _get(srv, "/healthz")[0] == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_random_bytes_never_take_the_server_down(server, data):
    srv = server[0]
    reply = _raw(srv, data + b"\r\n\r\n")
    assert _is_client_error(reply) or reply.startswith(b"HTTP/1.0 505") or reply.startswith(b"HTTP/1.1 505")
    assert _get(srv, "/healthz")[0] == 200


def test_too_many_idle_connections_get_503_and_the_server_recovers(server):
    srv = server[0]
    idle = [socket.create_connection(srv.address, timeout=5) for _ in range(8)]  # hold every slot
    try:
        time.sleep(0.2)
        assert b" 503 " in _raw(srv, b"GET /status HTTP/1.0\r\n\r\n")[:20]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if _get(srv, "/healthz")[0] == 200:
                break
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    assert _get(srv, "/healthz")[0] == 200


def test_live_wav_streams_the_current_audio(server):
    srv, _, hub = server
    conn = http.client.HTTPConnection(*srv.address, timeout=5)
    conn.request("GET", "/live.wav")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "audio/wav"
    header = response.read(44)
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert struct.unpack("<HHI", header[20:28]) == (1, 2, 44100)
    assert hub.listeners == 1
    pcm = np.full((1024, 2), 0.25, dtype=np.float32)
    payload = (np.round(pcm * 32767).astype("<i2")).tobytes()
    feeder = threading.Thread(target=lambda: [hub.submit(AudioBlock(pcm, payload, i * 1024, 44100))
                                              for i in range(3)])
    feeder.start()
    data = response.read(len(payload) * 3)
    feeder.join()
    assert data == payload * 3
    response.close()
    conn.close()
    deadline = time.monotonic() + 5
    while hub.listeners and time.monotonic() < deadline:
        hub.submit(AudioBlock(pcm, payload, 0, 44100))  # the handler notices the closed socket on write
        time.sleep(0.05)
    assert hub.listeners == 0


def test_listener_limit(server):
    srv, _, hub = server
    conns = []
    for _ in range(2):
        conn = http.client.HTTPConnection(*srv.address, timeout=5)
        conn.request("GET", "/live.wav")
        assert conn.getresponse().status == 200
        conns.append(conn)
    assert _get(srv, "/live.wav")[0] == 503
    for conn in conns:
        conn.close()


def test_parse_addr():
    assert parse_addr("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_addr("[::1]:0") == ("::1", 0)
    assert parse_addr("[::1]:8080") == ("::1", 8080)
    for bad in ("8080", "host:", ":80", "host:99999", "host:x", "host:²", "[]:80", "host:8080\n"):
        with pytest.raises(ConfigError, match="status.addr"):
            parse_addr(bad)


@pytest.mark.parametrize("limit", ["²", "①", "٣", "%C2%B2", "%E2%91%A0", "1%00", "+5", "%205"])
def test_tracks_limit_that_is_not_ascii_digits_is_a_400(tmp_path, limit):
    from streamer.archive import TrackArchive

    srv = StatusServer(("127.0.0.1", 0), FakeProvider(), archive=TrackArchive(tmp_path, 10, 10**6))
    srv.start()
    try:
        with socket.create_connection(srv.address, timeout=5) as sock:  # the query as raw UTF-8 bytes
            sock.sendall(f"GET /tracks?limit={limit} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400"), reply[:80]
        assert b"\r\n\r\nlimit:" in reply
        assert _get(srv, "/tracks?limit=5")[0] == 200
    finally:
        srv.stop()


def test_the_status_server_listens_on_ipv6_loopback():
    srv = StatusServer(parse_addr("[::1]:0"), FakeProvider())
    srv.start()
    try:
        host, port = srv.address
        conn = http.client.HTTPConnection("::1", port, timeout=5)
        conn.request("GET", "/healthz")
        assert host == "::1" and conn.getresponse().status == 200
        conn.close()
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- the typed snapshot


def test_stats_line_is_one_line_with_the_figures():
    snapshot = example_snapshot(
        uptime_seconds=93784.2, clock=ClockStatus(93780.0, 1.0, True, 0.0, 0), buffer=BufferStatus(29.84, 30.0, 9),
        counters=StatusCounters(tracks_started=812, bars_played=40120, underruns=2, composer_errors=0),
        sinks=[SinkSnapshot("ffmpeg", "ffmpeg", "running", True, True),
               SinkSnapshot("live", "live", "running", True, False)],
        schedule=dataclasses.replace(example_snapshot().schedule, program="night"))
    assert stats_line(snapshot) == ("stats: up 1d 02:03:04, audio 1d 02:03:00; tracks 812, bars 40120, underruns 2, "
                                    "composer errors 0; buffer 29.8 s; sinks: ffmpeg running, live running "
                                    "(not connected); program night")


def test_the_snapshot_json_has_every_section_and_an_empty_now_playing_before_the_first_bar():
    document = example_snapshot(now_playing=None).to_json()
    assert list(document) == ["uptime_seconds", "state", "sample_rate", "now_playing", "buffer", "clock", "checkpoint",
                              "position", "composer", "sinks", "archive", "schedule", "video", "counters"]
    assert document["now_playing"] == {"track_id": "", "title": "", "bar": 0, "section": "", "key": "", "chord": "",
                                       "tempo_bpm": 0.0, "composer_id": "", "fallback": False}
    assert document["video"] == {"enabled": False} and document["sinks"][0]["bytes_written"] == 1000
    assert list(document["counters"])[-1] == "archive_errors" and document["counters"]["underruns"] == 5
    assert json.loads(json.dumps(document)) == document  # plain JSON types only
