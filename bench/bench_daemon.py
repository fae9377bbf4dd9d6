"""The streaming daemon against a bare ffmpeg, side by side in one run, both pushing to a local
nginx-rtmp with the same video settings.

Rows:
  bare ffmpeg     `ffmpeg -re` streaming pre-rendered audio (the daemon's own output, as WAV)
                  through the same filter graph and encoder settings (the floor)
  daemon          `chiplofi stream`: composer + FluidSynth + effects + clock + its ffmpeg
CPU is measured over the same steady window (after start-up) for both, from /proc, as % of one
core; the ratio is daemon / bare. Also: start → first audio at a receiver (a `chiplofi stream`
process start to the first AAC frame out of an ffmpeg receiver reading the stream from nginx,
so the receiver's own start-up counts against it), and the daemon's steady RSS (VmRSS of the
Python process, and with its ffmpeg).
Goals (issue 4): CPU ratio ≤ 1.25; start → first audio ≤ 5 s; steady RSS ≤ 400 MB.
Run: .venv/bin/python bench/bench_daemon.py [--seconds 60] [--preset 480p15] [--checkpoint DIR|rule-based|debug]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.config import Config  # noqa: E402
from streamer.video import encoder_options, filter_graph  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
GOAL_RATIO, GOAL_FIRST_AUDIO, GOAL_RSS_MB = 1.25, 5.0, 400.0
WARMUP_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and (recursively) its live children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / TICKS
    for child in children(pid):
        total += cpu_seconds(child)
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_nginx(prefix: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = (ROOT / "deploy" / "nginx-rtmp.conf").read_text().replace("listen 127.0.0.1:1935;",
                                                                       f"listen 127.0.0.1:{port};")
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
                            stdout=subprocess.DEVNULL, stderr=open(prefix / "nginx.log", "wb"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("nginx did not start")


class FirstAudio:
    """An ffmpeg receiver whose FLV output is parsed as it arrives: time of the first AAC frame."""

    def __init__(self, url: str) -> None:
        self.at: float | None = None
        # No probing, no buffering, no interleaving wait: a packet is written as soon as it arrives
        # (with ffmpeg's defaults the receiver alone adds ~2-3 s).
        self.proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-fflags", "nobuffer",
                                      "-analyzeduration", "0", "-probesize", "32", "-i", url, "-c", "copy",
                                      "-max_interleave_delta", "0", "-flush_packets", "1", "-f", "flv", "pipe:1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        header = out.read(13)  # FLV header + first PreviousTagSize
        if len(header) < 13:
            return
        while True:
            tag = out.read(11)
            if len(tag) < 11:
                return
            size = int.from_bytes(tag[1:4], "big")
            body = out.read(size + 4)
            if tag[0] == 8 and len(body) > 2 and body[1] == 1 and self.at is None:  # AAC raw frame
                self.at = time.monotonic()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bare_ffmpeg_args(config: Config, wav: Path, text: Path, url: str) -> list[str]:
    """The daemon's ffmpeg command, fed from a WAV file at real time instead of a pipe."""
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-filter_complex",
            filter_graph(config.video, text), "-re", "-i", str(wav), "-map", "[vout]", "-map", "[aout]"]
    for key, value in encoder_options(config.video, config.render.sample_rate).items():
        args += [f"-{key}"] + ([value] if value is not None else [])
    return args + ["-f", "flv", url]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="streaming time of each row (default 60)")
    parser.add_argument("--preset", default="480p15", choices=("720p30", "480p15", "still"))
    parser.add_argument("--checkpoint", default="",
                        help="a checkpoint directory, 'rule-based', or 'debug' (tiny random models from "
                             "models.debug); default: the configured one (shipped, else rule-based)")
    args = parser.parse_args()
    if not (shutil.which("nginx") and shutil.which("ffmpeg")):
        print("needs nginx (with the rtmp module) and ffmpeg", file=sys.stderr)
        return 1
    config = Config()
    config = replace(config, video=replace(config.video, preset=args.preset))
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "CHIPLOFI_VIDEO__PRESET": args.preset, "CHIPLOFI_STREAM__STATE_DIR": str(tmp / "state")}
        if args.checkpoint == "debug":
            from models.debug import write_debug_checkpoint

            args.checkpoint = str(write_debug_checkpoint(tmp / "debug-checkpoint"))
        checkpoint = ["--checkpoint", args.checkpoint] if args.checkpoint else []
        # Pre-render the audio the bare ffmpeg streams: the daemon's own output, unpaced.
        wav = tmp / "pre.wav"
        subprocess.run([python, "-m", "streamer.cli", "stream", "--speed", "0", "--duration", str(args.seconds + WARMUP_SECONDS + 20),
                        "--output", str(wav), "--status-addr", f"127.0.0.1:{free_port()}", *checkpoint],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        text = tmp / "nowplaying.txt"
        text.write_text("chiplofi · 8-bit lo-fi radio\ntrack s0-t0000 · intro\nC major · 80 BPM · Cmaj7")
        nginx, port = start_nginx(tmp / "nginx")
        try:
            receiver = FirstAudio(f"rtmp://127.0.0.1:{port}/live/daemon")
            time.sleep(0.5)
            bare = subprocess.Popen(bare_ffmpeg_args(config, wav, text, f"rtmp://127.0.0.1:{port}/live/bare"),
                                    stdout=subprocess.DEVNULL, stderr=open(tmp / "bare.log", "wb"))
            started = time.monotonic()
            status_port = free_port()
            daemon = subprocess.Popen([python, "-m", "streamer.cli", "stream", "--output",
                                       f"rtmp://127.0.0.1:{port}/live/daemon", "--status-addr",
                                       f"127.0.0.1:{status_port}", *checkpoint],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "daemon.log", "wb"))
            time.sleep(WARMUP_SECONDS)
            cpu0 = {"bare": cpu_seconds(bare.pid), "daemon": cpu_seconds(daemon.pid)}
            window_start = time.monotonic()
            rss_daemon, rss_total = [], []
            while time.monotonic() - started < WARMUP_SECONDS + args.seconds:
                time.sleep(1.0)
                rss_daemon.append(rss_mb(daemon.pid))
                rss_total.append(rss_daemon[-1] + sum(rss_mb(c) for c in children(daemon.pid)))
            cpu1 = {"bare": cpu_seconds(bare.pid), "daemon": cpu_seconds(daemon.pid)}
            window = time.monotonic() - window_start
            daemon_alive = daemon.poll() is None and bare.poll() is None
            with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5) as response:
                status = json.loads(response.read())
            daemon.send_signal(signal.SIGTERM)
            stop_started = time.monotonic()
            daemon_code = daemon.wait(15)
            stop_seconds = time.monotonic() - stop_started
            bare.send_signal(signal.SIGTERM)
            bare.wait(10)
            receiver.stop()
        finally:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        if not daemon_alive:
            print((tmp / "daemon.log").read_text()[-3000:], (tmp / "bare.log").read_text()[-3000:], file=sys.stderr)
            return 1
        first_audio = receiver.at - started if receiver.at else float("inf")
    cpu = {name: 100.0 * (cpu1[name] - cpu0[name]) / window for name in cpu0}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "preset": args.preset, "composer": status["checkpoint"]["id"], "window_seconds": round(window, 1),
        "underruns": status["counters"]["underruns"], "sink_restarts": status["sinks"][0]["restarts"],
        "cpu_percent_of_one_core": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_ratio": round(cpu["daemon"] / cpu["bare"], 3),
        "start_to_first_audio_seconds": round(first_audio, 2),
        "rss_mb": {"daemon_max": round(max(rss_daemon), 1), "daemon_median": round(statistics.median(rss_daemon), 1),
                   "with_ffmpeg_max": round(max(rss_total), 1)},
        "sigterm_exit": {"code": daemon_code, "seconds": round(stop_seconds, 2)},
    }
    print(f"{'row':<14}{'CPU % of a core':>16}")
    print(f"{'bare ffmpeg':<14}{cpu['bare']:>16.1f}")
    print(f"{'daemon':<14}{cpu['daemon']:>16.1f}")
    print(f"ratio daemon/bare: {result['cpu_ratio']:.2f} (goal ≤ {GOAL_RATIO})")
    print(f"start → first audio at the receiver: {first_audio:.2f} s (goal ≤ {GOAL_FIRST_AUDIO:g} s)")
    print(f"steady RSS: daemon {result['rss_mb']['daemon_max']:.0f} MB max, with its ffmpeg "
          f"{result['rss_mb']['with_ffmpeg_max']:.0f} MB (goal ≤ {GOAL_RSS_MB:g} MB)")
    print(f"SIGTERM: exit code {daemon_code} after {stop_seconds:.2f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "daemon.json").write_text(json.dumps(result, indent=2) + "\n")
    ok = (result["cpu_ratio"] <= GOAL_RATIO and first_audio <= GOAL_FIRST_AUDIO
          and result["rss_mb"]["daemon_max"] <= GOAL_RSS_MB and daemon_code == 0)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
