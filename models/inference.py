"""Generation in numpy: the VAE's decoder and the LSTM's one-bar step, without torch.

Generation decodes single bars step by step, where torch's per-operation overhead would
dominate, and the stream must not carry torch's memory. `FastDecoder` and `FastLSTM` are built
from a dict of numpy float32 arrays named as in the torch modules' state dicts (the layout in
`models.layout`) plus the model's config: read from a checkpoint by
`models.checkpoint.load_weights`, or taken from trained modules (`from_module`). Both ways run
the same code, so they give the same numbers. A test keeps them equal to the torch modules.

Sampling takes numpy Generators, so a composer's seed fully decides the music.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import erf

from models.checkpoint import module_arrays
from models.config import LSTMConfig, VAEConfig
from models.layout import CONTEXT_OFFSETS, INTERVAL_BUCKETS, N_INTERVALS, N_PITCHED, NO_CHORD, PITCH_CLASSES, STEP_EMBED
from models.theory import NO_CHORD_ROOT
from models.tokens import DRUM_VOCAB, FIRST_PITCH_TOKEN, N_PITCHES, N_VOICES, PITCHED_VOCAB, STEPS_PER_BAR

Weights = Mapping[str, np.ndarray]  # tensor name (as in the torch state dict) → float32 array

_SQRT_HALF = 0.7071067811865476  # a Python float keeps float32 arrays float32


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU as torch's `nn.GELU()` computes it (the exact, erf form)."""
    return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _float32(weights: Weights) -> dict[str, np.ndarray]:
    # Fresh C-ordered float32 copies: the caller's arrays may be read-only or views of a file.
    return {name: np.array(array, dtype=np.float32) for name, array in weights.items()}


class FastDecoder:
    """The decoder of `BarVAE` for generating one bar at a time.

    The step MLPs' first layers are linear in one-hot tokens, so they are folded into
    per-(offset, voice) tables: a step sums a dozen table rows, applies ReLU and one product.
    Usage: `bar = decoder.bar(z, cond, activity, root)`, then for each step
    `decoder.step_logits(bar, t, earlier, last_pitch)` with `earlier` (K, 4) the tokens
    `CONTEXT_OFFSETS` back.
    """

    def __init__(self, weights: Weights, config: VAEConfig) -> None:
        """`weights`: at least the decoder's tensors of `models.layout.vae_shapes(config)`."""
        w = _float32({name: array for name, array in weights.items()
                      if not name.startswith(("encoder", "embeddings."))})
        self.config = config
        self.latent_dim = config.latent_dim
        prefix = "decoder_conditioner."
        self.root, self.quality = w[prefix + "root.weight"], w[prefix + "quality.weight"]
        self.mode, self.key_offset = w[prefix + "mode.weight"], w[prefix + "key_offset.weight"]
        self.style, self.activity = w[prefix + "style.weight"], w[prefix + "activity.weight"]

        def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
            return w[f"{name}.weight"].T.copy(), w[f"{name}.bias"]

        self.trunk = [linear("decoder.0"), linear("decoder.2")]
        # The two linear layers of the low-rank head, applied one after the other per bar.
        self.base_head = (linear("base_head.0"), linear("base_head.1"))
        self.context_head = linear("context_head")
        self.drum_activity = w["drum_activity.weight"]
        self.drum_trunk = [linear("drum_decoder.0"), linear("drum_decoder.2")]
        self.drum_base_head, self.drum_context_head = linear("drum_base_head"), linear("drum_context_head")

        # Fold the step MLPs' first layers into one table: a row per (offset, voice, token), its
        # columns the pitched hidden units then the drum hidden units (drum rows: voice 3 only).
        e = config.context_embed_dim
        k = len(CONTEXT_OFFSETS)
        hidden_w, step_bias = linear("step_hidden")  # (n_context + STEP + ctx, A)
        drum_w, drum_step_bias = linear("drum_step_hidden")  # (k E + STEP + ctx, Ad)
        a, ad = hidden_w.shape[1], drum_w.shape[1]
        n_context = k * N_VOICES * e
        rows, starts = [], np.zeros((k, N_VOICES), dtype=np.int64)
        count = 0
        for offset in range(k):
            for voice in range(N_VOICES):
                embedding = w[f"context_embeddings.{voice}.weight"]  # (V, E)
                block = hidden_w[(offset * N_VOICES + voice) * e:(offset * N_VOICES + voice + 1) * e]
                drum_part = (embedding @ drum_w[offset * e:(offset + 1) * e] if voice == N_VOICES - 1
                             else np.zeros((embedding.shape[0], ad), np.float32))
                rows.append(np.concatenate([embedding @ block, drum_part], axis=1))
                starts[offset, voice] = count
                count += embedding.shape[0]
        self.token_table = np.concatenate(rows).astype(np.float32)  # (rows, A + Ad)
        self.table_starts = starts  # (K, 4)
        steps = w["step_embedding.weight"]  # (16, STEP_EMBED)
        self.step_rows = np.concatenate([steps @ hidden_w[n_context:n_context + STEP_EMBED],
                                         steps @ drum_w[k * e:k * e + STEP_EMBED]], axis=1)  # (16, A + Ad)
        self.context_weight = hidden_w[n_context + STEP_EMBED:]  # (ctx, A)
        self.drum_context_weight = drum_w[k * e + STEP_EMBED:]
        self.step_biases = np.concatenate([step_bias, drum_step_bias])
        # All output layers as one block-diagonal product. Columns: pitched logits (3V), drum
        # logits (Vd), interval scores (3 x (N_INTERVALS + 1), the last always 0 for "no last
        # pitch yet"), chord-tone scores (3 x 12).
        pitched_w, pitched_b = linear("step_head")
        drum_w_out, drum_b_out = linear("drum_step_head")
        interval_w, interval_b = linear("interval_head")
        tone_w, tone_b = linear("chord_tone_head")
        padded = N_INTERVALS + 1
        interval_w = np.concatenate([interval_w.reshape(a, N_PITCHED, N_INTERVALS),
                                     np.zeros((a, N_PITCHED, 1), np.float32)], axis=2).reshape(a, -1)
        interval_b = np.concatenate([interval_b.reshape(N_PITCHED, N_INTERVALS),
                                     np.zeros((N_PITCHED, 1), np.float32)], axis=1).ravel()
        n_pitched, n_drums, n_intervals = N_PITCHED * PITCHED_VOCAB, DRUM_VOCAB, N_PITCHED * padded
        head = np.zeros((a + ad, n_pitched + n_drums + n_intervals + N_PITCHED * 12), np.float32)
        head[:a, :n_pitched] = pitched_w
        head[a:, n_pitched:n_pitched + n_drums] = drum_w_out
        head[:a, n_pitched + n_drums:n_pitched + n_drums + n_intervals] = interval_w
        head[:a, n_pitched + n_drums + n_intervals:] = tone_w
        self.head_weight = head
        self.head_bias = np.concatenate([pitched_b, drum_b_out, interval_b, tone_b]).astype(np.float32)
        self.n_pitched, self.drum_end = n_pitched, n_pitched + n_drums
        # Where each voice's interval scores sit in the output, for each last pitch (-1 → the 0 column).
        buckets = np.concatenate([INTERVAL_BUCKETS, np.full((1, N_PITCHES), N_INTERVALS)])  # (37, 36)
        self.interval_index = (self.drum_end + np.arange(N_PITCHED)[:, None, None] * padded
                               + buckets[None])  # (3, 37, 36): [voice, last pitch (+1), pitch]
        self.tone_start = self.drum_end + n_intervals
        self.voices = np.arange(N_PITCHED)

    @classmethod
    def from_module(cls, vae: Any) -> FastDecoder:
        """The decoder of a trained `models.vae.BarVAE`."""
        return cls(module_arrays(vae), vae.config)

    def condition(self, root: int, quality: int, mode: int, key_offset: int, style: np.ndarray,
                  activity: int) -> np.ndarray:
        """(cond_dim,) condition vector, as `Conditioner` computes it."""
        return np.concatenate([self.root[root], self.quality[quality], self.mode[mode], self.key_offset[key_offset],
                               self.style @ style.astype(np.float32), self.activity[activity]])

    def bar(self, z: np.ndarray, cond: np.ndarray, activity: int, root: int) -> dict[str, np.ndarray]:
        """The per-bar part: base logits, each step's first-layer input before tokens, and the
        pitch classes relative to the chord `root` (as given in `cond`)."""
        hidden = np.concatenate([z.astype(np.float32), cond])
        for weight, bias in self.trunk:
            hidden = gelu(hidden @ weight + bias)
        drum_hidden = np.concatenate([z.astype(np.float32), self.drum_activity[activity]])
        for weight, bias in self.drum_trunk:
            drum_hidden = gelu(drum_hidden @ weight + bias)
        context = (hidden @ self.context_head[0] + self.context_head[1]).reshape(STEPS_PER_BAR, -1)
        drum_context = (drum_hidden @ self.drum_context_head[0] + self.drum_context_head[1]).reshape(STEPS_PER_BAR, -1)
        pre = np.concatenate([context @ self.context_weight, drum_context @ self.drum_context_weight], axis=1)
        return {
            "base": ((hidden @ self.base_head[0][0] + self.base_head[0][1]) @ self.base_head[1][0]
                     + self.base_head[1][1]).reshape(STEPS_PER_BAR, N_PITCHED, PITCHED_VOCAB),
            "drum_base": (drum_hidden @ self.drum_base_head[0]
                          + self.drum_base_head[1]).reshape(STEPS_PER_BAR, DRUM_VOCAB),
            "pre": self.step_rows + (pre + self.step_biases),  # (16, 2A): hidden inputs before tokens
            # Output columns of each pitch's chord-tone score (none without a chord).
            "tone_index": (self.tone_start + self.voices[:, None] * 12 + (PITCH_CLASSES - root) % 12
                           if root != NO_CHORD_ROOT else None),  # (3, 36)
        }

    def step_logits(self, bar: dict[str, np.ndarray], step: int, earlier: np.ndarray,
                    last_pitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pitched logits (3, V), drum logits (Vd,)) of `step` given `earlier` (K, 4) tokens and
        each pitched voice's last pitch index `last_pitch` (3,) (-1: none yet)."""
        hidden = bar["pre"][step] + self.token_table[(self.table_starts + earlier).ravel()].sum(axis=0)
        out = np.maximum(hidden, 0.0) @ self.head_weight + self.head_bias  # (columns,)
        pitched = bar["base"][step] + out[:self.n_pitched].reshape(N_PITCHED, PITCHED_VOCAB)
        relative = out[self.interval_index[self.voices, last_pitch]]  # last -1 picks row 36: zeros
        if bar["tone_index"] is not None:
            relative += out[bar["tone_index"]]
        pitched[:, FIRST_PITCH_TOKEN:] += relative
        return pitched, bar["drum_base"][step] + out[self.n_pitched:self.drum_end]


@dataclass
class FastState:
    """Recurrent state for `FastLSTM`: h and c, each (layers, H) numpy float32."""

    h: np.ndarray
    c: np.ndarray

    def clone(self) -> FastState:
        return FastState(self.h.copy(), self.c.copy())


class FastLSTM:
    """`BarLSTM`'s one-bar-at-a-time path (`step` and the two heads) for generation."""

    def __init__(self, weights: Weights, config: LSTMConfig) -> None:
        """`weights`: the tensors of `models.layout.lstm_shapes(config)`."""
        w = _float32(weights)
        self.config = config
        self.chord_embedding = w["chord_embedding.weight"]
        self.mode_embedding = w["mode_embedding.weight"]
        self.cells = []
        for layer in range(config.num_layers):
            self.cells.append((w[f"lstm.weight_ih_l{layer}"].T.copy(), w[f"lstm.weight_hh_l{layer}"].T.copy(),
                               w[f"lstm.bias_ih_l{layer}"] + w[f"lstm.bias_hh_l{layer}"]))
        self.chord_head = (w["chord_head.weight"].T.copy(), w["chord_head.bias"])
        self.latent_head = [(w[f"latent_head.{i}.weight"].T.copy(), w[f"latent_head.{i}.bias"]) for i in (0, 2)]
        self.latent_skip = w["latent_skip.weight"].T.copy()  # (L, 2L)

    @classmethod
    def from_module(cls, lstm: Any) -> FastLSTM:
        """The one-bar path of a trained `models.lstm.BarLSTM`."""
        return cls(module_arrays(lstm), lstm.config)

    def initial_state(self) -> FastState:
        shape = (self.config.num_layers, self.config.hidden_dim)
        return FastState(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def step(self, state: FastState, latent: np.ndarray | None, chord: int, style: np.ndarray,
             mode: int) -> tuple[FastState, np.ndarray]:
        """Feed one bar (latent (L,), joint chord index) or, with `latent=None`, a song start.

        Returns the new state and its output (H + L,: the LSTM's output and the latent fed), from
        which `chord_logits` and `latent_distribution` give the next bar (as `BarLSTM.step`).
        """
        is_start = latent is None
        z = np.zeros(self.config.latent_dim, np.float32) if is_start else latent.astype(np.float32)
        x = np.concatenate([z, self.chord_embedding[NO_CHORD if is_start else chord], style.astype(np.float32),
                            self.mode_embedding[mode], np.array([1.0 if is_start else 0.0], np.float32)])
        h_all, c_all = state.h.copy(), state.c.copy()
        hidden = self.config.hidden_dim
        for layer, (w_ih, w_hh, bias) in enumerate(self.cells):
            gates = x @ w_ih + state.h[layer] @ w_hh + bias  # (4H,): input, forget, cell, output
            i, f = _sigmoid(gates[:hidden]), _sigmoid(gates[hidden:2 * hidden])
            g, o = np.tanh(gates[2 * hidden:3 * hidden]), _sigmoid(gates[3 * hidden:])
            c_all[layer] = f * state.c[layer] + i * g
            h_all[layer] = o * np.tanh(c_all[layer])
            x = h_all[layer]
        return FastState(h_all, c_all), np.concatenate([x, z])

    def chord_logits(self, output: np.ndarray) -> np.ndarray:
        """(N_CHORDS,) logits of the next bar's chord from a step output (H + L,)."""
        weight, bias = self.chord_head
        return output[:self.config.hidden_dim] @ weight + bias

    def latent_distribution(self, output: np.ndarray, chord: int) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar), each (L,), of the next bar's latent given its chord."""
        (w1, b1), (w2, b2) = self.latent_head
        size = self.config.hidden_dim
        hidden = gelu(np.concatenate([output[:size], self.chord_embedding[chord]]) @ w1 + b1)
        mu, logvar = np.split(hidden @ w2 + b2 + output[size:] @ self.latent_skip, 2)
        return mu, np.clip(logvar, -8.0, 4.0)


def sample_from_logits(logits: np.ndarray, temperature: float, rng: np.random.Generator,
                       allowed: np.ndarray | None = None) -> int:
    """An index drawn from softmax(logits / temperature); `allowed` (bool mask) restricts it.

    Temperature 0 takes the most likely index.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if allowed is not None:
        logits = np.where(allowed, logits, -np.inf)
    if temperature <= 1e-6:
        return int(np.argmax(logits))
    scaled = logits / temperature
    scaled -= scaled.max()
    probs = np.exp(scaled)
    probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def sample_latent(mu: np.ndarray, logvar: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """A latent (L,) from N(mu, exp(logvar)) with its spread scaled by `temperature`."""
    return (mu + rng.standard_normal(mu.shape[0]) * np.exp(0.5 * logvar) * temperature).astype(np.float32)
