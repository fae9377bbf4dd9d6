"""`chiplofi stream` with real FluidSynth and ffmpeg, without a network: files, the local
default (recording + live player), ffmpeg killed mid-stream, signals, `config check`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import wave
from itertools import pairwise
from pathlib import Path

import pytest

from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY = "local-test-key-7781"


def chiplofi(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def probe(path: Path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                             "stream=codec_name,pix_fmt,sample_rate,channels,width,height:format=duration",
                             "-of", "json", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(result.stdout)


def keyframe_times(path: Path) -> list[float]:
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time,flags",
                             "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return [float(line.split(",")[0]) for line in result.stdout.split() if line.endswith("K_") or line.endswith("K")]


def test_unpaced_stream_to_video_and_wav_files(tmp_path):
    video, audio = tmp_path / "out dir, with: odd [chars]" / "stream.mkv", tmp_path / "stream.wav"
    video.parent.mkdir()
    result = chiplofi("stream", "--speed", "0", "--duration", "30", "--checkpoint", "rule-based",
                      "--output", str(video), "--output", str(audio), "--output", "null",
                      "--status-addr", f"127.0.0.1:{free_port()}",
                      env={"CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state d:ir")})
    assert result.returncode == 0, result.stderr
    assert "ffmpeg ended (exit code 0)" in result.stderr
    info = probe(video)
    streams = {s["codec_name"]: s for s in info["streams"]}
    assert set(streams) == {"h264", "aac"}
    h264 = streams["h264"]
    assert h264["pix_fmt"] == "yuv420p" and (h264["width"], h264["height"]) == (854, 480)
    assert streams["aac"]["sample_rate"] == "44100" and streams["aac"]["channels"] == 2
    assert abs(float(info["format"]["duration"]) - 30.0) < 0.3
    keys = keyframe_times(video)
    assert len(keys) >= 14 and all(abs(b - a - 2.0) < 0.07 for a, b in pairwise(keys)), keys
    with wave.open(str(audio)) as wav:
        assert wav.getframerate() == 44100 and abs(wav.getnframes() - 30 * 44100) <= 1024


def test_video_size_and_rate_from_the_config_reach_the_file(tmp_path):
    video = tmp_path / "upright.mkv"
    result = chiplofi("stream", "--speed", "0", "--duration", "8", "--checkpoint", "rule-based",
                      "--output", str(video), "--status-addr", f"127.0.0.1:{free_port()}",
                      env={"CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state"),
                           "CHIPLOFI_VIDEO__SIZE": "360x640", "CHIPLOFI_VIDEO__FPS": "10"})
    assert result.returncode == 0, result.stderr
    frames = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-count_packets", "-show_entries",
                             "stream=width,height,r_frame_rate,nb_read_packets", "-of", "json", str(video)],
                            capture_output=True, text=True, check=True, timeout=60)
    stream = json.loads(frames.stdout)["streams"][0]
    assert (stream["width"], stream["height"], stream["r_frame_rate"]) == (360, 640, "10/1")
    assert abs(int(stream["nb_read_packets"]) - 80) <= 2
    keys = keyframe_times(video)
    assert len(keys) >= 4 and all(abs(b - a - 2.0) < 0.07 for a, b in pairwise(keys)), keys


def test_local_default_records_and_serves_live_audio(tmp_path):
    port = free_port()
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    daemon = start(["stream", "--checkpoint", "rule-based", "--status-addr", f"127.0.0.1:{port}"], log,
                   env={"CHIPLOFI_STREAM__STATE_DIR": str(state)})
    try:
        assert wait_for(lambda: status(port)["state"] == "running", 30), log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/live.wav", timeout=10) as response:
            assert response.headers["Content-Type"] == "audio/wav"
            header = response.read(44)
            started = time.monotonic()
            body = b""
            while time.monotonic() - started < 2.0:
                body += response.read(4096)
        assert header[:4] == b"RIFF" and len(body) > 1.0 * 44100 * 4  # it keeps up with real time
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert b"/live.wav" in response.read()
        assert wait_for(lambda: status(port)["sinks"][0]["connected"], 15)
        daemon.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: "--- thread audio" in log.read_text(), 10)
        time.sleep(2)
        daemon.send_signal(signal.SIGINT)
        assert daemon.wait(10) == 0
    finally:
        kill_if_running(daemon)
    recordings = sorted((state / "recordings").glob("chiplofi-*.mkv"))
    assert len(recordings) == 1, log.read_text()
    assert {s["codec_name"] for s in probe(recordings[0])["streams"]} == {"h264", "aac"}
    assert "BPM" in (state / "video" / "nowplaying.txt").read_text()  # the now-playing lines ffmpeg draws
    assert (state / "video" / "nowplaying-title.txt").read_text().strip()


def test_ffmpeg_killed_mid_stream_is_restarted_within_two_seconds(tmp_path):
    port = free_port()
    video = tmp_path / "stream.mkv"
    log = tmp_path / "daemon.log"
    daemon = start(["stream", "--checkpoint", "rule-based", "--output", str(video), "--output", "null",
                    "--status-addr", f"127.0.0.1:{port}"], log, env={"CHIPLOFI_STREAM__STATE_DIR": str(tmp_path)})
    try:
        ffmpeg = wait_for(lambda: status(port)["sinks"][0]["connected"] and status(port)["sinks"][0], 30)
        assert ffmpeg, log.read_text()
        os.kill(ffmpeg["detail"]["pid"], signal.SIGKILL)
        killed = time.monotonic()
        back = wait_for(lambda: (s := status(port)["sinks"][0])["restarts"] == 1 and s["connected"] and s, 15)
        assert back and time.monotonic() - killed < 2.0 + 3.0  # restart ≤ 2 s, then encoding again
        assert back["detail"]["pid"] != ffmpeg["detail"]["pid"]
        null = next(s for s in status(port)["sinks"] if s["kind"] == "null")
        before = status(port)["clock"]["position_seconds"]
        time.sleep(1.0)
        assert status(port)["clock"]["position_seconds"] - before > 0.8  # the clock never stopped
        assert null["frames_dropped"] == 0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        kill_if_running(daemon)
    text = log.read_text()
    assert "restarting in 1.0 s" in text, text
    # The restart wrote a new file next to the first instead of overwriting it.
    assert video.exists() and (tmp_path / "stream-1.mkv").exists()
    assert {s["codec_name"] for s in probe(tmp_path / "stream-1.mkv")["streams"]} == {"h264", "aac"}


def test_config_check(tmp_path):
    good = tmp_path / "good.toml"
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    good.write_text(f'[stream]\noutputs = ["rtmp://a.rtmp.youtube.com/live2", "rec.mkv"]\nkey_file = "{key_file}"\n'
                    '[video]\npreset = "720p30"\n')
    result = chiplofi("config", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert "stream key: set" in result.stdout and KEY not in result.stdout + result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[video]\npreset = "1080p60"\n')
    result = chiplofi("config", "check", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "chiplofi: config error: video.preset: expected one of '720p30', '480p15', 'still', got '1080p60'"]
    result = chiplofi("config", "check", str(good), env={"CHIPLOFI_STREAM__SPEED": "-1"})
    assert result.returncode == 2 and "stream.speed" in result.stderr
