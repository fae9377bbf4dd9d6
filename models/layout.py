"""The networks' layout without torch: sizes, chord indices and every weight's shape from a config.

`models.vae.BarVAE` and `models.lstm.BarLSTM` (torch, for training) and `models.inference`
(numpy, for generation) are both built from what is here, and `models.checkpoint` checks a
weights file against `vae_shapes` / `lstm_shapes` before anything is built, so a checkpoint
that does not fit its card fails with a message naming the tensor, with or without torch.
A test keeps these shapes equal to the torch modules' state dicts.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from models.config import LSTMConfig, VAEConfig
from models.theory import CHORD_QUALITIES, NO_CHORD_ROOT
from models.tokens import (
    DRUM_VOCAB,
    FIRST_PITCH_TOKEN,
    N_PITCHES,
    N_VOICES,
    PITCH_RANGES,
    PITCHED_VOCAB,
    STEPS_PER_BAR,
    STYLES,
    VOCAB_SIZES,
)
from models.voices import VOICES

IndexT = TypeVar("IndexT")  # an int, a numpy array or a torch tensor of indices
Shapes = dict[str, tuple[int, ...]]  # tensor name → shape, as in the torch module's state dict

# --------------------------------------------------------------------------- bar VAE

N_ACTIVITY = 4
N_PITCHED = 3
CONTEXT_OFFSETS = (1, 2, 3, 4, 8, 12, 16, 32, 64)  # the step part reads the tokens this many steps back
TAIL_STEPS = max(CONTEXT_OFFSETS)  # steps of the previous bars the step part can see (4 bars)
STEP_EMBED = 8
DRUM_ACTIVITY_EMBED = 8
MAX_INTERVAL = 12  # intervals from the voice's last pitch scored one by one; wider ones share a score
N_INTERVALS = 2 * MAX_INTERVAL + 2
N_GRU_GATES = 3


def _interval_buckets() -> np.ndarray:
    """(36, 36) bucket of the interval from last pitch index (row) to candidate pitch index (column)."""
    delta = np.arange(N_PITCHES)[None, :] - np.arange(N_PITCHES)[:, None]
    return np.where(np.abs(delta) <= MAX_INTERVAL, delta + MAX_INTERVAL, N_INTERVALS - 1)


def _pitch_classes() -> np.ndarray:
    """(3, 36) pitch class of every pitch index of each pitched voice."""
    return np.stack([(PITCH_RANGES[VOICES[v]][0] + np.arange(N_PITCHES)) % 12 for v in range(N_PITCHED)])


INTERVAL_BUCKETS = _interval_buckets()
PITCH_CLASSES = _pitch_classes()
assert PITCHED_VOCAB == FIRST_PITCH_TOKEN + N_PITCHES == VOCAB_SIZES[0] and VOCAB_SIZES[3] == DRUM_VOCAB


def conditioner_sizes(cond_dim: int) -> dict[str, int]:
    """Widths of the condition vector's parts (root, quality, mode, key offset, style, activity)."""
    part = cond_dim // 5
    if part < 2:
        raise ValueError(f"cond_dim must be at least 10, not {cond_dim}")
    return {"root": part, "quality": part, "mode": part // 2, "key_offset": part // 2, "style": part,
            "activity": cond_dim - 3 * part - 2 * (part // 2)}


def _linear(shapes: Shapes, name: str, n_out: int, n_in: int, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (n_out, n_in)
    if bias:
        shapes[f"{name}.bias"] = (n_out,)


def _conditioner(shapes: Shapes, prefix: str, cond_dim: int) -> None:
    sizes = conditioner_sizes(cond_dim)
    rows = {"root": NO_CHORD_ROOT + 1, "quality": len(CHORD_QUALITIES), "mode": 2, "key_offset": 12,
            "activity": N_ACTIVITY}
    for part, width in sizes.items():
        # The style part is a linear map of the style weights; the others are embeddings.
        shapes[f"{prefix}.{part}.weight"] = (width, len(STYLES)) if part == "style" else (rows[part], width)


def vae_shapes(config: VAEConfig) -> Shapes:
    """Every tensor of `BarVAE(config)` and its shape; raises ValueError for an impossible config."""
    e, h, d, latent = config.embed_dim, config.hidden_dim, config.drum_hidden_dim, config.latent_dim
    ctx, cond, emb = config.context_dim, config.cond_dim, config.context_embed_dim
    rnn = config.encoder_hidden_dim
    shapes: Shapes = {}
    for voice, size in enumerate(VOCAB_SIZES):
        shapes[f"embeddings.{voice}.weight"] = (size + 1, e)  # the extra row: "unknown voice"
    _conditioner(shapes, "encoder_conditioner", cond)
    for suffix in ("", "_reverse"):  # bidirectional GRU, one layer
        shapes[f"encoder_rnn.weight_ih_l0{suffix}"] = (N_GRU_GATES * rnn, N_VOICES * e)
        shapes[f"encoder_rnn.weight_hh_l0{suffix}"] = (N_GRU_GATES * rnn, rnn)
        shapes[f"encoder_rnn.bias_ih_l0{suffix}"] = (N_GRU_GATES * rnn,)
        shapes[f"encoder_rnn.bias_hh_l0{suffix}"] = (N_GRU_GATES * rnn,)
    _linear(shapes, "encoder.0", h, 4 * rnn + cond)
    _linear(shapes, "encoder.2", 2 * latent, h)
    _conditioner(shapes, "decoder_conditioner", cond)
    _linear(shapes, "decoder.0", h, latent + cond)
    _linear(shapes, "decoder.2", h, h)
    _linear(shapes, "base_head.0", config.base_rank, h)
    _linear(shapes, "base_head.1", STEPS_PER_BAR * N_PITCHED * PITCHED_VOCAB, config.base_rank)
    _linear(shapes, "context_head", STEPS_PER_BAR * ctx, h)
    shapes["step_embedding.weight"] = (STEPS_PER_BAR, STEP_EMBED)
    for voice, size in enumerate(VOCAB_SIZES):
        shapes[f"context_embeddings.{voice}.weight"] = (size, emb)
    _linear(shapes, "step_hidden", config.step_hidden_dim, len(CONTEXT_OFFSETS) * N_VOICES * emb + STEP_EMBED + ctx)
    _linear(shapes, "step_head", N_PITCHED * PITCHED_VOCAB, config.step_hidden_dim)
    _linear(shapes, "interval_head", N_PITCHED * N_INTERVALS, config.step_hidden_dim)
    _linear(shapes, "chord_tone_head", N_PITCHED * 12, config.step_hidden_dim)
    shapes["drum_activity.weight"] = (N_ACTIVITY, DRUM_ACTIVITY_EMBED)
    _linear(shapes, "drum_decoder.0", d, latent + DRUM_ACTIVITY_EMBED)
    _linear(shapes, "drum_decoder.2", d, d)
    _linear(shapes, "drum_base_head", STEPS_PER_BAR * DRUM_VOCAB, d)
    _linear(shapes, "drum_context_head", STEPS_PER_BAR * ctx, d)
    _linear(shapes, "drum_step_hidden", config.drum_step_hidden_dim, len(CONTEXT_OFFSETS) * emb + STEP_EMBED + ctx)
    _linear(shapes, "drum_step_head", DRUM_VOCAB, config.drum_step_hidden_dim)
    return _checked(shapes)


# --------------------------------------------------------------------------- bar LSTM

N_QUALITIES = len(CHORD_QUALITIES)
N_CHORDS = (NO_CHORD_ROOT + 1) * N_QUALITIES  # joint (root, quality) index; no chord = 12 * Q
NO_CHORD = NO_CHORD_ROOT * N_QUALITIES
MODE_EMBED = 4
N_LSTM_GATES = 4  # input, forget, cell, output


def chord_index(root: IndexT, quality: IndexT) -> IndexT:
    """Joint chord index of (root 0..12, quality): ints, numpy arrays or torch tensors."""
    return root * N_QUALITIES + quality


def chord_parts(index: int) -> tuple[int, int]:
    """(root, quality) of a joint chord index."""
    return index // N_QUALITIES, index % N_QUALITIES


def lstm_input_dim(config: LSTMConfig) -> int:
    """Width of one bar's input: [latent, chord embedding, style weights, key mode, start flag]."""
    return config.latent_dim + config.chord_embed_dim + len(STYLES) + MODE_EMBED + 1


def lstm_shapes(config: LSTMConfig) -> Shapes:
    """Every tensor of `BarLSTM(config)` and its shape; raises ValueError for an impossible config."""
    hidden, latent, chord = config.hidden_dim, config.latent_dim, config.chord_embed_dim
    if config.num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, not {config.num_layers}")
    shapes: Shapes = {"chord_embedding.weight": (N_CHORDS, chord), "mode_embedding.weight": (2, MODE_EMBED)}
    for layer in range(config.num_layers):
        n_in = lstm_input_dim(config) if layer == 0 else hidden
        shapes[f"lstm.weight_ih_l{layer}"] = (N_LSTM_GATES * hidden, n_in)
        shapes[f"lstm.weight_hh_l{layer}"] = (N_LSTM_GATES * hidden, hidden)
        shapes[f"lstm.bias_ih_l{layer}"] = (N_LSTM_GATES * hidden,)
        shapes[f"lstm.bias_hh_l{layer}"] = (N_LSTM_GATES * hidden,)
    _linear(shapes, "chord_head", N_CHORDS, hidden)
    _linear(shapes, "latent_head.0", hidden, hidden + chord)
    _linear(shapes, "latent_head.2", 2 * latent, hidden)
    _linear(shapes, "latent_skip", 2 * latent, latent, bias=False)
    return _checked(shapes)


def _checked(shapes: Shapes) -> Shapes:
    """`shapes`, after checking that every size is a positive whole number."""
    for name, shape in shapes.items():
        for size in shape:
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"tensor {name} would have shape {shape}")
    return shapes
