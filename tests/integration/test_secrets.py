"""The stream key never leaks: the real `chiplofi stream` publishes with a key to a real
nginx-rtmp (the receiver plays `live/<key>`, so bytes arriving prove the key was used), and
everything the daemon says or writes is searched for it.

Searched: every stderr line (at debug level, through a SIGHUP reload, a SIGUSR1 stack dump, a
dead second ingest whose errors name its URL, and an ffmpeg killed and restarted), every status
endpoint, the daemon's command line, thread names and — for the key-file variant — environment,
its ffmpeg's environment, every file under the state directory and the recorded video file.

Known and documented (docs/RELIABILITY.md, "Secrets"): the ingest URL with the key is an
argument of the ffmpeg child (ffmpeg reads it from nowhere else), so /proc/<ffmpeg>/cmdline
holds it; the test allows it there and nowhere else. With $CHIPLOFI_STREAM_KEY, the daemon's
own /proc/<pid>/environ holds it too (readable by its user and root only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testkit.procfs import children
from testkit.receiver import Receiver, require_tools
from testkit.waiting import free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY = "chiplofi-secret-5f3a-9k2q-7zz1"
ENDPOINTS = ("/", "/status", "/bars", "/metrics", "/healthz", "/readyz", "/tracks", "/live.wav")


def fetch(port: int, path: str) -> bytes:
    """Up to 256 KiB of `path` (the live audio never ends), whatever the status code."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.read(256 * 1024)
    except urllib.error.HTTPError as error:
        return error.read()


def proc_file(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def ffmpeg_pid(port: int) -> int:
    status = json.loads(fetch(port, "/status"))
    return next(sink["detail"]["pid"] for sink in status["sinks"] if sink["kind"] == "ffmpeg")


@pytest.mark.parametrize("variant", ["environment", "key_file"])
def test_the_stream_key_is_never_logged_served_or_written(tmp_path, variant):
    require_tools()
    receiver = Receiver(tmp_path / "receiver", KEY)
    status_port, dead_port = free_port(), free_port()
    state, video = tmp_path / "state", tmp_path / "out" / "stream.mkv"
    video.parent.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHIPLOFI_STREAM__STATE_DIR": str(state)}
    env.pop("CHIPLOFI_STREAM_KEY", None)
    if variant == "environment":
        env["CHIPLOFI_STREAM_KEY"] = KEY
        outputs = [receiver.ingest_url, f"rtmp://127.0.0.1:{dead_port}/live"]  # the key is appended
    else:
        key_file = tmp_path / "stream.key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        env["CHIPLOFI_STREAM__KEY_FILE"] = str(key_file)
        outputs = [receiver.ingest_url + "/{key}", f"rtmp://127.0.0.1:{dead_port}/live/{{key}}?x=1"]
    outputs.append(str(video))
    log = tmp_path / "daemon.log"
    args = [sys.executable, "-m", "streamer.cli", "-v", "stream", "--status-addr", f"127.0.0.1:{status_port}"]
    for output in outputs:
        args += ["--output", output]
    with open(log, "wb") as log_file:
        daemon = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    seen: dict[str, bytes] = {}
    try:
        assert receiver.wait_for_bytes(50_000, timeout=60), f"nothing published under the key:\n{log.read_text()}"
        assert wait_for(lambda: fetch(status_port, "/healthz").startswith(b"ok"), 30), log.read_text()

        # More to log: a reload, a stack dump, a killed ffmpeg and its restart.
        daemon.send_signal(signal.SIGHUP)
        daemon.send_signal(signal.SIGUSR1)
        first_ffmpeg = ffmpeg_pid(status_port)
        seen[f"ffmpeg {first_ffmpeg} cmdline"] = proc_file(first_ffmpeg, "cmdline")
        seen[f"ffmpeg {first_ffmpeg} environ"] = proc_file(first_ffmpeg, "environ")
        os.kill(first_ffmpeg, signal.SIGKILL)
        assert wait_for(lambda: ffmpeg_pid(status_port) not in (None, first_ffmpeg), 30), log.read_text()
        assert receiver.wait_for_bytes(50_000, timeout=60), f"no data after the ffmpeg restart:\n{log.read_text()}"
        assert wait_for(lambda: b"reload validated" in log.read_bytes() or b"reload failed" in log.read_bytes(), 60)

        for path in ENDPOINTS:
            seen[f"GET {path}"] = fetch(status_port, path)
        for pid in [daemon.pid, *children(daemon.pid)]:
            seen[f"pid {pid} cmdline"] = proc_file(pid, "cmdline")
            seen[f"pid {pid} environ"] = proc_file(pid, "environ")
            for task in Path(f"/proc/{pid}/task").glob("*"):
                seen[f"pid {pid} thread {task.name}"] = proc_file(pid, f"task/{task.name}/comm")
        assert any(name.startswith(f"pid {daemon.pid} ") for name in seen)
        assert children(daemon.pid), "no ffmpeg child found"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        receiver.close()
    assert code == 0, log.read_text()
    seen["stderr"] = log.read_bytes()
    assert b"ffmpeg started" in seen["stderr"] and b"<redacted>" in seen["stderr"]  # URLs were logged, redacted
    # One video file per ffmpeg (stream.mkv, then stream-1.mkv after the kill; the killed one may
    # have had nothing on disk yet: Matroska writes 5 s clusters).
    videos = sorted(video.parent.glob("stream*.mkv"))
    for path in [*state.rglob("*"), *videos]:
        if path.is_file():
            seen[f"file {path}"] = path.read_bytes()
    assert len(videos) == 2 and sum(path.stat().st_size for path in videos) > 10_000, videos
    for path in videos:
        tags = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", str(path)],
                              capture_output=True, timeout=60)
        seen[f"recording metadata {path.name}"] = tags.stdout + tags.stderr

    found = {name for name, data in seen.items() if KEY.encode() in data}
    if variant == "environment":  # the search sees the key where it is: its absence elsewhere means something
        assert f"pid {daemon.pid} environ" in found
    # Allowed: the ffmpeg children's command lines (documented); with the environment variant,
    # the daemon's own environment (it was started with the key there).
    ffmpeg_cmdlines = {name for name in found if name.endswith("cmdline") and b"ffmpeg" in seen[name]}
    allowed = ffmpeg_cmdlines | ({f"pid {daemon.pid} environ"} if variant == "environment" else set())
    assert found <= allowed, f"the stream key leaked into: {sorted(found - allowed)}"
    assert f"pid {daemon.pid} cmdline" not in found
    assert not any(name.endswith("environ") and name != f"pid {daemon.pid} environ" for name in found)
