"""Model and training settings: plain dataclasses, stored in checkpoints as `model_args`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from models.errors import CheckpointError

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the bar VAE (`models.vae.BarVAE`)."""

    latent_dim: int = 64
    embed_dim: int = 12  # per voice and step, in the encoder
    hidden_dim: int = 384
    drum_hidden_dim: int = 128
    cond_dim: int = 40  # chord root, quality, key mode, key offset, style, activity together
    encoder_hidden_dim: int = 160  # per direction of the encoder's GRU
    context_dim: int = 32  # per step: bar part → step part of the decoder
    context_embed_dim: int = 8  # per earlier token read by the step part
    step_hidden_dim: int = 192
    drum_step_hidden_dim: int = 64
    base_rank: int = 64  # rank of the bar part's base logits
    dropout: float = 0.1  # in the decoder, while training
    # Share of the earlier tokens the step part reads that are hidden from it while training, so
    # the decoder must take a bar's figure from its latent and not only from the steps before it;
    # otherwise the latent (and the LSTM that plans it) barely changes what is played.
    context_dropout: float = 0.25


@dataclass(frozen=True)
class LSTMConfig:
    """Shape of the bar-sequence LSTM (`models.lstm.BarLSTM`)."""

    latent_dim: int = 64  # must equal the VAE's
    hidden_dim: int = 256
    num_layers: int = 1
    chord_embed_dim: int = 16
    dropout: float = 0.25


@dataclass(frozen=True)
class TrainConfig:
    """How the models are trained (`models.train.train`)."""

    seed: int = 0
    minutes: float = 25.0  # wall-clock budget for both models together (data reading excluded)
    vae_share: float = 0.7  # share of the budget spent on the VAE
    max_epochs_vae: int = 60
    max_epochs_lstm: int = 60
    batch_size: int = 256
    lstm_batch_size: int = 32
    lstm_window: int = 64  # bars per training sequence
    learning_rate: float = 2e-3
    lstm_learning_rate: float = 2e-3
    lstm_latent_weight: float = 0.1  # latent NLL (nats, summed over dimensions) against chord NLL
    # The stream plays lo-fi and NES, which are 0.4 % and 3.5 % of the LSTM's training bars (the rest
    # is Lakh, pop and game arrangements): each epoch repeats a style's windows until they bring
    # about this share of the unbalanced epoch's bars, at most `lstm_style_repeats` times
    # (`tensors.balanced_windows`; lo-fi 47-48×, NES 5×: then about 12 % and 11 % of the epoch).
    # Unbalanced, the LSTM's lo-fi latents did no better than N(0, 1) noise (`chiplofi eval`).
    lstm_style_floor: float = 0.15
    lstm_style_repeats: int = 64
    weight_decay: float = 1e-5
    beta_max: float = 0.02  # KL weight after annealing
    beta_warmup_steps: int = 2000
    free_bits: float = 0.1  # nats per latent dimension below which KL is not penalised
    augment_probability: float = 0.8  # share of training bars moved by a random transposition
    augment_semitones: int = 5  # ... of up to this many semitones either way
    patience: int = 5  # epochs without validation improvement before stopping
    validation_percent: float = 10.0
    threads: int = 2


def config_from_dict(cls: type[ConfigT], values: dict[str, Any], source: str = "") -> ConfigT:
    """Build a config dataclass from a dict; unknown or mistyped keys raise CheckpointError."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise CheckpointError(f"{source}: unknown model_args {unknown} for {cls.__name__}")
    try:
        return cls(**values)
    except TypeError as error:
        raise CheckpointError(f"{source}: bad model_args for {cls.__name__}: {error}") from error
