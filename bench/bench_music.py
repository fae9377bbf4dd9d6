"""The music of the models beside real music, per style: the figures of `chiplofi eval`'s style
tables (`models.music_eval`), without the VAE and LSTM held-out figures (no torch).

Per style (lo-fi, NES, blend) the model, the model with N(0, 1) latents instead of the LSTM's,
the rule-based parts, random notes and the training split (the real-vs-real ceiling), each
against the style's held-out songs (the validation split of the checkpoint's training folders):
mean distance- and value-overlap over the Yang & Lerch features (the means also against the
style's training songs), and the figures of issue 12 with their goals. Deterministic for a
seed; the data are read through `models.data_cache`.
Writes bench/results/music.json; exits 2 when a goal is missed (a figure, not a failure).
Run: .venv/bin/python bench/bench_music.py [--minutes 60] [--seed 0] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from models import checkpoint as ckpt  # noqa: E402
from models.evaluate import DEFAULT_MINUTES, held_out_part, load_training_data, to_json  # noqa: E402
from models.music_eval import evaluate_music, format_music_table  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="minutes of music per style and composer (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composed music (default %(default)s)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory (default: shipped)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()

    began = time.monotonic()
    directory = args.checkpoint or ckpt.shipped_directory()
    whole, training, folders = load_training_data(directory, None, progress=not args.no_progress)
    if whole is None or training is None:
        raise SystemExit(f"training data not found ({', '.join(map(str, folders))})")
    validation, _ = held_out_part(whole, training)
    music, _ = evaluate_music(directory, training, validation, args.minutes, args.seed, not args.no_progress)
    seconds = time.monotonic() - began
    vae, lstm = ckpt.load_weight_pair(directory)
    print(f"models: {vae.info.model_id}+{lstm.info.model_id} ({directory}); seed {args.seed}")
    print(format_music_table(music))
    print(f"took {seconds:.0f} s (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "music.json").write_text(json.dumps(to_json({
        "benchmark": "music beside real music per style: overlaps and figures (models.music_eval)",
        "models": f"{vae.info.model_id}+{lstm.info.model_id}", "checkpoint": str(directory),
        "training_folders": [str(f) for f in folders], "seed": args.seed, "music": music,
        "goals_met": sum(1 for row in music["goals"] if row["pass"]),
        "goals_judged": sum(1 for row in music["goals"] if row["pass"] is not None),
        "seconds": seconds, "load_average_1min": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }), indent=2, allow_nan=False) + "\n")
    print(f"wrote {RESULTS / 'music.json'}")
    return 0 if all(row["pass"] for row in music["goals"] if row["pass"] is not None) else 2


if __name__ == "__main__":
    sys.exit(main())
