"""Bad input through the real commands and the real daemon, property-based (hypothesis).

- `chiplofi config check FILE` on invalid values drawn from the settings metadata (the in-process
  validator gets many more in tests/unit/test_bad_config.py): exit 2 and one stderr line that
  names the key.
- MIDI: random bytes, truncated real files from ../shared/data, valid headers with garbage
  tracks, and well-formed files with hostile tempos and timings. `render` gives one clear
  error line (or renders); `train` and `eval` use the folder's good files and count the bad.
- The status server of a running daemon: random methods, paths, headers and bodies, over
  http.client and raw sockets (malformed request lines, huge headers, partial requests held
  open): 4xx or a closed connection, never another 5xx (505 is the answer to an HTTP version
  above 1.x), never a failed request in the log, and /healthz still answers afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from models.midi_lib import pretty_midi  # noqa: E402
from streamer.config import Config  # noqa: E402
from streamer.errors import ChiplofiError  # noqa: E402
from streamer.offline import render_midi_file  # noqa: E402
from testkit.config_cases import leaf_and_invalid_value, nest, toml_document
from testkit.waiting import free_port, status, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def chiplofi(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_error_line(result: subprocess.CompletedProcess, code: int, prefix: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- config check


@settings(FUZZ, max_examples=12)
@given(leaf_and_invalid_value())
def test_config_check_names_the_bad_key_in_one_line(tmp_path, case):
    leaf, value = case
    path = tmp_path / "bad.toml"
    path.write_text(toml_document(nest(leaf.path, value)), encoding="utf-8")
    result = chiplofi("config", "check", str(path))
    assert_one_error_line(result, 2, f"chiplofi: config error: {leaf.key}: ")


LONG_NAME = "n" * 256  # one byte over NAME_MAX


@pytest.mark.parametrize("key, value", [
    ("stream.key_file", "/tmp/k\\u0000ey"), ("stream.state_dir", "/tmp/st\\u0000ate"),
    ("stream.outputs", ["/tmp/o\\u0000ut.wav"]), ("stream.outputs", ["/tmp/o\\u0000ut.mkv"]),
    ("stream.key_file", f"/tmp/{LONG_NAME}"), ("stream.state_dir", f"/tmp/{LONG_NAME}/x"),
    ("stream.outputs", [f"/tmp/{LONG_NAME}.flv"]), ("stream.checkpoint", f"/tmp/{LONG_NAME}"),
])
@pytest.mark.parametrize("command", [("config", "check"), ("stream", "--duration", "1", "--config")])
def test_paths_with_a_nul_or_a_name_over_255_bytes_are_one_line_exit_2(tmp_path, key, value, command):
    table, name = key.split(".")
    shown = "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f'"{value}"'
    path = tmp_path / "bad.toml"
    path.write_text(f"[{table}]\n{name} = {shown}\n", encoding="utf-8")
    result = chiplofi(*command, str(path))
    assert_one_error_line(result, 2, f"chiplofi: config error: {key}: ")
    assert len(result.stderr) < 500


def test_a_100_mb_value_is_a_short_error(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text('[status]\naddr = "' + "y" * 100_000_000 + '"\n', encoding="utf-8")
    result = chiplofi("config", "check", str(path))
    assert_one_error_line(result, 2, "chiplofi: config error: status.addr: ")
    assert len(result.stderr) < 500 and "100000002 characters" in result.stderr


def test_a_config_path_that_is_a_directory_is_exit_2(tmp_path):
    for command in (("config", "check"), ("stream", "--duration", "1", "--config")):
        assert_one_error_line(chiplofi(*command, str(tmp_path)), 2, f"chiplofi: config error: {tmp_path}: ")


# ----------------------------------------------------------------------------- MIDI files


def vlq(number: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [number & 0x7F]
    number >>= 7
    while number:
        out.append(0x80 | (number & 0x7F))
        number >>= 7
    return bytes(reversed(out))


def chunk(kind: bytes, body: bytes, length: int | None = None) -> bytes:
    return kind + struct.pack(">I", len(body) if length is None else length) + body


def midi_file(tracks: list[bytes], *, fmt: int = 1, division: int = 480, count: int | None = None) -> bytes:
    header = chunk(b"MThd", struct.pack(">HHH", fmt, len(tracks) if count is None else count, division))
    return header + b"".join(chunk(b"MTrk", track + b"\x00\xff\x2f\x00") for track in tracks)


midi_events = st.one_of(
    st.tuples(st.integers(0x80, 0xEF), st.integers(0, 127), st.integers(0, 127)).map(
        lambda t: bytes(t) if not 0xC0 <= t[0] <= 0xDF else bytes(t[:2])),
    st.integers(0, 2**24 - 1).map(lambda us: b"\xff\x51\x03" + us.to_bytes(3, "big")),  # tempo, 0 µs included
    st.tuples(st.integers(0, 255), st.integers(0, 255)).map(lambda t: b"\xff\x58\x04" + bytes([*t, 24, 8])),
    st.binary(max_size=8),  # not an event at all
)
tracks = st.lists(st.tuples(st.one_of(st.integers(0, 960), st.integers(0, 0x0FFFFFFF)), midi_events),
                  max_size=30).map(lambda events: b"".join(vlq(delta) + event for delta, event in events))


@st.composite
def garbage_midi(draw: st.DrawFn) -> bytes:
    """A MIDI header, then tracks of random events, lengths that may lie, odd division/count."""
    body = draw(st.lists(tracks, max_size=4))
    division = draw(st.one_of(st.integers(0, 0x7FFF), st.integers(0x8000, 0xFFFF)))
    count = draw(st.one_of(st.none(), st.integers(0, 0xFFFF)))
    data = midi_file(body, fmt=draw(st.integers(0, 3)), division=division, count=count)
    if draw(st.booleans()):  # a lying chunk length
        at = draw(st.integers(14, max(14, len(data) - 4)))
        data = data[:at] + draw(st.binary(min_size=4, max_size=4)) + data[at + 4:]
    return data


def real_midi_files() -> list[Path]:
    files = sorted((SHARED_DATA / "lofi").glob("*.mid"))
    assert files, f"no MIDI files in {SHARED_DATA / 'lofi'}: the shared data is missing"
    return files[:20]


@st.composite
def truncated_real_midi(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(real_midi_files())).read_bytes()
    return data[:draw(st.integers(0, len(data) - 1))]


def note_track(delta_to_off: int, *, tempo_us: int | None = None) -> bytes:
    tempo = b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big") if tempo_us is not None else b""
    return tempo + b"\x00\x90\x3c\x40" + vlq(delta_to_off) + b"\x80\x3c\x00"


# Well-formed files whose timing is absurd: years of music, or millions of microsecond beats.
HOSTILE = {
    "years.mid": midi_file([note_track(9_999_999, tempo_us=2**24 - 1)], division=1),
    "microbeats.mid": midi_file([note_track(9_999_999, tempo_us=1)], division=1),
    "tempo0.mid": midi_file([note_track(480, tempo_us=0)]),
    "division0.mid": midi_file([note_track(480)], division=0),
}


def corrupt_files(real_file: Path, seed: int) -> dict[str, bytes]:
    """File name → bytes no reader can take as music: noise, a real file cut short, a valid header
    over garbage tracks, nothing at all, and the HOSTILE ones."""
    real, rng = real_file.read_bytes(), random.Random(seed)
    return {"random.mid": bytes(rng.randrange(256) for _ in range(600)), "truncated.mid": real[:len(real) // 2],
            "garbage-tracks.mid": midi_file([bytes(rng.randrange(256) for _ in range(250))] * 3),
            "empty.mid": b"", **HOSTILE}


@settings(FUZZ, max_examples=150)
@given(st.one_of(st.binary(max_size=2000), garbage_midi(), truncated_real_midi(),
                 st.sampled_from(list(HOSTILE.values()))))
def test_render_reads_any_bytes_as_music_or_an_input_error(tmp_path, data):
    path = tmp_path / "in.mid"
    path.write_bytes(data)
    try:
        seconds = render_midi_file(path, tmp_path / "out.wav", Config(), progress=False)
    except ChiplofiError as error:
        message = str(error)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
    else:
        assert 0 <= seconds <= 4 * 3600 + 2


def test_render_command_gives_one_line_for_corrupt_files(tmp_path):
    for name, data in corrupt_files(real_midi_files()[0], seed=6).items():
        path = tmp_path / name
        path.write_bytes(data)
        result = chiplofi("render", str(path), "-o", str(tmp_path / "out.wav"), "-q")
        assert_one_error_line(result, 1, f"chiplofi: error: {path}: ")


def write_song(path: Path, number: int) -> None:
    """A small good song, its own for each number: eight 4/4 bars of chords and bass."""
    tempo = 80 + number
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    piano, bass = pretty_midi.Instrument(0), pretty_midi.Instrument(33)
    for bar in range(8):
        root = [60, 57, 65, 67][(bar + number) % 4] + number // 4
        start = bar * 4 * 60 / tempo
        piano.notes += [pretty_midi.Note(80, pitch, start, start + 1.2) for pitch in (root, root + 4, root + 7)]
        bass.notes.append(pretty_midi.Note(90, root - 24, start, start + 2.4))
    midi.instruments += [piano, bass]
    midi.write(str(path))


@pytest.fixture
def mixed_folder(tmp_path, monkeypatch) -> tuple[Path, int, int]:
    """A folder of good songs and corrupt files: (folder, good, bad). The data cache is the
    test's own: the folder's content, and so its cache key, is the same in every run."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "songs"
    folder.mkdir()
    good = 10
    for number in range(good):
        write_song(folder / f"song{number}.mid", number)
    bad = corrupt_files(real_midi_files()[1], seed=7)
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return folder, good, len(bad)


def test_train_uses_the_good_files_and_counts_the_bad(tmp_path, mixed_folder):
    folder, good, bad = mixed_folder
    out = tmp_path / "run"
    result = chiplofi("train", "--data", str(folder), "--out", str(out), "--epochs", "1", "--minutes", "1",
                      "--threads", "1", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "vae.safetensors").exists() and (out / "lstm.safetensors").exists()
    skipped = json.loads((out / "train_config.json").read_text())["skipped"]
    assert sum(skipped.values()) == bad, skipped


def test_eval_uses_the_good_files_and_counts_the_bad(tmp_path, mixed_folder):
    folder, good, bad = mixed_folder
    report = tmp_path / "eval.json"
    training = tmp_path / "training"  # what the baselines learn from: other songs
    training.mkdir()
    for number in range(20, 24):
        write_song(training / f"song{number}.mid", number)
    result = chiplofi("eval", "--data", str(folder), "--train-data", str(training), "--minutes", "0.5",
                      "--json", str(report), "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(report.read_text())["data"]
    assert data["songs"] == good and sum(data["skipped"].values()) == bad, data


def test_eval_on_a_folder_of_only_bad_files_is_one_line(tmp_path, mixed_folder):
    folder, good, _ = mixed_folder
    for number in range(good):
        (folder / f"song{number}.mid").unlink()
    result = chiplofi("eval", "--data", str(folder), "--train-data", str(folder), "--minutes", "0.5", "--no-progress")
    assert_one_error_line(result, 1, "chiplofi: error: ")
    assert str(folder) in result.stderr


# ----------------------------------------------------------------------------- status server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A real paced daemon (rule-based composer, null output) with its status server."""
    tmp = tmp_path_factory.mktemp("status-fuzz")
    port = free_port()
    log = tmp / "daemon.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", "stream", "--checkpoint", "rule-based",
                                 "--output", "null", "--status-addr", f"127.0.0.1:{port}"], cwd=ROOT,
                                env={**os.environ, "CHIPLOFI_STREAM__STATE_DIR": str(tmp / "state"),
                                     "CHIPLOFI_STATUS__MAX_CLIENTS": "8"},
                                stdout=subprocess.DEVNULL, stderr=log_file)
    assert wait_for(lambda: healthz(port) == 200, 60), log.read_text()
    yield port, log, proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "status request" not in text and "Traceback" not in text, text[-5000:]


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return response.status


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, read the reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading everything
            pass
        reply = b""
        while True:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            reply += part
        return reply


def status_codes(reply: bytes) -> list[int]:
    """Every HTTP status line in `reply` (keep-alive answers several requests), or the code of the
    stdlib's error page when an HTTP/0.9-style request got no status line."""
    codes = [int(line.split()[1]) for line in reply.split(b"\r\n")
             if line.startswith(b"HTTP/1.") and len(line.split()) >= 2 and line.split()[1].isdigit()]
    if not codes and b"Error code: " in reply:
        codes.append(int(reply.split(b"Error code: ")[1][:3]))
    return codes


def acceptable(code: int, request_line: bytes) -> bool:
    """2xx-4xx; 503 from /healthz and /readyz (their answer when not healthy / not ready); 505
    for an HTTP version above 1.x."""
    words = request_line.split(b" ")
    version = words[-1] if len(words) >= 3 else b""
    newer = version.startswith(b"HTTP/") and version[5:6].isdigit() and int(version[5:6]) >= 2
    probe = len(words) >= 2 and words[1].split(b"?")[0] in (b"/healthz", b"/readyz")
    return 200 <= code < 500 or (code == 505 and newer) or (code == 503 and probe)


methods = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT"]),
                    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12))
paths = st.one_of(st.sampled_from(["/", "/status", "/bars", "/metrics", "/healthz", "/readyz", "/tracks",
                                   "/tracks?limit=-1", "/tracks?limit=99999999999999999999", "/tracks/../../etc/passwd",
                                   "/tracks/%2e%2e%2fetc", "/live.wav?x", "//status", "/status?" + "a" * 5000]),
                  st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                          max_size=80).map(lambda p: "/" + p))
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ", min_size=1, max_size=20)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)


@settings(FUZZ, max_examples=120)
@given(methods, paths, st.dictionaries(header_names, header_values, max_size=6), st.binary(max_size=3000))
def test_random_requests_get_4xx_or_an_answer_never_a_server_error(daemon, method, path, headers, body):
    port = daemon[0]
    if path.startswith("/live.wav") and method in ("GET", "POST"):
        path = "/live.wav/x"  # the live stream never ends: it has its own test
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        assert acceptable(response.status, f"{method} {path} HTTP/1.1".encode()), (method, path, response.status)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        pass  # closed without an answer: allowed for what the server cannot parse
    finally:
        conn.close()
    assert healthz(port) == 200


versions = st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1x", "HTCPCP/1.0", "HTTP/1", ""])
request_lines = st.one_of(
    st.binary(max_size=300),
    st.tuples(methods, paths, versions).map(lambda t: " ".join(t).strip().encode()),
)


@settings(FUZZ, max_examples=120)
@given(request_lines, st.lists(st.binary(max_size=120), max_size=8), st.binary(max_size=500))
def test_malformed_raw_requests_never_crash_the_server(daemon, request_line, header_lines, body):
    port = daemon[0]
    headers = b"".join(line.replace(b"\n", b" ") + b"\r\n" for line in header_lines)
    data = request_line + b"\r\n" + headers + b"\r\n" + body
    data = data.replace(b"/live.wav", b"/live.wax")  # the live stream never ends: it has its own test
    reply = raw_exchange(port, data)
    first_line = request_line.split(b"\r")[0].split(b"\n")[0]
    for code in status_codes(reply):
        assert acceptable(code, first_line), (data[:200], reply[:300])
    assert healthz(port) == 200


@pytest.mark.parametrize("data", [
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",  # a request line over the limit
    b"GET /status HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n",  # one huge header
    b"GET /status HTTP/1.1\r\n" + b"X-Many: y\r\n" * 500 + b"\r\n",  # too many headers
    b"GET /status HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nshort",  # a body that never comes
    b"GET /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x00" * 10_000 + b"\r\n\r\n",
], ids=["long-line", "huge-header", "many-headers", "lying-length", "bad-chunked", "nul-bytes"])
def test_oversized_and_lying_requests_get_4xx_or_close(daemon, data):
    port = daemon[0]
    for code in status_codes(raw_exchange(port, data)):
        assert acceptable(code, data.split(b"\r\n")[0]), code
    assert healthz(port) == 200


def test_partial_requests_held_open_do_not_stop_the_server_or_the_stream(daemon):
    """Slowloris-like clients trickling a request keep their connection (up to status.max_clients,
    here 8, then 503); the others are still answered and the audio clock keeps running."""
    port = daemon[0]
    position = lambda: status(port)["clock"]["position_seconds"]  # noqa: E731
    before = position()
    slow = []
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            slow.append(sock)
        for round_ in range(3):
            for sock in slow:
                sock.sendall(b"X-Wait: %d\r\n" % round_)
            assert healthz(port) == 200
        assert wait_for(lambda: position() > before + 0.5, 10)
    finally:
        for sock in slow:
            sock.close()
    assert wait_for(lambda: healthz(port) == 200, 10)


def test_clients_trickling_a_request_into_every_slot_are_dropped(daemon):
    """Slowloris: as many clients as status.max_clients (8 here) each start a request and then
    send one byte of a header line every second, never finishing it (within every limit on
    header count and line length, and every read's timeout). They hold every slot, so others get
    503 at first; each request has a deadline for its headers (streamer.status.HEADER_SECONDS),
    after which the server drops it and answers others again while the trickling goes on."""
    port = daemon[0]
    stop = threading.Event()
    dropped: list[socket.socket] = []
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]

    def trickle() -> None:
        count = 0
        while not stop.wait(1.0):
            count += 1
            for sock in slow:
                if sock in dropped:
                    continue
                try:
                    sock.sendall(b"GET /status HTTP/1.1\r\nX-Wait: " if count == 1 else b"z")
                except OSError:
                    dropped.append(sock)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: healthz(port) == 200, 60)
        assert wait_for(lambda: len(dropped) == len(slow), 60), f"{len(dropped)} of {len(slow)} dropped"
        assert healthz(port) == 200
    finally:
        stop.set()
        thread.join(5)
        for sock in slow:
            sock.close()


def test_the_daemon_is_still_streaming_after_the_fuzzing(daemon):
    port, log, proc = daemon
    assert proc.poll() is None, log.read_text()[-3000:]
    state = status(port)
    assert state["state"] == "running" and state["clock"]["advancing"], state
    assert healthz(port) == 200
