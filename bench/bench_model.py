"""Model time per generated bar: the LSTM and the VAE as the composer runs them, one CPU thread.

Rows (per bar, median of several runs; torch and numpy's BLAS held to one thread):
  composer model  the time the composer spends in the networks — LSTM steps, next-latent
                  distributions, VAE decoding — by its own count (`Composer.model_seconds`,
                  wall clock: a busy machine inflates it; the load average is recorded)
  composer bar    everything the composer does for a bar: networks, token sampling,
                  clean-up, drums, voicing, notes (CPU time of this thread)
× real time is against a bar at 80 BPM (3 s). Goal (issue 3): composer model ≤ 2 ms per bar.
Uses the shipped checkpoint (models/checkpoints) or --checkpoint DIR; without one, full-size
models with untrained weights (the same arithmetic).
Run: .venv/bin/python bench/bench_model.py [--bars N] [--runs N] [--checkpoint DIR]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, before numpy loads
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from models import checkpoint as ckpt  # noqa: E402
from models.composer import Composer, Controls  # noqa: E402
from models.config import LSTMConfig, VAEConfig  # noqa: E402
from models.lstm import BarLSTM  # noqa: E402
from models.vae import BarVAE  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_MS_PER_BAR = 2.0
BAR_SECONDS_80_BPM = 4 * 60.0 / 80.0


def load_models(directory: Path | None) -> tuple[BarVAE, BarLSTM, str]:
    """(VAE, LSTM, description) from a checkpoint directory, the shipped one, or untrained."""
    candidates = [directory] if directory is not None else [ckpt.shipped_directory()]
    for candidate in candidates:
        if candidate is not None and (candidate / "vae.json").exists():
            vae, lstm, infos = ckpt.load_models(candidate)
            return vae, lstm, f"{infos['vae'].model_id}+{infos['lstm'].model_id} ({candidate})"
    if directory is not None:
        raise SystemExit(f"no checkpoint in {directory}")
    torch.manual_seed(0)
    vae_config = VAEConfig()
    return BarVAE(vae_config).eval(), BarLSTM(LSTMConfig(latent_dim=vae_config.latent_dim)).eval(), \
        "untrained full-size models (no shipped checkpoint yet)"


def composer_ms(vae: BarVAE, lstm: BarLSTM, bars: int, seed: int) -> tuple[float, float, float]:
    """(composer's model ms per bar (wall), CPU ms per whole bar, p99 CPU ms of one bar)."""
    composer = Composer.from_modules(vae, lstm, Controls(seed=seed))
    next(composer)  # the first bar also plans the track
    model_before = composer.model_seconds
    per_bar = []
    for _ in range(bars):
        started = time.thread_time()
        next(composer)
        per_bar.append(time.thread_time() - started)
    model = 1000.0 * (composer.model_seconds - model_before) / bars
    return model, 1000.0 * sum(per_bar) / bars, 1000.0 * float(np.percentile(per_bar, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=300, help="bars per run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="runs; the median is reported (default %(default)s)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory (default: shipped)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    vae, lstm, description = load_models(args.checkpoint)
    rows: dict[str, list[float]] = {"composer model": [], "composer bar": []}
    worst: list[float] = []
    composer_ms(vae, lstm, 20, seed=99)  # warm-up
    for run in range(args.runs):
        model, whole, p99 = composer_ms(vae, lstm, args.bars, seed=run)
        rows["composer model"].append(model)
        rows["composer bar"].append(whole)
        worst.append(p99)

    print(f"models: {description}")
    print(f"{args.runs} runs of {args.bars} bars, 1 thread, median per bar")
    print(f"{'row':<16} {'ms/bar':>8} {'bars/s':>9} {'x real time':>12}")
    result_rows = {}
    for name, values in rows.items():
        ms = statistics.median(values)
        result_rows[name] = {"ms_per_bar_median": ms, "ms_per_bar_runs": values, "bars_per_second": 1000.0 / ms,
                             "x_realtime_80bpm": BAR_SECONDS_80_BPM * 1000.0 / ms}
        print(f"{name:<16} {ms:>8.3f} {1000.0 / ms:>9.0f} {BAR_SECONDS_80_BPM * 1000.0 / ms:>11.0f}x")
    p99 = statistics.median(worst)
    print(f"composer bar, 99th percentile of single bars: {p99:.2f} ms")
    achieved = result_rows["composer model"]["ms_per_bar_median"]
    meets = achieved <= GOAL_MS_PER_BAR
    load_average = os.getloadavg()[0]
    print(f"model time {achieved:.3f} ms per bar: {'meets' if meets else 'MISSES'} the goal of ≤ {GOAL_MS_PER_BAR} ms "
          f"(load average {load_average:.1f} on {os.cpu_count()} CPUs)")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model.json").write_text(json.dumps({
        "benchmark": "model time per generated bar (LSTM + VAE), one thread", "models": description,
        "bars_per_run": args.bars, "runs": args.runs, "rows": result_rows,
        "composer_bar_p99_ms": p99, "goal_ms_per_bar": GOAL_MS_PER_BAR, "meets_goal": meets,
        "load_average_1min": load_average,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
