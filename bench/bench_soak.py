"""Accelerated soak: the whole stream pipeline, unpaced, for many hours of audio to a video file.

`chiplofi stream --speed 0 --duration SECONDS --output soak.mkv` runs the real daemon (the
configured composer — the shipped checkpoint — → ring buffer → FluidSynth → effects → its
ffmpeg, encoding AAC + H.264 with the video track) as fast as the machine allows, so a day of
audio takes hours, not a day. While it runs, every `--sample-seconds` of wall time this script
reads /status (audio position, counters, ffmpeg's pid and encoded time) and the VmRSS of the
daemon and, separately, of its ffmpeg. Afterwards ffprobe lists every packet of the file.

Figures (and goals, issue 6):
  RSS growth     the daemon's RSS at the end against the RSS just after warm-up: the median of
                 the samples in the last 5 % of the audio over the median of those in the 5 %
                 after the warm-up mark (default: the first 10 % of the audio is warm-up: the
                 model, the allocator's arenas and ffmpeg's queues reach their working size).
                 Goal < 2 %. The peak after warm-up and a least-squares slope (MB per audio hour)
                 are reported too, and the same figures for ffmpeg.
  A/V drift      from the packet timestamps of the output file: each stream's slip is how far a
                 packet's timestamp is from where the packets before it put it (first timestamp
                 + the media they hold); the drift at a point is the audio slip minus the video
                 slip there, sampled at 100 points (the constant start offset, the AAC encoder's
                 priming, is reported on its own); plus, at the end, by how much more than one
                 video frame (1/fps) the ends of the two streams differ (both are made in whole
                 frames / packets; the raw difference of the ends is reported too).
                 Goal < 40 ms for both. Timestamp gaps and non-monotonic timestamps are counted
                 per stream.
  underruns      the daemon's `underruns` and `pcm_underruns` counters (last /status) plus any
                 "buffer underrun" line it logged; audio its ffmpeg sink dropped; ffmpeg restarts.
                 Goal: all 0.
Video: the `still` preset's 5 fps at `video.size = "320x180"`, x264 `ultrafast`: the video track
is needed for the drift figure, but its pixels say nothing about leaks or timing and at 1280×720
they cost 2.2× the CPU of everything else in ffmpeg (one core, 300 s of audio: AAC alone 8.4 s,
AAC + 320×180 video 10.2 s, AAC + 1280×720 video 22.3 s), which made a day of audio a 3 h run.
`--size ""` keeps the preset's size. See docs/RELIABILITY.md for the measured speed.

Run: .venv/bin/python bench/bench_soak.py [--hours 24] [--warmup 0.1] [--json PATH]
(`make soak` runs it with 24 h and writes bench/results/soak.json.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_daemon import ROOT, get_status
from testkit.drift import packet_drift
from testkit.procfs import cpu_seconds, rss_mb
from testkit.waiting import free_port

RESULTS = ROOT / "bench" / "results"
GOAL_GROWTH, GOAL_DRIFT_SECONDS = 0.02, 0.040
WINDOW = 0.05  # share of the audio each RSS window covers
MIN_SPEED = 2.0  # give up (and fail) if the run is slower than this × real time


@dataclass
class Sample:
    wall: float  # seconds since the daemon started
    audio: float  # the daemon's audio position, seconds
    encoded: float  # ffmpeg's reported output time, seconds
    rss_daemon: float  # MB
    rss_ffmpeg: float  # MB


def _window_median(samples: list[Sample], attr: str, low: float, high: float) -> float:
    values = [getattr(s, attr) for s in samples if low <= s.audio <= high and getattr(s, attr) > 0]
    if not values:
        raise RuntimeError(f"no RSS samples between {low:.0f} s and {high:.0f} s of audio")
    return statistics.median(values)


def rss_figures(samples: list[Sample], attr: str, length: float, warmup: float) -> dict[str, float]:
    start = warmup * length
    baseline = _window_median(samples, attr, start, start + WINDOW * length)
    final = _window_median(samples, attr, (1 - WINDOW) * length, length)
    after = [s for s in samples if s.audio >= start and getattr(s, attr) > 0]
    slope = statistics.linear_regression([s.audio / 3600 for s in after],
                                         [getattr(s, attr) for s in after]).slope if len(after) > 2 else 0.0
    return {"after_warmup_mb": round(baseline, 1), "final_mb": round(final, 1),
            "peak_after_warmup_mb": round(max(getattr(s, attr) for s in after), 1),
            "growth": round(final / baseline - 1, 5),
            "peak_growth": round(max(getattr(s, attr) for s in after) / baseline - 1, 5),
            "slope_mb_per_audio_hour": round(slope, 3)}


def _status(port: int) -> dict | None:
    try:
        return get_status(port)
    except (OSError, ValueError):
        return None


def run_soak(hours: float, workdir: Path, *, warmup: float = 0.1, preset: str = "still",
             size: str = "320x180", x264_preset: str = "ultrafast", checkpoint: str = "", sample_seconds: float = 1.0,
             log=print) -> dict:
    """Run the daemon for `hours` of audio into `workdir`/soak.mkv; returns the figures."""
    length = hours * 3600
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "soak.mkv"
    output.unlink(missing_ok=True)
    port = free_port()
    env = {**os.environ, "CHIPLOFI_VIDEO__PRESET": preset, "CHIPLOFI_VIDEO__SIZE": size,
           "CHIPLOFI_VIDEO__X264_PRESET": x264_preset,
           "CHIPLOFI_STREAM__STATE_DIR": str(workdir / "state")}
    args = [sys.executable, "-m", "streamer.cli", "stream", "--seed", "0", "--speed", "0", "--duration", f"{length:g}",
            "--output", str(output), "--status-addr", f"127.0.0.1:{port}"]
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    stderr_path = workdir / "daemon.log"
    started = time.monotonic()
    with open(stderr_path, "wb") as stderr:
        daemon = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    samples: list[Sample] = []
    last_status: dict | None = None
    cpu = {"daemon": 0.0, "ffmpeg": 0.0}
    ffmpeg_pids: set[int] = set()
    deadline = started + 120 + length / MIN_SPEED
    next_report = started
    try:
        while daemon.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slower than {MIN_SPEED:g}× real time: stopped (see {stderr_path})")
            time.sleep(sample_seconds)
            status = _status(port)
            if status is None:
                continue
            last_status = status
            ffmpeg = next((s for s in status["sinks"] if s["kind"] == "ffmpeg"), None)
            pid = ffmpeg["detail"].get("pid") if ffmpeg else None
            if pid:
                ffmpeg_pids.add(pid)
                cpu["ffmpeg"] = max(cpu["ffmpeg"], cpu_seconds(pid))
            cpu["daemon"] = max(cpu["daemon"], cpu_seconds(daemon.pid) - (cpu_seconds(pid) if pid else 0.0))
            samples.append(Sample(time.monotonic() - started, status["clock"]["position_seconds"],
                                  ffmpeg["detail"].get("encoded_seconds", 0.0) if ffmpeg else 0.0,
                                  rss_mb(daemon.pid), rss_mb(pid) if pid else 0.0))
            if time.monotonic() >= next_report:
                next_report += 300
                log(f"  {samples[-1].audio / 3600:6.2f} h of audio after {samples[-1].wall / 60:5.1f} min; "
                    f"RSS daemon {samples[-1].rss_daemon:.0f} MB, ffmpeg {samples[-1].rss_ffmpeg:.0f} MB")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    runtime = time.monotonic() - started
    log_text = stderr_path.read_text(encoding="utf-8", errors="replace")
    if daemon.returncode != 0 or last_status is None:
        raise RuntimeError(f"the daemon exited with code {daemon.returncode}:\n{log_text[-3000:]}")
    drift = packet_drift(output, length)
    counters = last_status["counters"]
    ffmpeg = next(s for s in last_status["sinks"] if s["kind"] == "ffmpeg")
    encoder_lag = [s.audio - s.encoded for s in samples if s.encoded > 0]
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "audio_hours": hours, "runtime_seconds": round(runtime, 1),
        "speed_x_real_time": round(length / runtime, 2),
        "settings": {"video_preset": preset, "video_size": size or "the preset's", "x264_preset": x264_preset,
                     "composer": last_status["checkpoint"]["id"], "warmup_fraction": warmup,
                     "window_fraction": WINDOW, "sample_seconds": sample_seconds},
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "samples": len(samples),
        "rss": {"daemon": rss_figures(samples, "rss_daemon", length, warmup),
                "ffmpeg": rss_figures(samples, "rss_ffmpeg", length, warmup)},
        "drift": {"max_seconds": round(drift.max_drift, 4), "end_seconds": round(drift.end_drift, 4),
                  "start_offset_seconds": round(drift.start_offset, 4),
                  "end_difference_seconds": round(drift.audio.end - drift.video.end, 4),
                  "audio_end": round(drift.audio.end, 3), "video_end": round(drift.video.end, 3),
                  "points": len(drift.points),
                  "audio": {"packets": drift.audio.packets, "gaps": drift.audio.gaps,
                            "non_monotonic": drift.audio.non_monotonic,
                            "max_slip_seconds": round(drift.audio.max_abs_slip, 4)},
                  "video": {"packets": drift.video.packets, "gaps": drift.video.gaps,
                            "non_monotonic": drift.video.non_monotonic,
                            "max_slip_seconds": round(drift.video.max_abs_slip, 4)}},
        "underruns": {"underruns": counters["underruns"], "pcm_underruns": counters["pcm_underruns"],
                      "logged": log_text.count("buffer underrun"),
                      "sink_frames_dropped": ffmpeg["frames_dropped"], "ffmpeg_restarts": ffmpeg["restarts"],
                      "ffmpeg_processes": len(ffmpeg_pids)},
        "counters": counters,
        "encoder_lag_seconds": {"median": round(statistics.median(encoder_lag), 2) if encoder_lag else None,
                                "max": round(max(encoder_lag), 2) if encoder_lag else None},
        "rss_series": [{"audio_hours": round(s.audio / 3600, 3), "daemon_mb": round(s.rss_daemon, 1),
                        "ffmpeg_mb": round(s.rss_ffmpeg, 1)} for s in samples[::max(1, len(samples) // 200)]],
    }


def underrun_total(result: dict) -> int:
    u = result["underruns"]
    return u["underruns"] + u["pcm_underruns"] + u["logged"] + u["sink_frames_dropped"] + u["ffmpeg_restarts"]


def print_table(result: dict) -> None:
    rss, drift = result["rss"], result["drift"]
    print(f"{result['audio_hours']:g} h of audio in {result['runtime_seconds'] / 60:.1f} min "
          f"({result['speed_x_real_time']:.1f}× real time), {result['settings']['video_preset']} video "
          f"at {result['settings'].get('video_size', 'its size')}, "
          f"composer {result['settings']['composer']}")
    print(f"{'figure':<34}{'daemon':>12}{'ffmpeg':>12}   goal")
    for label, key, unit in (("RSS after warm-up", "after_warmup_mb", " MB"), ("RSS at the end", "final_mb", " MB"),
                             ("peak RSS after warm-up", "peak_after_warmup_mb", " MB")):
        print(f"{label:<34}{rss['daemon'][key]:>9.1f}{unit}{rss['ffmpeg'][key]:>9.1f}{unit}")
    print(f"{'RSS growth after warm-up':<34}{100 * rss['daemon']['growth']:>11.2f}%"
          f"{100 * rss['ffmpeg']['growth']:>11.2f}%   < {100 * GOAL_GROWTH:g} % (daemon)")
    print(f"{'slope, MB per audio hour':<34}{rss['daemon']['slope_mb_per_audio_hour']:>12.3f}"
          f"{rss['ffmpeg']['slope_mb_per_audio_hour']:>12.3f}")
    print(f"{'A/V drift, max over the file':<34}{1000 * drift['max_seconds']:>9.1f} ms{'':>12}   "
          f"< {1000 * GOAL_DRIFT_SECONDS:g} ms")
    print(f"{'A/V drift at the end':<34}{1000 * drift['end_seconds']:>9.1f} ms{'':>12}   "
          f"< {1000 * GOAL_DRIFT_SECONDS:g} ms")
    print(f"{'timestamp gaps / out of order':<34}{drift['audio']['gaps']:>6} audio {drift['video']['gaps']:>4} video"
          f"  / {drift['audio']['non_monotonic'] + drift['video']['non_monotonic']}")
    print(f"{'underruns, drops, restarts':<34}{underrun_total(result):>12}{'':>12}   0  {result['underruns']}")


def passed(result: dict) -> bool:
    drift = result["drift"]
    return (result["rss"]["daemon"]["growth"] < GOAL_GROWTH and drift["max_seconds"] < GOAL_DRIFT_SECONDS
            and drift["end_seconds"] < GOAL_DRIFT_SECONDS and underrun_total(result) == 0
            and drift["audio"]["gaps"] + drift["video"]["gaps"] == 0
            and drift["audio"]["non_monotonic"] + drift["video"]["non_monotonic"] == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="hours of audio (default 24)")
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="share of the audio counted as warm-up before RSS growth is measured (default 0.1)")
    parser.add_argument("--preset", default="still", choices=("720p30", "480p15", "still"),
                        help="video preset (default still: the lowest frame rate)")
    parser.add_argument("--size", default="320x180",
                        help='video.size, WIDTHxHEIGHT (default 320x180; "" = the preset\'s)')
    parser.add_argument("--x264-preset", default="ultrafast", help="x264 speed preset (default ultrafast)")
    parser.add_argument("--checkpoint", default="", help="composer checkpoint (default: the shipped one)")
    parser.add_argument("--workdir", type=Path, help="keep the output file and logs here (default: a temporary "
                                                     "directory, deleted afterwards)")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json", help="results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        result = run_soak(args.hours, args.workdir or Path(tmp), warmup=args.warmup, preset=args.preset, size=args.size,
                          x264_preset=args.x264_preset, checkpoint=args.checkpoint)
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if passed(result) else 2


if __name__ == "__main__":
    sys.exit(main())
