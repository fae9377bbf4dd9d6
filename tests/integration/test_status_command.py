"""`chiplofi status` against a real running stream: the terminal view, --json, --watch until Ctrl-C,
and a clear error when nothing answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def chiplofi(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_status_views_of_a_running_stream(tmp_path):
    port = free_port()
    addr = f"127.0.0.1:{port}"
    with open(tmp_path / "stream.log", "wb") as log_file:
        stream = subprocess.Popen([sys.executable, "-m", "streamer.cli", "stream", "--checkpoint", "rule-based",
                                   "--output", "null", "--status-addr", addr], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=log_file,
                                  env={**os.environ, "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state")})
    try:
        playing = wait_for(lambda: status(port)["now_playing"]["track_id"], timeout=60)
        assert playing, (tmp_path / "stream.log").read_text()

        once = chiplofi("status", "--addr", addr)
        assert once.returncode == 0, once.stderr
        lines = {line.split("  ", 1)[0]: line for line in once.stdout.splitlines()}
        assert {"stream", "now playing", "model", "buffer", "outputs", "counters"} <= set(lines)
        snapshot = status(port)
        assert snapshot["now_playing"]["track_id"] in lines["now playing"]
        assert snapshot["now_playing"]["key"] in lines["now playing"] and "BPM" in lines["now playing"]
        assert f"http://{addr}/" in lines["stream"] and snapshot["checkpoint"]["id"] in lines["model"]
        assert "null: running" in lines["outputs"] and "s ahead" in lines["buffer"]
        assert "bars played" in lines["counters"] and "underruns" in lines["counters"]

        as_json = chiplofi("status", "--addr", addr, "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert set(json.loads(as_json.stdout)) == set(snapshot)

        view = tmp_path / "watch.out"
        with open(view, "w") as handle:
            watch = subprocess.Popen([sys.executable, "-m", "streamer.cli", "status", "--addr", addr, "--watch",
                                      "0.2"], cwd=ROOT, stdout=handle, stderr=subprocess.PIPE, text=True)
        try:
            # Redraws keep coming until Ctrl-C, which ends the watch quietly.
            assert wait_for(lambda: view.read_text().count("now playing") >= 3, timeout=30)
            watch.send_signal(signal.SIGINT)
            _, err = watch.communicate(timeout=10)
        finally:
            kill_if_running(watch)
        assert watch.returncode == 0, err
        assert "Traceback" not in err
    finally:
        stream.send_signal(signal.SIGTERM)
        try:
            stream.wait(timeout=15)
        finally:
            kill_if_running(stream)


def test_status_when_nothing_answers_says_where_it_looked(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    result = chiplofi("status", "--addr", addr)
    assert result.returncode == 1 and result.stdout == ""
    assert f"no chiplofi stream answers at http://{addr}/status" in result.stderr
    assert "--addr" in result.stderr and "Traceback" not in result.stderr
    # --config: the address of that config's [status] table.
    config = tmp_path / "channel.toml"
    config.write_text(f'[status]\naddr = "{addr}"\n')
    result = chiplofi("status", "--config", str(config))
    assert result.returncode == 1 and f"http://{addr}/status" in result.stderr
