"""The daemon streaming to a real nginx-rtmp on loopback while an ffmpeg receiver records.

One 60-second stream shows, at the receiver: H.264 + AAC, a keyframe every 2 s (± 1 frame), a
duration within 1 s of the wall time, no audio timestamp gap over 50 ms — across a SIGHUP that
swaps the checkpoint (the id in /status changes) and one with a corrupt checkpoint (the id
stays); /status and /metrics agree; SIGTERM ends it with exit code 0 within 5 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from itertools import pairwise
from pathlib import Path

import pytest

from testkit.receiver import check_continuity, probe_packets, receiver_fixture
from testkit.waiting import free_port, kill_if_running, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAM_SECONDS = 60.0
STREAM_KEY = "it-key-5f3a9c"


receiver = receiver_fixture(STREAM_KEY)  # nginx-rtmp on free loopback ports, recording STREAM_KEY


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
    code = ("import sys; from models.debug import write_debug_checkpoint as w; "
            "from models.checkpoint import read_info as r; d = sys.argv[1]; w(d, int(sys.argv[2])); "
            "print(r(d, 'vae').model_id + '+' + r(d, 'lstm').model_id)")
    result = subprocess.run([sys.executable, "-c", code, str(directory), str(seed)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_sixty_seconds_to_nginx_rtmp_with_reloads_and_a_clean_stop(receiver, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    first_id = write_checkpoint(checkpoint, seed=0)
    second_id = write_checkpoint(tmp_path / "next", seed=1)
    assert first_id != second_id
    status_port = free_port()
    config = tmp_path / "stream.toml"
    config.write_text(f'[stream]\ncheckpoint = "{checkpoint}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'outputs = ["{receiver.ingest_url}"]\n'
                      f'[status]\naddr = "127.0.0.1:{status_port}"\n')
    daemon_log = tmp_path / "daemon.log"
    env = {**os.environ, "CHIPLOFI_STREAM_KEY": STREAM_KEY, "PYTHONUNBUFFERED": "1"}
    with open(daemon_log, "wb") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "streamer.cli", "stream", "--config", str(config)],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        assert receiver.wait_for_bytes(20_000, 30), f"no data at the receiver; daemon log:\n{daemon_log.read_text()}"
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
        written = metrics[key("chiplofi_sink_bytes_total", sink)]
        assert ff_before["bytes_written"] <= written <= ff_later["bytes_written"]
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
        kill_if_running(daemon)
        receiver.close()
    log_text = daemon_log.read_text()
    assert code == 0, log_text
    assert stop_seconds < 5.0
    assert "ffmpeg ended (exit code 0)" in log_text
    assert STREAM_KEY not in log_text

    [recording] = receiver.recordings()  # one publish session: ffmpeg never restarted
    continuity = check_continuity(recording.path)
    assert continuity.codecs == {"h264", "aac"}
    assert continuity.ok and continuity.max_audio_step <= 0.050, continuity
    packets = probe_packets(recording.path)
    video = [p for p in packets if p.codec_type == "video"]
    audio = [p for p in packets if p.codec_type == "audio"]
    fps = 15  # the default preset, 480p15
    keyframes = [p.pts for p in video if p.keyframe]
    intervals = [b - a for a, b in pairwise(keyframes)]
    assert len(keyframes) >= STREAM_SECONDS / 2 - 2
    assert all(abs(interval - 2.0) <= 1.0 / fps + 0.002 for interval in intervals), intervals
    audio_pts = [p.pts for p in audio]
    # Wall time: from when media time 0 was live at the receiver (its arrival time minus its
    # media time, the median over the stream, so the receiver's own start-up does not count)
    # to SIGTERM. The recording must be as long, and stay in step with the wall clock throughout.
    offsets = [offset for packet, offset in zip(audio, recording.live_offsets(audio), strict=True)
               if recording.arrival(packet) < stopped]
    assert len(offsets) > 100
    live_from = statistics.median(offsets)
    steady = offsets[len(offsets) // 10:]
    assert max(steady) - min(steady) < 1.0, "the stream drifted against the wall clock"
    duration = audio_pts[-1] - audio_pts[0]
    wall = stopped - live_from
    assert abs(duration - wall) <= 1.0, (duration, wall)
    assert duration >= STREAM_SECONDS - 1.0


def test_a_failing_target_does_not_drop_the_others(receiver, tmp_path):
    dead_port = free_port()  # nothing listens there: a backup ingest that is down
    status_port = free_port()
    local = tmp_path / "local.mkv"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "stream", "--checkpoint", "rule-based",
             "--output", f"rtmp://127.0.0.1:{dead_port}/live", "--output", receiver.ingest_url,
             "--output", str(local), "--status-addr", f"127.0.0.1:{status_port}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file,
            env={**os.environ, "CHIPLOFI_STREAM_KEY": STREAM_KEY, "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path)})
    try:
        def targets():
            sink = json.loads(get(status_port, "/status")[1])["sinks"][0]
            return [t["state"] for t in sink["detail"]["targets"]]
        assert receiver.wait_for_bytes(100_000, 30), log.read_text()
        assert wait_for(lambda: targets() == ["failing", "ok", "ok"], 15), targets()
        time.sleep(6)
        sink = json.loads(get(status_port, "/status")[1])["sinks"][0]
        assert sink["restarts"] == 0 and sink["connected"]
        assert sink["detail"]["targets"][0]["failures"] >= 1
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        kill_if_running(daemon)
        receiver.close()
    text = log.read_text()
    assert STREAM_KEY not in text and "Connection refused" in text
    [recording] = receiver.recordings()
    for path in (recording.path, local):
        continuity = check_continuity(path)
        assert continuity.codecs == {"h264", "aac"}
        assert continuity.audio_seconds > 8.0
        assert continuity.ok and continuity.max_audio_step <= 0.050, continuity
