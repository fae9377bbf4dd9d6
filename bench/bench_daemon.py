"""The streaming daemon against a bare ffmpeg, side by side in one run, both pushing to a local
nginx-rtmp with the same video settings.

Rows:
  bare ffmpeg     `ffmpeg -re` streaming pre-rendered pipe audio (the mix and the voice stems,
                  bench_video.prerender_pipe_audio) through the same filter graph and encoder
                  settings (the floor)
  daemon          `chiplofi stream`: composer + FluidSynth + effects + clock + its ffmpeg
CPU is measured over the same steady window (after start-up) for both, from /proc, as % of one
core; the ratio is daemon / bare. Also: start → first audio at a receiver (a `chiplofi stream`
process start to the first AAC frame out of an ffmpeg receiver reading the stream from nginx,
so the receiver's own start-up counts against it), and the daemon's steady RSS (VmRSS of the
Python process, and with its ffmpeg).
Goals (issue 4): CPU ratio ≤ 1.25; start → first audio ≤ 5 s; steady RSS ≤ 400 MB.

CPU per video preset (issue 7: reported, % of one core): the same side-by-side run for each
of `--presets`. The main preset's row is the main run above (60 s window after 15 s of
warm-up); the other presets get a shorter run each (`--preset-seconds`, default 30 s after
10 s), which keeps `make bench` within its 20 minutes: a CPU-time figure over 30 s of steady
streaming varies by a few % on a loaded machine, less than the presets differ. The daemon's
CPU is split into its Python process and its ffmpeg; `bare_ffmpeg_speed` (media seconds per
wall second in the window, from ffmpeg's `-progress`) and the daemon sink's dropped frames say
whether each kept real time.
Run: .venv/bin/python bench/bench_daemon.py [--seconds 60] [--preset 480p15] [--presets 720p30,480p15,still]
     [--preset-seconds 30] [--checkpoint DIR|rule-based|debug]
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
from dataclasses import dataclass, replace
from pathlib import Path

from streamer.config import Config
from streamer.video import PRESETS
from streamer.video_files import prepare_video_files
from testkit.procfs import children, cpu_seconds, rss_mb
from testkit.waiting import free_port

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
GOAL_RATIO, GOAL_FIRST_AUDIO, GOAL_RSS_MB = 1.25, 5.0, 400.0
WARMUP_SECONDS = 15.0
PRESET_WARMUP_SECONDS = 10.0  # the per-preset runs (start-up is over by then: first audio ≤ 5 s)
SETTLE_SECONDS = 3.0  # after /readyz, before a CPU window starts
READY_TIMEOUT_SECONDS = 90.0


def get_status(port: int) -> dict:
    """A daemon's /status on its loopback status port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.loads(response.read())


def machine_description() -> dict:
    """CPU model, cores, RAM and the load average now: every result file records where it ran."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    return {"cpu": model, "arch": platform.machine(), "cores": os.cpu_count(), "ram_gb": round(memory_kb / 2**20, 1),
            "python": platform.python_version(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def start_nginx(prefix: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = (ROOT / "deploy" / "nginx-rtmp.conf").read_text().replace("listen 127.0.0.1:1935;",
                                                                       f"listen 127.0.0.1:{port};")
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    with open(prefix / "nginx.log", "wb") as log_file:
        proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
                                stdout=subprocess.DEVNULL, stderr=log_file)
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
        self.watch_pid: int | None = None  # the daemon: its CPU seconds when the first frame arrives
        self.cpu_at: float | None = None
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
                self.cpu_at = cpu_seconds(self.watch_pid) if self.watch_pid else None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bare_ffmpeg_args(config: Config, pcm: Path, directory: Path, url: str, progress: Path) -> list[str]:
    """The daemon's ffmpeg command, fed from pre-rendered pipe audio at real time instead of a pipe."""
    from bench_video import bare_picture_args

    files = prepare_video_files(config.video, directory, "ffmpeg")
    files.now_title.write_text("Mellow Harbor")
    files.now_details.write_text("C major · 80 BPM · intro")
    return bare_picture_args(config.video, files, pcm, url, progress)


@dataclass
class Row:
    """One side-by-side run: the daemon and the bare ffmpeg, both streaming with one video preset."""

    preset: str
    window: float  # seconds of the CPU window
    cpu: dict[str, float]  # % of one core: bare, daemon (Python + its ffmpeg), daemon_python, daemon_ffmpeg
    first_audio: float
    first_audio_cpu: float | None  # CPU seconds the daemon (Python + its ffmpeg) had used by then
    rss_daemon: list[float]
    rss_total: list[float]
    status: dict
    bare_speed: float  # media seconds the bare ffmpeg sent per wall second in the window (1.0 = real time)
    stop_code: int
    stop_seconds: float


def run_row(preset: str, seconds: float, warmup: float, pcm: Path, tmp: Path,
            checkpoint: list[str]) -> Row:
    """Stream `seconds` (after `warmup`) with the daemon and, at the same time, the bare ffmpeg."""
    config = Config()
    config = replace(config, video=replace(config.video, preset=preset))
    env = {**os.environ, "CHIPLOFI_VIDEO__PRESET": preset, "CHIPLOFI_STREAM__STATE_DIR": str(tmp / f"state-{preset}")}
    nginx, port = start_nginx(tmp / f"nginx-{preset}")
    processes: list[subprocess.Popen] = []  # killed if the run fails half-way
    try:
        receiver = FirstAudio(f"rtmp://127.0.0.1:{port}/live/daemon")
        processes.append(receiver.proc)
        time.sleep(0.5)
        started = time.monotonic()
        status_port = free_port()
        with open(tmp / f"daemon-{preset}.log", "wb") as log_file:
            daemon = subprocess.Popen([sys.executable, "-m", "streamer.cli", "stream", "--seed", "0", "--output",
                                       f"rtmp://127.0.0.1:{port}/live/daemon", "--status-addr",
                                       f"127.0.0.1:{status_port}", *checkpoint],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        processes.append(daemon)
        receiver.watch_pid = daemon.pid
        # The window starts `warmup` after the start, and never before the daemon is ready (model
        # loaded, buffer full, output connected) plus a few seconds: a loaded machine starts slowly.
        # The bare ffmpeg starts then too, so its pre-rendered input lasts whatever the start-up took.
        wait_ready(status_port, daemon, READY_TIMEOUT_SECONDS)
        progress = tmp / f"bare-{preset}.progress"
        with open(tmp / f"bare-{preset}.log", "wb") as log_file:
            bare = subprocess.Popen(bare_ffmpeg_args(config, pcm, tmp / f"bare-video-{preset}",
                                                     f"rtmp://127.0.0.1:{port}/live/bare", progress),
                                    stdout=subprocess.DEVNULL, stderr=log_file)
        processes.append(bare)
        time.sleep(max(SETTLE_SECONDS, started + warmup - time.monotonic()))

        def sample() -> dict[str, float]:
            own = cpu_seconds(daemon.pid) - sum(cpu_seconds(c) for c in children(daemon.pid))
            total = cpu_seconds(daemon.pid)
            return {"bare": cpu_seconds(bare.pid), "daemon": total, "daemon_python": own, "daemon_ffmpeg": total - own}

        cpu0 = sample()
        media0 = media_seconds(progress)
        window_start = time.monotonic()
        rss_daemon, rss_total = [], []
        while time.monotonic() - window_start < seconds:
            time.sleep(1.0)
            rss_daemon.append(rss_mb(daemon.pid))
            rss_total.append(rss_daemon[-1] + sum(rss_mb(c) for c in children(daemon.pid)))
        cpu1 = sample()
        window = time.monotonic() - window_start
        bare_speed = (media_seconds(progress) - media0) / window
        alive = daemon.poll() is None and bare.poll() is None
        status: dict = {}
        if alive:
            status = get_status(status_port)
        daemon.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        stop_code = daemon.wait(15)
        stop_seconds = time.monotonic() - stop_started
        bare.send_signal(signal.SIGTERM)
        bare.wait(10)
        receiver.stop()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(10)
    if not alive:
        print((tmp / f"daemon-{preset}.log").read_text()[-3000:], (tmp / f"bare-{preset}.log").read_text()[-3000:],
              file=sys.stderr)
        raise RuntimeError(f"{preset}: the daemon or the bare ffmpeg stopped during the run")
    first_audio = receiver.at - started if receiver.at else float("inf")
    cpu = {name: 100.0 * (cpu1[name] - cpu0[name]) / window for name in cpu0}
    return Row(preset, window, cpu, first_audio, receiver.cpu_at, rss_daemon, rss_total, status, bare_speed, stop_code,
               stop_seconds)


def wait_ready(status_port: int, daemon: subprocess.Popen, timeout: float) -> float:
    """Monotonic time at which the daemon's /readyz first answered 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/readyz", timeout=2):
                return time.monotonic()
        except OSError:  # not listening yet, or 503 (HTTPError is an OSError)
            time.sleep(0.1)
    raise RuntimeError(f"the daemon was not ready within {timeout:g} s")


def media_seconds(progress: Path) -> float:
    """The last `out_time_us` ffmpeg's `-progress` file reported, in seconds."""
    text = progress.read_text() if progress.exists() else ""
    times = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("out_time_us=")]
    return int(times[-1]) / 1e6 if times and times[-1].strip().isdigit() else 0.0


def preset_entry(row: Row) -> dict:
    sink = row.status["sinks"][0]
    return {"window_seconds": round(row.window, 1),
            "cpu_percent_of_one_core": {k: round(v, 1) for k, v in row.cpu.items()},
            "cpu_ratio": round(row.cpu["daemon"] / row.cpu["bare"], 3),
            "daemon_frames_dropped": sink["frames_dropped"], "daemon_sink_restarts": sink["restarts"],
            "underruns": row.status["counters"]["underruns"], "bare_ffmpeg_speed": round(row.bare_speed, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="CPU window of the main preset's run (default 60)")
    parser.add_argument("--preset", default="480p15", choices=tuple(PRESETS),
                        help="the main run's video preset: ratio, first audio, RSS, SIGTERM (default 480p15)")
    parser.add_argument("--presets", default=",".join(PRESETS),
                        help="comma-separated presets for the CPU-per-preset table (default: all); the main "
                             "preset's row is the main run, the others get runs of --preset-seconds; '' = none")
    parser.add_argument("--preset-seconds", type=float, default=30.0,
                        help="CPU window of each other preset's run (default 30)")
    parser.add_argument("--checkpoint", default="",
                        help="a checkpoint directory, 'rule-based', or 'debug' (tiny random models from "
                             "models.debug); default: the configured one (shipped, else rule-based)")
    args = parser.parse_args()
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        parser.error(f"--presets: unknown {unknown}; known: {', '.join(PRESETS)}")
    if not (shutil.which("nginx") and shutil.which("ffmpeg")):
        print("needs nginx (with the rtmp module) and ffmpeg", file=sys.stderr)
        return 1
    machine = machine_description()
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp_name:
        tmp = Path(tmp_name)
        if args.checkpoint == "debug":
            from models.debug import write_debug_checkpoint

            args.checkpoint = str(write_debug_checkpoint(tmp / "debug-checkpoint"))
        checkpoint = ["--checkpoint", args.checkpoint] if args.checkpoint else []
        # Pre-render the audio the bare ffmpeg streams: what the daemon writes to its ffmpeg's pipe.
        from bench_video import prerender_pipe_audio

        pcm = tmp / "pipe.raw"
        longest = max([args.seconds] + [args.preset_seconds] * bool(set(presets) - {args.preset}))
        prerender_pipe_audio(pcm, longest + WARMUP_SECONDS + 10)
        try:
            main_row = run_row(args.preset, args.seconds, WARMUP_SECONDS, pcm, tmp, checkpoint)
            rows = {args.preset: main_row}
            for preset in presets:
                if preset not in rows:
                    rows[preset] = run_row(preset, args.preset_seconds, PRESET_WARMUP_SECONDS, pcm, tmp, checkpoint)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    row = main_row
    cpu = row.cpu
    result = {
        "machine": machine, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "preset": args.preset, "composer": row.status["checkpoint"]["id"], "window_seconds": round(row.window, 1),
        "underruns": row.status["counters"]["underruns"], "sink_restarts": row.status["sinks"][0]["restarts"],
        "cpu_percent_of_one_core": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_ratio": round(cpu["daemon"] / cpu["bare"], 3),
        "start_to_first_audio_seconds": round(row.first_audio, 2),
        "start_to_first_audio_daemon_cpu_seconds": round(row.first_audio_cpu, 2) if row.first_audio_cpu else None,
        "rss_mb": {"daemon_max": round(max(row.rss_daemon), 1),
                   "daemon_median": round(statistics.median(row.rss_daemon), 1),
                   "with_ffmpeg_max": round(max(row.rss_total), 1)},
        "sigterm_exit": {"code": row.stop_code, "seconds": round(row.stop_seconds, 2)},
        "cpu_per_preset": {
            "what": f"% of one core over each run's window: the main preset's run ({args.seconds:g} s window after "
                    f"{WARMUP_SECONDS:g} s), the others {args.preset_seconds:g} s after {PRESET_WARMUP_SECONDS:g} s; "
                    "daemon = Python process + its ffmpeg; bare = ffmpeg alone on the pre-rendered audio, same "
                    "settings, at the same time",
            "presets": {preset: preset_entry(rows[preset]) for preset in presets if preset in rows},
        },
    }
    print(f"{'preset':<9}{'window s':>9}{'bare ffmpeg':>12}{'daemon':>9}{'(Python':>9}{'+ ffmpeg)':>10}{'ratio':>7}"
          f"{'bare speed':>11}{'dropped':>9}")
    for preset in [args.preset] + [p for p in presets if p != args.preset]:
        c = rows[preset].cpu
        print(f"{preset:<9}{rows[preset].window:>9.0f}{c['bare']:>12.1f}{c['daemon']:>9.1f}{c['daemon_python']:>9.1f}"
              f"{c['daemon_ffmpeg']:>10.1f}{c['daemon'] / c['bare']:>7.2f}{rows[preset].bare_speed:>11.2f}"
              f"{rows[preset].status['sinks'][0]['frames_dropped']:>9}")
    print(f"(CPU % of one core; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"ratio daemon/bare at {args.preset}: {result['cpu_ratio']:.2f} (goal ≤ {GOAL_RATIO})")
    print(f"start → first audio at the receiver: {row.first_audio:.2f} s (goal ≤ {GOAL_FIRST_AUDIO:g} s); "
          f"the daemon had used {row.first_audio_cpu or float('nan'):.2f} CPU s by then")
    print(f"steady RSS: daemon {result['rss_mb']['daemon_max']:.0f} MB max, with its ffmpeg "
          f"{result['rss_mb']['with_ffmpeg_max']:.0f} MB (goal ≤ {GOAL_RSS_MB:g} MB)")
    print(f"SIGTERM: exit code {row.stop_code} after {row.stop_seconds:.2f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "daemon.json").write_text(json.dumps(result, indent=2) + "\n")
    ok = (result["cpu_ratio"] <= GOAL_RATIO and row.first_audio <= GOAL_FIRST_AUDIO
          and result["rss_mb"]["daemon_max"] <= GOAL_RSS_MB and all(r.stop_code == 0 for r in rows.values()))
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
