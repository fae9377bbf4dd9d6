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
draws. `evaluate_vae` and `evaluate_lstm` give the held-out figures on any corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import checkpoint as ckpt
from models.baseline import bar_arrays, reconstruction_baselines
from models.config import LSTMConfig, TrainConfig, VAEConfig
from models.corpus import Corpus
from models.data import load_corpus
from models.errors import DataError, ModelError
from models.finetune import InitialModels, load_initial_models
from models.fit import Budget, CheckpointKeeper, Dist, Epoch, Step, Validation, fit, new_state, saved_state
from models.layout import N_CHORDS, chord_index
from models.lstm import BarLSTM, sequence_losses
from models.split import split_corpus
from models.theory import NO_CHORD_ROOT
from models.tokens import FIRST_PITCH_TOKEN, N_PITCHES, STEPS_PER_BAR, STYLES
from models.vae import TAIL_STEPS, BarCondition, BarVAE, active_units, activity_levels, kl_terms, reconstruction_loss

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- corpus → tensors

@dataclass
class BarTensors:
    """All bars of a (key-normalised) corpus as tensors."""

    tokens: torch.Tensor  # (N, 16, 4) int64
    previous_tail: torch.Tensor  # (N, TAIL_STEPS, 4) int16: the steps before each bar in its song (rests before)
    voice_mask: torch.Tensor  # (N, 4) bool: voice known in this bar's song
    root: torch.Tensor  # (N,) int64
    quality: torch.Tensor  # (N,) int64
    mode: torch.Tensor  # (N,) int64
    style: torch.Tensor  # (N,) int64
    song_starts: np.ndarray  # (n_songs + 1,)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def distinct_bars(self) -> torch.Tensor:
        """Indices of the first occurrence of every distinct bar within each song (songs repeat
        their choruses; the VAE learns as much from one copy, in less time)."""
        keep = []
        flat = torch.cat([self.tokens.flatten(1), self.previous_tail.flatten(1).long(), self.root[:, None],
                          self.quality[:, None]], dim=1)
        rows = flat.numpy()
        for song in range(len(self.song_starts) - 1):
            seen: set[bytes] = set()
            for i in range(int(self.song_starts[song]), int(self.song_starts[song + 1])):
                key = rows[i].tobytes()
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
        return torch.tensor(keep, dtype=torch.int64)

    def condition(self, index: torch.Tensor | slice, key_offset: torch.Tensor | None = None) -> BarCondition:
        tokens = self.tokens[index]
        offset = key_offset if key_offset is not None else torch.zeros(tokens.shape[0], dtype=torch.int64)
        return BarCondition(
            root=self.root[index], quality=self.quality[index], mode=self.mode[index], key_offset=offset,
            style=F.one_hot(self.style[index], len(STYLES)).float(),
            activity=activity_levels(tokens, self.voice_mask[index]),
        )


def bar_tensors(corpus: Corpus) -> BarTensors:
    """Tensors of `corpus` after moving every song to C major / A minor."""
    normalised = corpus.key_normalised()
    song_of_bar = normalised.song_of_bar()
    present = np.array([s.voices_present for s in normalised.songs], dtype=bool).reshape(-1, 4)
    modes = np.array([s.key_mode for s in normalised.songs], dtype=np.int64)
    styles = np.array([s.style for s in normalised.songs], dtype=np.int64)
    tokens = normalised.tokens.astype(np.int64)
    previous_tail = np.zeros((len(tokens), TAIL_STEPS, 4), dtype=np.int16)
    for song in range(normalised.n_songs):
        part = normalised.song_slice(song)
        steps = tokens[part].reshape(-1, 4)  # the song's steps in order
        padded = np.concatenate([np.zeros((TAIL_STEPS, 4), dtype=np.int64), steps])
        for bar in range(part.stop - part.start):
            previous_tail[part.start + bar] = padded[bar * STEPS_PER_BAR:bar * STEPS_PER_BAR + TAIL_STEPS]
    return BarTensors(
        tokens=torch.from_numpy(tokens),
        previous_tail=torch.from_numpy(previous_tail),
        voice_mask=torch.from_numpy(present[song_of_bar]) if len(song_of_bar) else torch.zeros(0, 4, dtype=torch.bool),
        root=torch.from_numpy(normalised.chords[:, 0].astype(np.int64)),
        quality=torch.from_numpy(normalised.chords[:, 1].astype(np.int64)),
        mode=torch.from_numpy(modes[song_of_bar]),
        style=torch.from_numpy(styles[song_of_bar]),
        song_starts=normalised.song_starts.copy(),
    )


def transpose_batch(tokens: torch.Tensor, root: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bars (B, T, 4) and chord roots (B,) moved by `shift` (B,) semitones, onsets folded into range."""
    tokens = tokens.clone()
    pitched = tokens[..., :3]  # (B, T, 3)
    onset = pitched >= FIRST_PITCH_TOKEN
    index = pitched - FIRST_PITCH_TOKEN + shift[:, None, None]
    index = torch.where(index < 0, index + 12, index)
    index = torch.where(index >= N_PITCHES, index - 12, index)
    tokens[..., :3] = torch.where(onset, index + FIRST_PITCH_TOKEN, pitched)
    root = torch.where(root == NO_CHORD_ROOT, root, (root + shift) % 12)
    return tokens, root


# --------------------------------------------------------------------------- evaluation

@torch.inference_mode()
def evaluate_vae(vae: BarVAE, data: Corpus | BarTensors, batch_size: int = 1024) -> dict[str, float]:
    """Held-out figures of the VAE: per-step reconstruction accuracy (decoding the posterior
    mean; all voices, known voices only), per voice, cross-entropy per bar, KL, active units."""
    tensors = bar_tensors(data) if isinstance(data, Corpus) else data
    vae.eval()
    total_ce = total_kl = 0.0
    correct = np.zeros(4)
    counted = np.zeros(4)
    mus = []
    for begin in range(0, len(tensors), batch_size):
        index = slice(begin, begin + batch_size)
        tokens, mask = tensors.tokens[index], tensors.voice_mask[index]
        cond = tensors.condition(index)
        logits, mu, logvar = vae(tokens, cond, mask, tensors.previous_tail[index].long(), sample=False)
        ce, _, _ = reconstruction_loss(logits, tokens, mask)
        _, kl = kl_terms(mu, logvar, 0.0)
        total_ce += float(ce) * tokens.shape[0]
        total_kl += float(kl) * tokens.shape[0]
        for voice, voice_logits in enumerate(logits):
            known = mask[:, voice:voice + 1].expand(-1, tokens.shape[1])
            right = (voice_logits.argmax(-1) == tokens[..., voice]) & known
            correct[voice] += float(right.sum())
            counted[voice] += float(known.sum())
        mus.append(mu)
    n = max(len(tensors), 1)
    result = {
        "accuracy": float(correct.sum() / max(counted.sum(), 1)),
        "cross_entropy_per_bar": total_ce / n,
        "kl_per_bar": total_kl / n,
        "active_units": active_units(torch.cat(mus)) if mus else 0,
        "bars": len(tensors),
    }
    for voice, name in enumerate(("lead", "harmony", "bass", "drums")):
        result[f"accuracy_{name}"] = float(correct[voice] / counted[voice]) if counted[voice] else float("nan")
    return result


@torch.inference_mode()
def encode_means(vae: BarVAE, tensors: BarTensors, batch_size: int = 2048) -> torch.Tensor:
    """(N, L) posterior means of every bar."""
    vae.eval()
    parts = []
    for begin in range(0, len(tensors), batch_size):
        index = slice(begin, begin + batch_size)
        mu, _ = vae.encode(tensors.tokens[index], tensors.condition(index), tensors.voice_mask[index])
        parts.append(mu)
    return torch.cat(parts) if parts else torch.zeros(0, vae.config.latent_dim)


@dataclass
class SongSequences:
    """Per-song latent and chord sequences for the LSTM."""

    latents: list[torch.Tensor]  # each (T_song, L)
    chords: list[torch.Tensor]  # each (T_song,) joint chord index
    style: torch.Tensor  # (n_songs, S) float
    mode: torch.Tensor  # (n_songs,) int64


def song_sequences(tensors: BarTensors, latents: torch.Tensor) -> SongSequences:
    joint = chord_index(tensors.root, tensors.quality)
    starts = tensors.song_starts
    seqs_z, seqs_c, styles, modes = [], [], [], []
    for i in range(len(starts) - 1):
        a, b = int(starts[i]), int(starts[i + 1])
        if b <= a:
            continue
        seqs_z.append(latents[a:b])
        seqs_c.append(joint[a:b])
        styles.append(int(tensors.style[a]))
        modes.append(int(tensors.mode[a]))
    return SongSequences(seqs_z, seqs_c, F.one_hot(torch.tensor(styles, dtype=torch.int64), len(STYLES)).float(),
                         torch.tensor(modes, dtype=torch.int64))


def _windows(seqs: SongSequences, window: int, offset_rng: np.random.Generator | None) -> list[tuple[int, int]]:
    """(song, first target bar) of windows covering every song; random phase when training."""
    result = []
    for song, chords in enumerate(seqs.chords):
        length = len(chords)
        phase = int(offset_rng.integers(0, window)) if offset_rng is not None and length > window else 0
        starts = [0] + list(range(phase if phase > 0 else window, length, window))
        result.extend((song, s) for s in starts)
    return result


def _window_batch(seqs: SongSequences, items: Sequence[tuple[int, int]], window: int):
    latent_dim = seqs.latents[0].shape[1]
    batch = len(items)
    latents = torch.zeros(batch, window + 1, latent_dim)
    chords = torch.zeros(batch, window + 1, dtype=torch.int64)
    lengths = torch.zeros(batch, dtype=torch.int64)
    song_start = torch.zeros(batch, dtype=torch.bool)
    for row, (song, first) in enumerate(items):
        z, c = seqs.latents[song], seqs.chords[song]
        end = min(first + window, len(c))
        n = end - first
        latents[row, 1:n + 1] = z[first:end]
        chords[row, 1:n + 1] = c[first:end]
        if first == 0:
            song_start[row] = True
        else:
            latents[row, 0] = z[first - 1]
            chords[row, 0] = c[first - 1]
        lengths[row] = n
    songs = torch.tensor([s for s, _ in items])
    return latents, chords, seqs.style[songs], seqs.mode[songs], song_start, lengths


@torch.inference_mode()
def evaluate_lstm(lstm: BarLSTM, vae: BarVAE | None, data: Corpus | SongSequences,
                  window: int = 64) -> dict[str, float]:
    """Held-out NLL per bar (nats) of the LSTM: next chord, next latent (VAE posterior means)."""
    if isinstance(data, Corpus):
        if vae is None:
            raise ModelError("evaluate_lstm needs the VAE to encode a corpus")
        tensors = bar_tensors(data)
        seqs = song_sequences(tensors, encode_means(vae, tensors))
    else:
        seqs = data
    lstm.eval()
    items = _windows(seqs, window, None)
    chord_sum = latent_sum = bars = 0.0
    for begin in range(0, len(items), 64):
        latents, chords, style, mode, start, lengths = _window_batch(seqs, items[begin:begin + 64], window)
        chord_nll, latent_nll, mask = sequence_losses(lstm, latents, chords, style, mode, start, lengths)
        chord_sum += float((chord_nll * mask).sum())
        latent_sum += float((latent_nll * mask).sum())
        bars += float(mask.sum())
    return {"chord_nll": chord_sum / max(bars, 1), "latent_nll": latent_sum / max(bars, 1), "bars": bars}


def held_out_figures(vae: BarVAE, lstm: BarLSTM, val_t: BarTensors, window: int) -> dict[str, float]:
    """The figures the summary compares (VAE accuracy, LSTM chord NLL) of a model pair on held-out
    bars, the LSTM reading the pair's own VAE latents. Used on the starting models of a fine-tuning."""
    vae_metrics = evaluate_vae(vae, val_t)
    lstm_metrics = evaluate_lstm(lstm, None, song_sequences(val_t, encode_means(vae, val_t)), window)
    return {"val_accuracy": vae_metrics["accuracy"], "val_chord_nll": lstm_metrics["chord_nll"]}


def chord_bigram_nll(train: SongSequences, held_out: SongSequences, smoothing: float = 0.5) -> float:
    """Held-out NLL per bar (nats) of a chord bigram Markov chain fitted on `train` (a baseline)."""
    counts = np.full((N_CHORDS + 1, N_CHORDS), smoothing)  # row N_CHORDS: song start
    for chords in train.chords:
        previous = N_CHORDS
        for chord in chords.tolist():
            counts[previous, chord] += 1
            previous = chord
    log_probs = np.log(counts / counts.sum(axis=1, keepdims=True))
    total, bars = 0.0, 0
    for chords in held_out.chords:
        previous = N_CHORDS
        for chord in chords.tolist():
            total -= log_probs[previous, chord]
            previous = chord
            bars += 1
    return total / max(bars, 1)


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
    """The LSTM's stage of `fit`: windows of every song at a random phase per epoch; kept by
    held-out chord + latent NLL, at a constant learning rate. A run whose VAE changed starts over."""
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
        items = _windows(train_s, config.lstm_window, rng)
        order = rng.permutation(len(items))

        def train_batch(batch_number: int) -> Step:
            begin = (batch_number * dist.world + dist.rank) * config.lstm_batch_size
            chosen = [items[i] for i in order[begin:begin + config.lstm_batch_size]]
            latents, chords, style, mode, start, lengths = _window_batch(train_s, chosen, config.lstm_window)
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


def train(out_dir: str | Path, folders: Sequence[str | Path] | None = None, *,
          config: TrainConfig | None = None, vae_config: VAEConfig | None = None,
          lstm_config: LSTMConfig | None = None, resume: bool = False, progress: bool = True,
          corpus: Corpus | None = None, init_from: str | Path | None = None) -> TrainResult:
    """Train the VAE then the LSTM on `folders` (default: the shared data) into `out_dir`.

    `config.minutes` bounds the wall-clock time of both stages (data reading excluded);
    `max_epochs_*` bound the epochs. `corpus` skips reading folders (tests). `init_from` (a
    checkpoint directory, or `models.finetune.SHIPPED`) starts from its models, whose configs
    replace `vae_config` and `lstm_config` (see `models.finetune` for the settings to pair with it).
    """
    config = config or TrainConfig()
    initial: InitialModels | None = load_initial_models(init_from) if init_from is not None else None
    if initial is not None:
        vae_config, lstm_config = initial.vae.config, initial.lstm.config
    vae_config = vae_config or VAEConfig()
    lstm_config = lstm_config or LSTMConfig(latent_dim=vae_config.latent_dim)
    if lstm_config.latent_dim != vae_config.latent_dim:
        raise ModelError("the LSTM's latent_dim must equal the VAE's")
    out_dir = Path(out_dir)
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
                          "lstm_model_id": initial.lstm_id} if initial else None}, indent=2))

    start = time.monotonic()
    budget = config.minutes * 60.0
    vae = initial.vae if initial else BarVAE(vae_config)
    vae_metrics = _train_vae(vae, train_t, val_t, config, out_dir, start + budget * config.vae_share,
                             dist, resume, progress, corpus.data_hash)

    train_s = song_sequences(train_t, encode_means(vae, train_t))
    val_s = song_sequences(val_t, encode_means(vae, val_t))
    vae_id = ckpt.read_info(out_dir, "vae").model_id
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
                   init_from=args.init_from)
    if Dist().main:
        sys.stdout.write(summary_text(result))
        sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
