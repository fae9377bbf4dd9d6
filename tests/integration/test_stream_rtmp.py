"""The daemon streaming to a real nginx-rtmp on loopback while an ffmpeg receiver records.

One 60-second stream shows, at the receiver: H.264 + AAC, a keyframe every 2 s (± 1 frame), a
duration within 1 s of the wall time, no audio timestamp gap over 50 ms — across a SIGHUP that
swaps the checkpoint (the id in /status changes) and one with a corrupt checkpoint (the id
stays); /status and /metrics agree; SIGTERM ends it with exit code 0 within 5 s.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from waiting import free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx-rtmp.conf"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
STREAM_SECONDS = 60.0
STREAM_KEY = "it-key-5f3a9c"


@pytest.fixture(autouse=True)
def real_tools_present():
    # `make setup` installs them; their absence is a failure, never a skip.
    missing = [tool for tool in ("nginx", "ffmpeg", "ffprobe") if not shutil.which(tool)]
    assert not missing and RTMP_MODULE.exists(), f"missing {missing or RTMP_MODULE}: run make setup"


class Nginx:
    """nginx-rtmp from deploy/nginx-rtmp.conf, on its own port and prefix, in the foreground."""

    def __init__(self, prefix: Path) -> None:
        self.port = free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        conf = NGINX_CONF.read_text().replace("listen 127.0.0.1:1935;", f"listen 127.0.0.1:{self.port};")
        assert f"127.0.0.1:{self.port}" in conf
        (prefix / "nginx.conf").write_text(conf)
        self.log = open(prefix / "nginx.log", "wb")
        self.proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for(self._listening, 10):
            self.stop()
            raise RuntimeError(f"nginx did not start: {(prefix / 'nginx.log').read_text()}")

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def nginx(tmp_path):
    server = Nginx(tmp_path / "nginx")
    yield server
    server.stop()


def start_receiver(url: str, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-i", url,
                             "-c", "copy", "-flush_packets", "1", "-f", "flv", "-y", str(out)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


def stop_receiver(receiver: subprocess.Popen) -> None:
    """SIGINT lets ffmpeg finish its file; one that waits on a silent stream gets killed."""
    receiver.send_signal(signal.SIGINT)
    try:
        receiver.wait(10)
    except subprocess.TimeoutExpired:
        receiver.kill()
        receiver.wait()


def probe_packets(path: Path) -> dict[str, list[tuple[float, bool, int]]]:
    """(pts seconds, keyframe, byte position) of every packet, by codec."""
    result = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                             "packet=codec_type,pts_time,flags,pos:stream=codec_name,codec_type",
                             "-of", "json", str(path)], capture_output=True, text=True, timeout=120, check=True)
    data = json.loads(result.stdout)
    codecs = {s["codec_type"]: s["codec_name"] for s in data["streams"]}
    packets: dict[str, list[tuple[float, bool, int]]] = {}
    for packet in data["packets"]:
        if packet.get("pts_time") in (None, "N/A"):
            continue
        name = codecs[packet["codec_type"]]
        packets.setdefault(name, []).append((float(packet["pts_time"]), "K" in packet.get("flags", ""),
                                             int(packet.get("pos", -1))))
    return packets


class GrowthSampler:
    """Samples (wall time, size) of the receiver's file, to map media time to arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if self.path.exists():
                self.samples.append((time.monotonic(), self.path.stat().st_size))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def arrival_offsets(self, audio: list[tuple[float, bool, int]], until: float) -> list[float]:
        """For each sample before `until`: wall time minus the media time of the last audio packet
        then written."""
        positions = [pos for _, _, pos in audio]
        offsets = []
        for wall, size in self.samples:
            if wall >= until:
                break
            index = bisect.bisect_left(positions, size) - 1  # last packet starting before `size` ...
            if index >= 1:
                offsets.append(wall - audio[index - 1][0])  # ... and the one before it is complete
        return offsets


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metric_samples(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def write_checkpoint(directory: Path, seed: int) -> str:
    """A tiny real checkpoint (models.debug) in `directory`; returns its composer id."""
    code = ("import sys; from models.debug import write_debug_checkpoint as w; from models.checkpoint import read_info as r;"
            "d = sys.argv[1]; w(d, int(sys.argv[2])); print(r(d, 'vae').model_id + '+' + r(d, 'lstm').model_id)")
    result = subprocess.run([sys.executable, "-c", code, str(directory), str(seed)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_sixty_seconds_to_nginx_rtmp_with_reloads_and_a_clean_stop(nginx, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    first_id = write_checkpoint(checkpoint, seed=0)
    second_id = write_checkpoint(tmp_path / "next", seed=1)
    assert first_id != second_id
    status_port = free_port()
    config = tmp_path / "stream.toml"
    config.write_text(f'[stream]\ncheckpoint = "{checkpoint}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'outputs = ["rtmp://127.0.0.1:{nginx.port}/live"]\n'
                      f'[status]\naddr = "127.0.0.1:{status_port}"\n')
    recording = tmp_path / "received.flv"
    receiver = start_receiver(f"rtmp://127.0.0.1:{nginx.port}/live/{STREAM_KEY}", recording, tmp_path / "receiver.log")
    sampler = GrowthSampler(recording)
    daemon_log = tmp_path / "daemon.log"
    env = {**os.environ, "CHIPLOFI_STREAM_KEY": STREAM_KEY, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen([sys.executable, "-m", "streamer.cli", "stream", "--config", str(config)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(daemon_log, "wb"))
    try:
        assert wait_for(lambda: recording.exists() and recording.stat().st_size > 20_000, 30), \
            f"no data at the receiver; daemon log:\n{daemon_log.read_text()}"
        first_data = time.monotonic()
        status = lambda: json.loads(get(status_port, "/status")[1])  # noqa: E731
        assert wait_for(lambda: get(status_port, "/readyz")[0] == 200, 15)
        assert status()["checkpoint"]["id"] == first_id, daemon_log.read_text()

        # SIGHUP with a new checkpoint in place: the id changes.
        time.sleep(10)
        for name in ("vae.safetensors", "vae.json", "lstm.safetensors", "lstm.json"):
            shutil.copy(tmp_path / "next" / name, checkpoint / name)
        daemon.send_signal(signal.SIGHUP)
        assert wait_for(lambda: status()["checkpoint"]["id"] == second_id, 20), status()["checkpoint"]

        # SIGHUP with a corrupt checkpoint: rejected, the id stays.
        time.sleep(5)
        (checkpoint / "vae.safetensors").write_bytes(b"\x00garbage" * 100)
        daemon.send_signal(signal.SIGHUP)
        assert wait_for(lambda: status()["checkpoint"]["reload_failures"] == 1, 20)
        after = status()
        assert after["checkpoint"]["id"] == second_id and after["checkpoint"]["reloads"] == 1
        assert "vae.safetensors" in after["checkpoint"]["last_reload_error"]

        # /status and /metrics agree (counters read between two /status snapshots).
        time.sleep(5)
        before = status()
        code, text = get(status_port, "/metrics")
        later = status()
        assert code == 200
        metrics = metric_samples(text.decode())
        sink = {"kind": "ffmpeg", "sink": "ffmpeg"}
        key = lambda name, labels=None: name + json.dumps(labels or {}, sort_keys=True)  # noqa: E731
        assert before["clock"]["position_seconds"] <= metrics[key("chiplofi_audio_seconds_total")] \
            <= later["clock"]["position_seconds"]
        ff_before = next(s for s in before["sinks"] if s["kind"] == "ffmpeg")
        ff_later = next(s for s in later["sinks"] if s["kind"] == "ffmpeg")
        assert ff_before["bytes_written"] <= metrics[key("chiplofi_sink_bytes_total", sink)] <= ff_later["bytes_written"]
        assert metrics[key("chiplofi_sink_restarts_total", sink)] == ff_later["restarts"] == 0
        assert metrics[key("chiplofi_sink_connected", sink)] == 1 and ff_later["connected"]
        assert metrics[key("chiplofi_checkpoint_info", {"id": second_id})] == 1
        assert metrics[key("chiplofi_reloads_total", {"result": "ok"})] == 1
        assert metrics[key("chiplofi_reloads_total", {"result": "failed"})] == 1
        assert metrics[key("chiplofi_underruns_total")] == later["counters"]["underruns"] == 0
        assert [t["state"] for t in ff_later["detail"]["targets"]] == ["ok"]
        for document in (json.dumps(later), text.decode(), get(status_port, "/")[1].decode()):
            assert STREAM_KEY not in document

        # SIGTERM after 60 s at the receiver: exit 0 within 5 s.
        time.sleep(max(0.0, first_data + STREAM_SECONDS - time.monotonic()))
        stopped = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(10)
        stop_seconds = time.monotonic() - stopped
    finally:
        sampler.stop()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        time.sleep(1.0)
        stop_receiver(receiver)
    log_text = daemon_log.read_text()
    assert code == 0, log_text
    assert stop_seconds < 5.0
    assert "ffmpeg ended (exit code 0)" in log_text
    assert STREAM_KEY not in log_text

    packets = probe_packets(recording)
    assert set(packets) == {"h264", "aac"}
    video, audio = packets["h264"], packets["aac"]
    fps = 15  # the default preset, 480p15
    keyframes = [pts for pts, key, _ in video if key]
    intervals = [b - a for a, b in zip(keyframes, keyframes[1:])]
    assert len(keyframes) >= STREAM_SECONDS / 2 - 2
    assert all(abs(interval - 2.0) <= 1.0 / fps + 0.002 for interval in intervals), intervals
    audio_pts = [pts for pts, _, _ in audio]
    gaps = [b - a for a, b in zip(audio_pts, audio_pts[1:])]
    assert max(gaps) <= 0.050, f"audio gap of {max(gaps) * 1000:.0f} ms"
    assert min(gaps) > 0
    # Wall time: from when media time 0 was live at the receiver (its arrival time minus its
    # media time, the median over the stream, so the receiver's own start-up does not count)
    # to SIGTERM. The recording must be as long, and stay in step with the wall clock throughout.
    offsets = sampler.arrival_offsets(audio, until=stopped)
    assert len(offsets) > 100
    live_from = statistics.median(offsets)
    steady = offsets[len(offsets) // 10:]
    assert max(steady) - min(steady) < 1.0, "the stream drifted against the wall clock"
    duration = audio_pts[-1] - audio_pts[0]
    wall = stopped - live_from
    assert abs(duration - wall) <= 1.0, (duration, wall)
    assert duration >= STREAM_SECONDS - 1.0


def test_a_failing_target_does_not_drop_the_others(nginx, tmp_path):
    dead_port = free_port()  # nothing listens there: a backup ingest that is down
    status_port = free_port()
    local = tmp_path / "local.mkv"
    recording = tmp_path / "received.flv"
    receiver = start_receiver(f"rtmp://127.0.0.1:{nginx.port}/live/{STREAM_KEY}", recording, tmp_path / "receiver.log")
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "stream", "--checkpoint", "rule-based",
         "--output", f"rtmp://127.0.0.1:{dead_port}/live", "--output", f"rtmp://127.0.0.1:{nginx.port}/live",
         "--output", str(local), "--status-addr", f"127.0.0.1:{status_port}"],
        cwd=ROOT, env={**os.environ, "CHIPLOFI_STREAM_KEY": STREAM_KEY, "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        def targets():
            sink = json.loads(get(status_port, "/status")[1])["sinks"][0]
            return [t["state"] for t in sink["detail"]["targets"]]
        assert wait_for(lambda: recording.exists() and recording.stat().st_size > 100_000, 30), log.read_text()
        assert wait_for(lambda: targets() == ["failing", "ok", "ok"], 15), targets()
        time.sleep(6)
        sink = json.loads(get(status_port, "/status")[1])["sinks"][0]
        assert sink["restarts"] == 0 and sink["connected"]
        assert sink["detail"]["targets"][0]["failures"] >= 1
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        time.sleep(0.5)
        stop_receiver(receiver)
    text = log.read_text()
    assert STREAM_KEY not in text and "Connection refused" in text
    for path in (recording, local):
        packets = probe_packets(path)
        assert set(packets) == {"h264", "aac"}
        audio = [pts for pts, _, _ in packets["aac"]]
        assert audio[-1] - audio[0] > 8.0
        assert max(b - a for a, b in zip(audio, audio[1:])) <= 0.050
