"""systemd's notifications from the real `chiplofi stream` on a real NOTIFY_SOCKET, streaming to a
real nginx-rtmp: READY=1 once the buffer is prefilled, WATCHDOG=1 while the stream reaches its
ingest, none while the ingest is down (every output dead: systemd would restart the service),
WATCHDOG=1 again once it is back, STOPPING=1 on SIGTERM.

(A composer stuck for longer than the buffer lasts is shown through the Daemon API with a
stand-in composer: tests/unit/test_daemon_watchdog.py.)"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testkit.receiver import Nginx, require_tools
from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY = "watchdog-key-4411"
WATCHDOG_USEC = 1_000_000  # systemd's WatchdogSec=1s: the daemon pings every 0.5 s
PING_SECONDS = WATCHDOG_USEC / 2e6
BUFFER_SECONDS = 20.0


class NotifySocket:
    """The datagram socket systemd listens on (NOTIFY_SOCKET): keeps (arrival time, message)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()

    def received(self, message: str, since: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if m == message and t >= since]


def ffmpeg_sink(port: int) -> dict:
    return next(sink for sink in status(port)["sinks"] if sink["kind"] == "ffmpeg")


def test_ready_after_prefill_and_watchdog_only_while_an_output_works(tmp_path):
    require_tools()
    nginx = Nginx(tmp_path / "nginx")
    notify = NotifySocket(tmp_path / "notify.sock")
    status_port = free_port()
    log = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": str(notify.path),
           "WATCHDOG_USEC": str(WATCHDOG_USEC), "CHIPLOFI_STREAM_KEY": KEY,
           "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state"),
           "CHIPLOFI_STREAM__BUFFER_SECONDS": str(BUFFER_SECONDS), "CHIPLOFI_STREAM__PREFILL_TIMEOUT_SECONDS": "60",
           # A new ffmpeg counts as healthy for stall_seconds before it has to show progress.
           "CHIPLOFI_SINKS__STALL_SECONDS": "2", "CHIPLOFI_SINKS__TARGET_RETRY_SECONDS": "0.5"}
    with open(log, "wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "stream", "--speed", "2", "--checkpoint", "rule-based",
             "--output", f"rtmp://127.0.0.1:{nginx.port}/live", "--status-addr", f"127.0.0.1:{status_port}"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        # READY=1 comes first, after the prefill: the log line is written before it is sent.
        assert wait_for(lambda: notify.received("READY=1"), 60), log.read_text()
        prefill = re.search(r"buffer (prefilled|partly filled): ([\d.]+) s ahead", log.read_text())
        assert notify.messages[0][1] == "READY=1"
        assert prefill and prefill[1] == "prefilled" and float(prefill[2]) >= BUFFER_SECONDS - 0.01, prefill
        first = status(status_port)
        assert first["state"] == "running" and first["buffer"]["ahead_seconds"] >= 10.0  # stream.ready_seconds

        # While the ingest takes the stream: WATCHDOG=1 keeps arriving.
        assert wait_for(lambda: ffmpeg_sink(status_port)["connected"], 30), log.read_text()
        connected = time.monotonic()
        assert wait_for(lambda: len(notify.received("WATCHDOG=1", since=connected)) >= 6, 20)

        # The ingest goes down: the only output is dead, so the pings stop.
        nginx.stop()
        assert wait_for(lambda: not ffmpeg_sink(status_port)["healthy"], 20), ffmpeg_sink(status_port)
        dead = time.monotonic()
        restarts = ffmpeg_sink(status_port)["restarts"]
        while time.monotonic() - dead < 8 * PING_SECONDS:  # long enough for systemd's deadline to pass twice
            sink = ffmpeg_sink(status_port)
            assert not sink["healthy"] and sink["restarts"] == restarts and status(status_port)["clock"]["advancing"]
            time.sleep(0.2)
        # A ping decided just before the status said so may still be on its way (one interval).
        assert notify.received("WATCHDOG=1", since=dead + PING_SECONDS) == []

        # The ingest is back on the same port: ffmpeg reconnects and the pings resume.
        nginx.start()
        back = time.monotonic()
        assert wait_for(lambda: len(notify.received("WATCHDOG=1", since=back)) >= 3, 30), ffmpeg_sink(status_port)
        assert ffmpeg_sink(status_port)["connected"]

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        assert wait_for(lambda: notify.received("STOPPING=1"), 5)
    finally:
        kill_if_running(daemon)
        notify.close()
        nginx.stop()
    statuses = [m for _, m in notify.messages if m.startswith("STATUS=")]
    assert statuses and all("\n" not in m for m in statuses)
    assert KEY not in log.read_text()
