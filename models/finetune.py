"""Fine-tuning: starting training from an existing checkpoint pair instead of random weights.

`chiplofi train --init-from [DIR]` adapts trained models (by default the shipped ones) to a
small folder of one's own files. A folder of ~40 songs is too small to learn the bar VAE and the
LSTM from scratch (they end worse than simple baselines), but is enough to move models that
already know music towards its style. What changes against training from scratch:

- the architecture comes from the starting checkpoint's cards (`model_args`), not from defaults;
- smaller learning rates (`FINE_TUNE_LEARNING_RATE`), so that the small folder moves the weights
  rather than replaces what they learned from the large corpus;
- no KL warm-up: the VAE's latent space exists already; annealing beta from 0 would let the
  posterior spread out and the LSTM's latents drift from what it predicts;
- a shorter default budget (`FINE_TUNE_MINUTES`): small folders converge in minutes, and the
  whole command (reading, both models, evaluation) stays within a quarter of an hour on 2 cores.

The starting models' figures on the folder's held-out files are measured before training
(`models.held_out.held_out_figures`) so the summary shows what fine-tuning changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models import checkpoint as ckpt
from models.config import TrainConfig
from models.errors import CheckpointError

if TYPE_CHECKING:
    from models.lstm import BarLSTM
    from models.vae import BarVAE

SHIPPED = "shipped"  # `--init-from` given without a directory
FINE_TUNE_MINUTES = 8.0
# VAE and LSTM alike, half of training from scratch's. On 40 files of one game (held-out VAE
# accuracy 0.733 before): 3e-4 → 0.751, 1e-3 → 0.755; the plateau rule halves it from there.
FINE_TUNE_LEARNING_RATE = 1e-3


@dataclass
class InitialModels:
    """The models training starts from, and where they came from."""

    vae: BarVAE
    lstm: BarLSTM
    directory: Path
    vae_id: str
    lstm_id: str


def init_directory(text: str | Path) -> Path:
    """The checkpoint directory named by `--init-from` (SHIPPED: the shipped models)."""
    return ckpt.shipped_directory() if str(text) == SHIPPED else Path(text)


def load_initial_models(directory: str | Path) -> InitialModels:
    """Both models of `directory` as trainable torch modules; CheckpointError names the problem."""
    directory = init_directory(directory)
    if not directory.is_dir():
        raise CheckpointError(f"--init-from {directory}: no such checkpoint directory")
    vae, lstm, cards = ckpt.load_models(directory)
    return InitialModels(vae, lstm, directory, cards["vae"].model_id, cards["lstm"].model_id)


def fine_tuning_config(config: TrainConfig, minutes: float | None = None) -> TrainConfig:
    """`config` with the fine-tuning learning rates, no KL warm-up, and `minutes` (default
    FINE_TUNE_MINUTES)."""
    return dataclasses.replace(config, learning_rate=FINE_TUNE_LEARNING_RATE,
                               lstm_learning_rate=FINE_TUNE_LEARNING_RATE, beta_warmup_steps=0,
                               minutes=FINE_TUNE_MINUTES if minutes is None else minutes)
