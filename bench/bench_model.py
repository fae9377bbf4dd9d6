"""Model time per generated bar: the LSTM step and the VAE decode, on one CPU thread.

Rows (per bar, median of several runs):
  networks        the model work of one bar as the composer does it — LSTM step, next-latent
                  distribution, VAE decoder condition and decode — timed directly (CPU time
                  of this thread, so other processes on the machine do not count)
  composer model  the composer's own count of time spent in the networks (wall clock)
  composer bar    everything the composer does for a bar: networks, step-by-step token
                  sampling, clean-up, drums, voicing, notes (CPU time)
× real time is against a bar at 80 BPM (3 s). Goal (issue 3): networks ≤ 2 ms per bar.
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
sys.path.insert(0, str(ROOT))

from models import checkpoint as ckpt  # noqa: E402
from models.composer import Composer, Controls  # noqa: E402
from models.config import LSTMConfig, VAEConfig  # noqa: E402
from models.lstm import BarLSTM, FastLSTM, chord_parts, sample_latent_np  # noqa: E402
from models.vae import BarVAE, FastDecoder  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_MS_PER_BAR = 2.0
BAR_SECONDS_80_BPM = 4 * 60.0 / 80.0


def load(directory: Path | None) -> tuple[BarVAE, BarLSTM, str]:
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


def networks_ms(vae: BarVAE, lstm: BarLSTM, bars: int, seed: int) -> float:
    """CPU ms per bar of the networks' work for one bar, as in the composer."""
    decoder, fast = FastDecoder(vae), FastLSTM(lstm)
    rng = np.random.default_rng(seed)
    style = np.array([0.45, 0.2, 0.35], dtype=np.float32)
    state = fast.initial_state()
    latent, chord = None, 0
    started = time.thread_time()
    for bar in range(bars):
        state, output = fast.step(state, latent, chord, style, 1)
        chord = int(np.argmax(fast.chord_logits(output)))
        mu, logvar = fast.latent_distribution(output, chord)
        latent = sample_latent_np(mu, logvar, 0.6, rng)
        activity = bar % 4
        root, quality = chord_parts(chord)
        condition = decoder.condition(root, quality, 1, 0, style, activity)
        decoder.decode(latent, condition, activity)
    return 1000.0 * (time.thread_time() - started) / bars


def composer_ms(vae: BarVAE, lstm: BarLSTM, bars: int, seed: int) -> tuple[float, float, float]:
    """(composer's model ms per bar (wall), CPU ms per whole bar, p99 CPU ms of one bar)."""
    composer = Composer(vae, lstm, Controls(seed=seed))
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

    vae, lstm, description = load(args.checkpoint)
    rows: dict[str, list[float]] = {"networks": [], "composer model": [], "composer bar": []}
    worst: list[float] = []
    networks_ms(vae, lstm, 20, seed=99)  # warm-up
    for run in range(args.runs):  # interleaved, so machine noise hits every row alike
        rows["networks"].append(networks_ms(vae, lstm, args.bars, seed=run))
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
    achieved = result_rows["networks"]["ms_per_bar_median"]
    meets = achieved <= GOAL_MS_PER_BAR
    print(f"networks {achieved:.3f} ms per bar: {'meets' if meets else 'MISSES'} the goal of ≤ {GOAL_MS_PER_BAR} ms")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model.json").write_text(json.dumps({
        "benchmark": "model time per generated bar (LSTM + VAE), one thread", "models": description,
        "bars_per_run": args.bars, "runs": args.runs, "rows": result_rows,
        "composer_bar_p99_ms": p99, "goal_ms_per_bar": GOAL_MS_PER_BAR, "meets_goal": meets,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
