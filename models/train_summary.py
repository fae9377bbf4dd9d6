"""What `chiplofi train` prints when it ends: the figures beside their baselines, warnings when a
model does no better than a simple baseline (or than the models it was fine-tuned from), where the
checkpoints are, and what to do next.

A model worse than its baseline is still saved (it may still be worth a listen), but the user
must not find out from the stream: the summary says so and says what usually helps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.train import TrainResult

BASELINE_NAMES = {"step_bigram": "step bigram", "position_mode": "most frequent token per step",
                  "copy_previous_bar": "copy of the previous bar"}
# The unit file's name (systemd/chiplofi.service); a named channel is chiplofi@NAME.
SERVICE = "chiplofi"
SERVICE_CONFIG = "/etc/chiplofi/chiplofi.toml"
SERVICE_CHECKPOINTS = "/var/lib/chiplofi/checkpoints"  # the service cannot read /home or /root


def _figure(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def best_reconstruction_baseline(baselines: dict[str, float]) -> tuple[str, float] | None:
    """(readable name, accuracy) of the most accurate reconstruction baseline, if any."""
    finite = {k: v for k, v in baselines.items() if math.isfinite(v)}
    if not finite:
        return None
    name = max(finite, key=finite.__getitem__)
    return BASELINE_NAMES.get(name, name), finite[name]


def summary_warnings(result: TrainResult) -> list[str]:
    """One sentence per figure worse than its baseline or than the starting models'."""
    warnings = []
    accuracy = result.vae_metrics.get("val_accuracy", math.nan)
    chord_nll = result.lstm_metrics.get("val_chord_nll", math.nan)
    bigram = result.lstm_metrics.get("val_chord_bigram_nll", math.nan)
    baseline = best_reconstruction_baseline(result.vae_baselines)
    if baseline is not None and not accuracy > baseline[1]:
        warnings.append(f"the VAE's held-out accuracy {_figure(accuracy, 4)} is no better than the "
                        f"{baseline[0]} baseline ({_figure(baseline[1], 4)}): its bars will sound worse than "
                        f"the music it learned from")
    if math.isfinite(bigram) and not chord_nll < bigram:
        warnings.append(f"the LSTM's held-out chord NLL {_figure(chord_nll, 3)} is no better than the chord "
                        f"bigram baseline ({_figure(bigram, 3)}): its progressions will wander")
    if result.before is not None:
        start = result.before
        if not accuracy > start["val_accuracy"]:
            warnings.append(f"fine-tuning did not improve the VAE on your held-out files "
                            f"({_figure(start['val_accuracy'], 4)} before, {_figure(accuracy, 4)} after)")
        if not chord_nll < start["val_chord_nll"]:
            warnings.append(f"fine-tuning did not improve the LSTM on your held-out files (chord NLL "
                            f"{_figure(start['val_chord_nll'], 3)} before, {_figure(chord_nll, 3)} after)")
    return warnings


def advice(result: TrainResult) -> list[str]:
    """What usually helps when `summary_warnings` is not empty."""
    if result.before is not None:
        return [f"the models in {result.init_from} do better on these files: keep streaming them, or "
                "fine-tune on more files (a few dozen songs per style) or with a different --minutes"]
    if sum(result.songs) < 200:
        return [f"{sum(result.songs)} songs are too few to learn from scratch: start from the shipped "
                "models with --init-from (fine-tuning), or add files"]
    return ["train longer (--minutes) or on more files; --resume continues this run"]


def summary_text(result: TrainResult) -> str:
    """The end-of-training report: figures, warnings, checkpoints, next steps."""
    out = Path(result.out_dir).resolve()
    accuracy = result.vae_metrics.get("val_accuracy")
    chord_nll = result.lstm_metrics.get("val_chord_nll")
    bigram = result.lstm_metrics.get("val_chord_bigram_nll")
    baseline = best_reconstruction_baseline(result.vae_baselines)
    n_train, n_val = result.songs
    lines = [f"trained in {result.seconds / 60:.1f} min on {n_train} songs, figures on {n_val} held-out songs:",
             f"  VAE   reconstruction accuracy {_figure(accuracy, 4)}"
             + (f"   (baseline, {baseline[0]}: {_figure(baseline[1], 4)})" if baseline else ""),
             f"  LSTM  chord NLL {_figure(chord_nll, 3)} nats/bar   (baseline, chord bigram: {_figure(bigram, 3)})"]
    if result.before is not None:
        lines += [f"fine-tuned from {result.init_from}; on your held-out files, before -> after:",
                  f"  VAE   accuracy {_figure(result.before['val_accuracy'], 4)} -> {_figure(accuracy, 4)}",
                  f"  LSTM  chord NLL {_figure(result.before['val_chord_nll'], 3)} -> {_figure(chord_nll, 3)}"]
    warnings = summary_warnings(result)
    lines += [f"WARNING: {warning}" for warning in warnings]
    if warnings:
        lines += [f"  what helps: {line}" for line in advice(result)]
    lines += [f"checkpoints in {out} (vae.*, lstm.*, loss_curves.png)",
              "next:",
              f"  listen:  chiplofi generate --checkpoint {out} --out {out}/samples --minutes 3 --wav",
              f"  stream:  chiplofi stream --checkpoint {out}",
              f"  on the service: sudo cp -r {out} {SERVICE_CHECKPOINTS}/{out.name}, set checkpoint = "
              f"\"{SERVICE_CHECKPOINTS}/{out.name}\" under [stream] in {SERVICE_CONFIG}, then "
              f"`sudo systemctl reload {SERVICE}` (the new models take over on a bar boundary)"]
    return "\n".join(lines) + "\n"
