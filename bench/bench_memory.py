"""Where the daemon's memory goes: RSS against hours of audio, the C heap, and (optionally) the
Python allocation sites that grew between two points in the music.

`chiplofi stream --speed 0 --output null` runs in this process (composer → ring buffer →
FluidSynth → effects → a sink that discards the audio; no ffmpeg), unpaced, with the configured
composer and a fixed seed, so the same run plays the same music every time and a memory step
found at some hour of audio comes back at the same hour. A sampler thread reads, every
`--sample-seconds` of wall time: the audio position (from /status), VmRSS, glibc's heap figures
(`mallinfo2`: bytes in use, bytes free inside the heap, mmapped) and the interpreter's allocated
blocks.

With `--trace-from H`, tracemalloc starts at H hours of audio (it slows the daemon about 8×, so
start it shortly before the step you are after) and at each of `--snapshots H1,H2,...` the
allocation sites that grew since H are written to `<json>.H1.txt` etc. (largest first, with
their stacks). While tracing, the RSS and heap figures include tracemalloc's own tables: read
growth from an untraced run. This is how the 3.7 MB step of the 24 h soak (issue 6) was traced to the
interned-string table that pathlib fed with archive file names.

Run: .venv/bin/python bench/bench_memory.py --hours 12 [--trace-from 8.6 --snapshots 9.6,10.6]
     [--seed 0] [--checkpoint DIR|rule-based|debug]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

from bench_daemon import RESULTS, ROOT, get_status, machine_description  # noqa: E402
from bench_soak import rss_figures  # noqa: E402
from testkit.procfs import rss_mb  # noqa: E402
from testkit.waiting import free_port  # noqa: E402

TOP_SITES = 25


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_reader():
    """A function returning glibc's heap figures in MB (in use, free inside the heap, mmapped);
    None where there is no glibc `mallinfo2`."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        function = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = _MallInfo2

    def read() -> dict[str, float]:
        info = function()
        return {"heap_in_use_mb": info.uordblks / 1e6, "heap_free_mb": info.fordblks / 1e6,
                "mmapped_mb": info.hblkhd / 1e6}
    return read


def _write_growth(path: Path, base: tracemalloc.Snapshot, hours: float) -> None:
    snapshot = tracemalloc.take_snapshot()
    with open(path, "w") as out:
        out.write(f"allocation sites grown since tracing started, at {hours:.3f} h of audio\n\n")
        for stat in snapshot.compare_to(base, "traceback")[:TOP_SITES]:
            out.write(f"{stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks\n")
            out.writelines(f"    {line}\n" for line in stat.traceback.format(limit=10))


def sample(port: int, args: argparse.Namespace, samples: list[dict], done: threading.Event) -> None:
    """The sampler thread: figures every `sample_seconds`, snapshots, then SIGTERM at the end."""
    heap = heap_reader()
    snapshots = sorted(args.snapshots)
    base = None
    started = time.monotonic()
    try:
        while not done.wait(args.sample_seconds):
            try:
                hours = get_status(port)["clock"]["position_seconds"] / 3600
            except OSError:
                continue  # the status server is not up yet
            row = {"wall_seconds": round(time.monotonic() - started, 1), "audio_hours": round(hours, 4),
                   "rss_mb": rss_mb(os.getpid()), "python_blocks": sys.getallocatedblocks()}
            if heap:
                row.update({k: round(v, 2) for k, v in heap().items()})
            samples.append(row)
            if args.trace_from is not None and base is None and hours >= args.trace_from:
                tracemalloc.start(10)
                base = tracemalloc.take_snapshot()
            while base is not None and snapshots and hours >= snapshots[0]:
                _write_growth(args.json.with_suffix(f".{snapshots.pop(0):g}h.txt"), base, hours)
            if hours >= args.hours:
                break
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon stops as it does under systemd


def summarise(samples: list[dict], hours: float) -> dict:
    """Per figure, bench_soak's RSS figures (medians of the 5 % after 10 % of the audio and of the
    last 5 %, peak, growth, slope per audio hour), so the two tools' growth figures compare."""
    result = {}
    for key in ("rss_mb", "heap_in_use_mb", "heap_free_mb", "python_blocks"):
        if samples and key in samples[0]:
            points = [SimpleNamespace(audio=s["audio_hours"] * 3600, value=s[key]) for s in samples]
            result[key] = rss_figures(points, "value", hours * 3600, warmup=0.10)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=12.0, help="hours of audio to play (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="the music's seed (default 0, as the soak)")
    parser.add_argument("--checkpoint", default="", help="composer: a checkpoint directory, rule-based or "
                        "debug (default: the configured one, i.e. the shipped models)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="wall seconds between samples")
    parser.add_argument("--trace-from", type=float, default=None, metavar="H",
                        help="start tracemalloc at H hours of audio (slows the daemon about 8×)")
    parser.add_argument("--snapshots", type=lambda text: [float(x) for x in text.split(",") if x], default=[],
                        metavar="H1,H2", help="hours of audio at which to write the grown allocation sites")
    parser.add_argument("--json", type=Path, default=RESULTS / "memory.json")
    args = parser.parse_args()
    if args.snapshots and args.trace_from is None:
        parser.error("--snapshots needs --trace-from")
    if any(h < (args.trace_from or 0) for h in args.snapshots):
        parser.error("--snapshots must come after --trace-from")

    os.chdir(ROOT)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    samples: list[dict] = []
    done = threading.Event()
    from streamer.cli import main as chiplofi

    with tempfile.TemporaryDirectory(prefix="chiplofi-memory-") as state:
        # The track archive is on, as in the soak and in service: it is part of what is measured.
        os.environ["CHIPLOFI_STREAM__STATE_DIR"] = state
        os.environ["CHIPLOFI_STREAM__SEED"] = str(args.seed)
        command = ["stream", "--speed", "0", "--duration", f"{args.hours * 3600 + 600:.0f}", "--output", "null",
                   "--status-addr", f"127.0.0.1:{port}"]
        command += ["--checkpoint", args.checkpoint] if args.checkpoint else []
        sampler = threading.Thread(target=sample, args=(port, args, samples, done), daemon=True)
        started = time.monotonic()
        sampler.start()
        code = chiplofi(command)
        done.set()
        sampler.join(10)
    wall = time.monotonic() - started
    result = {"hours_of_audio": round(samples[-1]["audio_hours"], 3) if samples else 0.0,
              "wall_minutes": round(wall / 60, 2), "exit_code": code, "seed": args.seed,
              "checkpoint": args.checkpoint or "configured", "trace_from_hours": args.trace_from,
              "machine": machine_description(), "load_average": os.getloadavg()[0],
              "summary": summarise(samples, args.hours), "samples": samples}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['hours_of_audio']:.2f} h of audio in {result['wall_minutes']:.1f} min")
    for key, figures in result["summary"].items():
        print(f"  {key:15s} after warm-up {figures['after_warmup_mb']:10.1f}  end {figures['final_mb']:10.1f}  "
              f"peak {figures['peak_after_warmup_mb']:10.1f}  growth {figures['growth'] * 100:6.2f} %")
    print(f"  -> {args.json}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
