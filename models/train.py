"""Training: the bar VAE first, then the LSTM over the VAE's latents; budgets, resume, DDP.

    python -m models.train --out runs/base --minutes 25            # or: chiplofi train ...
    torchrun --nproc_per_node=4 -m models.train --out runs/big     # data-parallel (gloo, CPU)

`train()` reads the MIDI folders (cached), normalises every song to C major / A minor, splits
by song (by game for NES), and trains each network with `models.fit.fit` within a wall-clock
budget (`minutes`) and/or epoch limits, keeping the best model by a held-out figure (the VAE's
accuracy, the LSTM's NLL) and stopping early after `patience` epochs without improvement. After
every epoch it writes `resume/` (weights, optimiser, history) so an interrupted run continues
with `resume=True`. The output directory ends with the two checkpoints (`vae.*`, `lstm.*`, see
`models.checkpoint`) and `loss_curves.png`.

Under torchrun (WORLD_SIZE > 1) each process trains on its share of every epoch's batches and
gradients are averaged (DistributedDataParallel, gloo backend); rank 0 validates, saves and
draws. The corpus becomes tensors in `models.tensors`; the held-out figures are
`models.held_out`'s (`evaluate_vae`, `evaluate_lstm`: on any corpus).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import checkpoint as ckpt
from models.baseline import bar_arrays, reconstruction_baselines
from models.config import LSTMConfig, TrainConfig, VAEConfig
from models.corpus import Corpus
from models.data import load_corpus
from models.errors import CheckpointError, DataError, ModelError
from models.finetune import SHIPPED, InitialModels, init_directory, load_initial_models
from models.fit import Budget, CheckpointKeeper, Dist, Epoch, Step, Validation, fit, new_state, saved_state
from models.held_out import chord_bigram_nll, evaluate_lstm, evaluate_vae, held_out_figures
from models.lstm import BarLSTM, sequence_losses
from models.split import split_corpus
from models.tensors import (
    BarTensors,
    SongSequences,
    balanced_windows,
    bar_tensors,
    encode_means,
    song_sequences,
    transpose_batch,
    window_batch,
    windows,
)
from models.tokens import STYLES
from models.vae import BarVAE, kl_terms, reconstruction_loss

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the two stages

@dataclass
class TrainResult:
    out_dir: Path
    vae_metrics: dict[str, Any]
    lstm_metrics: dict[str, Any]
    seconds: float
    # The reconstruction baselines' held-out accuracy (models.baseline; the LSTM's chord bigram
    # is in lstm_metrics["val_chord_bigram_nll"]).
    vae_baselines: dict[str, float] = dataclasses.field(default_factory=dict)
    # Fine-tuning: the starting models' held_out_figures on this run's validation songs, and their directory.
    before: dict[str, float] | None = None
    init_from: Path | None = None
    songs: tuple[int, int] = (0, 0)  # (training, validation)


def _train_vae(vae: BarVAE, train_t: BarTensors, val_t: BarTensors, config: TrainConfig, out_dir: Path,
               deadline: float, dist: Dist, resume: bool, progress: bool, data_hash: str) -> dict[str, Any]:
    """The VAE's stage of `fit`: distinct bars, shuffled per epoch, at random transpositions; kept by
    held-out accuracy, the learning rate halved on a plateau."""
    model = dist.wrap(vae)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)

    @functools.cache
    def distinct() -> torch.Tensor:  # only when an epoch runs (not for a finished stage)
        bars = train_t.distinct_bars()
        log.info("VAE: %d distinct training bars of %d", len(bars), len(train_t))
        return bars

    def epoch(state: dict[str, Any]) -> Epoch:
        bars = distinct()
        n = len(bars)
        generator.manual_seed(config.seed * 1000 + state["epoch"])
        order = bars[torch.randperm(n, generator=generator)]

        def train_batch(batch_number: int) -> Step:
            begin = (batch_number * dist.world + dist.rank) * config.batch_size
            index = order[begin:begin + config.batch_size]
            tokens, mask, root = train_t.tokens[index], train_t.voice_mask[index], train_t.root[index]
            previous_tail = train_t.previous_tail[index].long()
            shift = torch.randint(-config.augment_semitones, config.augment_semitones + 1, (len(index),),
                                  generator=generator)
            shift = torch.where(torch.rand(len(index), generator=generator) < config.augment_probability,
                                shift, torch.zeros_like(shift))
            tokens, root = transpose_batch(tokens, root, shift)
            previous_tail, _ = transpose_batch(previous_tail, root, shift)
            cond = train_t.condition(index, key_offset=shift % 12)
            cond.root = root
            logits, mu, logvar = model(tokens, cond, mask, previous_tail)
            recon, _, _ = reconstruction_loss(logits, tokens, mask)
            kl_free, kl = kl_terms(mu, logvar, config.free_bits)
            beta = config.beta_max * min(1.0, state["step"] / max(1, config.beta_warmup_steps))
            loss = recon + beta * kl_free
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            state["step"] += 1
            recon_value, kl_value = float(recon.detach()), float(kl.detach())
            return Step({"loss": float(loss.detach()), "recon": recon_value, "kl": kl_value},
                        {"recon": f"{recon_value:.1f}", "kl": f"{kl_value:.1f}", "beta": f"{beta:.2f}"})

        return Epoch(max(1, n // (config.batch_size * dist.world)), train_batch)

    def validate(sums: dict[str, float], batches: int, epoch_number: int) -> Validation:
        metrics = evaluate_vae(vae, val_t)
        val_loss = metrics["cross_entropy_per_bar"] + config.beta_max * metrics["kl_per_bar"]
        # Both curves as recon + beta_max * KL (training itself anneals beta and uses free bits).
        train_loss = (sums["recon"] + config.beta_max * sums["kl"]) / batches
        log.info("VAE epoch %d: train %.2f, val recon %.2f, KL %.2f, accuracy %.4f, active units %d/%d",
                 epoch_number, train_loss, metrics["cross_entropy_per_bar"],
                 metrics["kl_per_bar"], metrics["accuracy"], metrics["active_units"], vae.config.latent_dim)
        kept = {f"val_{k}": v for k, v in metrics.items()}
        kept.update(epoch=epoch_number, train_bars=len(train_t))
        # The figure that matters is held-out accuracy: keep and stop by it.
        return Validation(-metrics["accuracy"],
                          {"epoch": epoch_number, "train_loss": train_loss, "train_recon": sums["recon"] / batches,
                           "val_loss": val_loss, "val_recon": metrics["cross_entropy_per_bar"],
                           "val_accuracy": metrics["accuracy"], "active_units": metrics["active_units"]},
                          kept)

    return fit("vae", vae, optimizer, epoch=epoch, validate=validate,
               keeper=CheckpointKeeper(out_dir, "vae", vae, data_hash),
               budget=Budget(config.max_epochs_vae, config.patience, deadline), resume_dir=out_dir / "resume",
               resume=resume, state=new_state(step=0), halve_lr_on_plateau=True, dist=dist, progress=progress)


def _train_lstm(lstm: BarLSTM, train_s: SongSequences, val_s: SongSequences, config: TrainConfig, out_dir: Path,
                deadline: float, dist: Dist, resume: bool, progress: bool, data_hash: str,
                extra_metrics: dict[str, Any]) -> dict[str, Any]:
    """The LSTM's stage of `fit`: windows of every song at a random phase per epoch, the played
    styles' repeated (`balanced_windows`); kept by held-out chord + latent NLL, at a constant
    learning rate. A run whose VAE changed starts over."""
    model = dist.wrap(lstm)
    optimizer = torch.optim.AdamW(lstm.parameters(), lr=config.lstm_learning_rate, weight_decay=config.weight_decay)
    resume_dir = out_dir / "resume"
    vae_id = extra_metrics.get("vae_model_id", "")
    if resume and saved_state(resume_dir, "lstm").get("vae_model_id") != vae_id:
        log.info("the VAE changed since the LSTM was trained: training the LSTM from the start")
        resume = False
    latent_weight = config.lstm_latent_weight

    def epoch(state: dict[str, Any]) -> Epoch:
        rng = np.random.default_rng(config.seed * 1000 + state["epoch"])
        items, repeats = balanced_windows(train_s, windows(train_s, config.lstm_window, rng), config.lstm_window,
                                          config.lstm_style_floor, config.lstm_style_repeats)
        log.info("LSTM epoch %d repeats the windows of %s", state["epoch"] + 1, ", ".join(
            f"{STYLES[style]} {count}x" for style, count in repeats.items()))
        order = rng.permutation(len(items))

        def train_batch(batch_number: int) -> Step:
            begin = (batch_number * dist.world + dist.rank) * config.lstm_batch_size
            chosen = [items[i] for i in order[begin:begin + config.lstm_batch_size]]
            latents, chords, style, mode, start, lengths = window_batch(train_s, chosen, config.lstm_window)
            # DDP wraps forward(); sequence_losses calls the module, so give it the wrapper.
            chord_nll, latent_nll, mask = sequence_losses(model, latents, chords, style, mode, start, lengths)
            loss = ((chord_nll + latent_weight * latent_nll) * mask).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(lstm.parameters(), 1.0)
            optimizer.step()
            value = float(loss.detach())
            return Step({"loss": value}, {"loss": f"{value:.3f}"})

        return Epoch(max(1, len(items) // (config.lstm_batch_size * dist.world)), train_batch)

    def validate(sums: dict[str, float], batches: int, epoch_number: int) -> Validation:
        metrics = evaluate_lstm(lstm, None, val_s, config.lstm_window)
        val_loss = metrics["chord_nll"] + latent_weight * metrics["latent_nll"]
        log.info("LSTM epoch %d: train %.3f, val chord NLL %.3f, latent NLL %.2f", epoch_number,
                 sums["loss"] / batches, metrics["chord_nll"], metrics["latent_nll"])
        return Validation(val_loss,
                          {"epoch": epoch_number, "train_loss": sums["loss"] / batches, "val_loss": val_loss,
                           "val_chord_nll": metrics["chord_nll"], "val_latent_nll": metrics["latent_nll"]},
                          {"val_chord_nll": metrics["chord_nll"], "val_latent_nll": metrics["latent_nll"],
                           "epoch": epoch_number, **extra_metrics})

    return fit("lstm", lstm, optimizer, epoch=epoch, validate=validate,
               keeper=CheckpointKeeper(out_dir, "lstm", lstm, data_hash),
               budget=Budget(config.max_epochs_lstm, config.patience, deadline), resume_dir=resume_dir,
               resume=resume, state=new_state(vae_model_id=vae_id), dist=dist, progress=progress)


def plot_losses(out_dir: Path) -> Path | None:
    """Draw `loss_curves.png` from the histories in `out_dir/resume/`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = {}
    for stage in ("vae", "lstm"):
        card = out_dir / "resume" / f"{stage}.json"
        if card.exists():
            histories[stage] = json.loads(card.read_text())["state"]["history"]
    if not histories:
        return None
    figure, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.6), squeeze=False)
    for axis, (stage, history) in zip(axes[0], histories.items(), strict=True):
        epochs = [h["epoch"] for h in history]
        axis.plot(epochs, [h["train_loss"] for h in history], label="train")
        axis.plot(epochs, [h["val_loss"] for h in history], label="validation")
        axis.set_title({"vae": "VAE: reconstruction + β·KL per bar",
                        "lstm": "LSTM: chord NLL + 0.1 × latent NLL per bar"}[stage])
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = out_dir / "loss_curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


@dataclass
class KeptVAE:
    """The VAE of `--vae-from`: trained elsewhere, kept as it is."""

    vae: BarVAE
    directory: Path
    named: str  # as the command named it: a directory, or SHIPPED
    model_id: str
    data_hash: str

    def install(self, out_dir: Path, val_t: BarTensors, data_hash: str) -> dict[str, Any]:
        """Copy its files into `out_dir` (a stale VAE training state there is removed, so a resume
        or the loss curves never mix it in) and return its figures on this run's held-out bars."""
        for path in ckpt.paths(self.directory, "vae"):
            if path.resolve() != (out_dir / path.name).resolve():
                shutil.copyfile(path, out_dir / path.name)
        stale = out_dir / "resume" / "vae.json"
        if stale.exists():
            log.info("removing %s: the VAE is kept from %s, not trained here", stale, self.directory)
            stale.unlink()
        if self.data_hash != data_hash:
            log.warning("the kept VAE was trained on other data (hash %s, these folders %s): its held-out "
                        "figures may include songs it trained on", self.data_hash, data_hash)
        metrics = {f"val_{name}": value for name, value in evaluate_vae(self.vae, val_t).items()}
        log.info("VAE kept from %s: held-out accuracy %.4f", self.directory, metrics["val_accuracy"])
        return metrics


def _load_kept_vae(named: str | Path) -> KeptVAE:
    directory = init_directory(named)
    if not (directory / "vae.json").is_file():
        raise CheckpointError(f"--vae-from {directory}: no VAE checkpoint (vae.json) there")
    vae, info = ckpt.load_checkpoint(directory, "vae")
    return KeptVAE(vae, directory, str(named) if str(named) == SHIPPED else str(directory), info.model_id,
                   info.data_hash)


def _recorded_vae_from(out_dir: Path) -> str | None:
    """The `--vae-from` an interrupted run in `out_dir` was started with (None: it trained its VAE)."""
    record = out_dir / "train_config.json"
    if not record.is_file():
        return None
    kept = json.loads(record.read_text()).get("vae_from")
    return kept["directory"] if kept else None


def train(out_dir: str | Path, folders: Sequence[str | Path] | None = None, *,
          config: TrainConfig | None = None, vae_config: VAEConfig | None = None,
          lstm_config: LSTMConfig | None = None, resume: bool = False, progress: bool = True,
          corpus: Corpus | None = None, init_from: str | Path | None = None,
          vae_from: str | Path | None = None) -> TrainResult:
    """Train the VAE then the LSTM on `folders` (default: the shared data) into `out_dir`.

    `config.minutes` bounds the wall-clock time of both stages (data reading excluded);
    `max_epochs_*` bound the epochs. `corpus` skips reading folders (tests). `init_from` (a
    checkpoint directory, or `models.finetune.SHIPPED`) starts from its models, whose configs
    replace `vae_config` and `lstm_config` (see `models.finetune` for the settings to pair with it).
    `vae_from` (a checkpoint directory, or SHIPPED) keeps that VAE as it is (copied into `out_dir`)
    and trains only a new LSTM over its latents, with the whole budget; a resumed run keeps the
    VAE its first start named.
    """
    config = config or TrainConfig()
    out_dir = Path(out_dir)
    if init_from is not None and vae_from is not None:
        raise ModelError("give --init-from or --vae-from, not both")
    initial: InitialModels | None = load_initial_models(init_from) if init_from is not None else None
    if initial is not None:
        vae_config, lstm_config = initial.vae.config, initial.lstm.config
    if vae_from is None and resume:
        vae_from = _recorded_vae_from(out_dir)
    kept_vae = _load_kept_vae(vae_from) if vae_from is not None else None
    if kept_vae is not None:
        vae_config = kept_vae.vae.config
    vae_config = vae_config or VAEConfig()
    lstm_config = lstm_config or LSTMConfig(latent_dim=vae_config.latent_dim)
    if lstm_config.latent_dim != vae_config.latent_dim:
        raise ModelError("the LSTM's latent_dim must equal the VAE's")
    dist = Dist()
    torch.manual_seed(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    began = time.monotonic()

    if corpus is None:
        corpus = load_corpus(folders, progress=progress and dist.main)
    train_corpus, val_corpus = split_corpus(corpus, config.validation_percent)
    if train_corpus.n_bars == 0 or val_corpus.n_bars == 0:
        raise DataError(f"need songs for both training and validation, got {train_corpus.n_songs} and "
                        f"{val_corpus.n_songs} songs")
    log.info("training on %d songs (%d bars), validating on %d songs (%d bars); skipped files: %s",
             train_corpus.n_songs, train_corpus.n_bars, val_corpus.n_songs, val_corpus.n_bars, corpus.skipped)
    train_t, val_t = bar_tensors(train_corpus), bar_tensors(val_corpus)
    vae_baselines = reconstruction_baselines(bar_arrays(train_corpus), bar_arrays(val_corpus)) if dist.main else {}
    before = held_out_figures(initial.vae, initial.lstm, val_t, config.lstm_window) if initial and dist.main else None
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "train_config.json").write_text(json.dumps({
            "train": dataclasses.asdict(config), "vae": dataclasses.asdict(vae_config),
            "lstm": dataclasses.asdict(lstm_config),
            "folders": [str(f) for f in (folders or [])],  # [] = the shared default folders
            "data_hash": corpus.data_hash, "skipped": corpus.skipped,
            "init_from": {"directory": str(initial.directory), "vae_model_id": initial.vae_id,
                          "lstm_model_id": initial.lstm_id} if initial else None,
            "vae_from": {"directory": kept_vae.named, "vae_model_id": kept_vae.model_id} if kept_vae else None},
            indent=2))

    start = time.monotonic()
    budget = config.minutes * 60.0
    if kept_vae is not None:
        vae = kept_vae.vae
        vae_metrics = kept_vae.install(out_dir, val_t, corpus.data_hash) if dist.main else {}
    else:
        vae = initial.vae if initial else BarVAE(vae_config)
        vae_metrics = _train_vae(vae, train_t, val_t, config, out_dir, start + budget * config.vae_share,
                                 dist, resume, progress, corpus.data_hash)

    train_s = song_sequences(train_t, encode_means(vae, train_t))
    val_s = song_sequences(val_t, encode_means(vae, val_t))
    vae_id = kept_vae.model_id if kept_vae else ckpt.read_info(out_dir, "vae").model_id
    extra = {"vae_model_id": vae_id, "val_chord_bigram_nll": chord_bigram_nll(train_s, val_s)}
    torch.manual_seed(config.seed + 1)
    lstm = initial.lstm if initial else BarLSTM(lstm_config)
    lstm_metrics = _train_lstm(lstm, train_s, val_s, config, out_dir, start + budget, dist, resume, progress,
                               corpus.data_hash, extra)
    if dist.main:
        plot_losses(out_dir)
    seconds = time.monotonic() - began
    log.info("trained in %.1f min: VAE accuracy %.4f, LSTM chord NLL %.3f (bigram baseline %.3f)",
             seconds / 60, vae_metrics.get("val_accuracy", float("nan")),
             lstm_metrics.get("val_chord_nll", float("nan")), extra["val_chord_bigram_nll"])
    return TrainResult(out_dir, vae_metrics, lstm_metrics, seconds, vae_baselines, before,
                       initial.directory if initial else None, (train_corpus.n_songs, val_corpus.n_songs))


def build_parser() -> argparse.ArgumentParser:
    """Parser of `python -m models.train` (the same options as `chiplofi train`)."""
    from models.train_options import TRAIN_DESCRIPTION, add_train_arguments

    parser = argparse.ArgumentParser(prog="python -m models.train", description=TRAIN_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_train_arguments(parser)


def run_from_args(args: argparse.Namespace) -> int:
    """Train as the command line asks, then print the summary (rank 0 only under torchrun)."""
    from models.finetune import fine_tuning_config
    from models.train_summary import summary_text

    config = TrainConfig(seed=args.seed, patience=args.patience, threads=args.threads)
    config = (fine_tuning_config(config, args.minutes) if args.init_from is not None
              else dataclasses.replace(config, minutes=config.minutes if args.minutes is None else args.minutes))
    if args.epochs is not None:
        config = dataclasses.replace(config, max_epochs_vae=args.epochs, max_epochs_lstm=args.epochs)
    result = train(args.out, args.data, config=config, resume=args.resume, progress=not args.no_progress,
                   init_from=args.init_from, vae_from=args.vae_from)
    if Dist().main:
        sys.stdout.write(summary_text(result))
        sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
