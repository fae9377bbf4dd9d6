"""Bar-sequence LSTM: from the bars so far (latent + chord), the next bar's chord and latent.

The next bar is predicted in two parts: p(chord | history), then p(latent | history, chord) as a
diagonal Gaussian, so the composer can choose or override the chord (a planned progression, a
phrase that returns) and still draw a latent that fits it. Chords are key-normalised (C major /
A minor, see `models.data.Corpus.key_normalised`); latents are the VAE encoder's means.

Sampling is explicit: `BarLSTM.initial_state()` gives an `LSTMState`; `step` feeds one bar and
returns the new state with the next bar's chord logits; sampling takes a numpy Generator so the
composer's seed fully decides the music.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.config import LSTMConfig
from models.data import CHORD_QUALITIES, NO_CHORD_ROOT, STYLES

N_QUALITIES = len(CHORD_QUALITIES)
N_CHORDS = (NO_CHORD_ROOT + 1) * N_QUALITIES  # joint (root, quality) index; no chord = 12 * Q
NO_CHORD = NO_CHORD_ROOT * N_QUALITIES


def chord_index(root: torch.Tensor | int, quality: torch.Tensor | int) -> torch.Tensor | int:
    """Joint chord index of (root 0..12, quality)."""
    return root * N_QUALITIES + quality


def chord_parts(index: int) -> tuple[int, int]:
    """(root, quality) of a joint chord index."""
    return index // N_QUALITIES, index % N_QUALITIES


@dataclass
class LSTMState:
    """Recurrent state of one generated sequence: h and c, each (layers, 1, H)."""

    h: torch.Tensor
    c: torch.Tensor
    started: bool = False  # False until the first bar has been fed

    def clone(self) -> "LSTMState":
        return LSTMState(self.h.clone(), self.c.clone(), self.started)


class BarLSTM(nn.Module):
    """Input per bar: [latent, chord embedding, style weights, key mode, start flag]."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.chord_embedding = nn.Embedding(N_CHORDS, config.chord_embed_dim)
        self.mode_embedding = nn.Embedding(2, 4)
        input_dim = config.latent_dim + config.chord_embed_dim + len(STYLES) + 4 + 1
        self.lstm = nn.LSTM(input_dim, config.hidden_dim, config.num_layers, batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.chord_head = nn.Linear(config.hidden_dim, N_CHORDS)
        self.latent_head = nn.Sequential(
            nn.Linear(config.hidden_dim + config.chord_embed_dim, config.hidden_dim), nn.GELU(),
            nn.Linear(config.hidden_dim, 2 * config.latent_dim),
        )
        # A linear path from the bar just fed to the next bar's latent (bars resemble their
        # neighbours; the recurrent state need not carry that linearly).
        self.latent_skip = nn.Linear(config.latent_dim, 2 * config.latent_dim, bias=False)

    def _inputs(self, latents: torch.Tensor, chords: torch.Tensor, style: torch.Tensor,
                mode: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """(B, T, input_dim) from latents (B, T, L), chords (B, T), style (B, S), mode (B,), start (B, T)."""
        steps = latents.shape[1]
        return torch.cat([
            latents,
            self.chord_embedding(chords),
            style[:, None, :].expand(-1, steps, -1),
            self.mode_embedding(mode)[:, None, :].expand(-1, steps, -1),
            start[..., None].float(),
        ], dim=-1)

    def forward(self, latents: torch.Tensor, chords: torch.Tensor, style: torch.Tensor, mode: torch.Tensor,
                start: torch.Tensor, next_chords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over bars.

        Input bar t (latents (B, T, L), chords (B, T); `start` (B, T) marks a "song starts here"
        input whose latent and chord are ignored) predicts bar t + 1, whose chord is
        `next_chords` (B, T). Returns chord logits (B, T, N_CHORDS), latent mean and log-variance
        (B, T, L).
        """
        latents = latents * (~start)[..., None]
        chords = torch.where(start, torch.full_like(chords, NO_CHORD), chords)
        hidden, _ = self.lstm(self._inputs(latents, chords, style, mode, start))  # (B, T, H)
        hidden = self.dropout(hidden)
        chord_logits = self.chord_head(hidden)  # (B, T, N_CHORDS)
        stats = self.latent_head(torch.cat([hidden, self.chord_embedding(next_chords)], dim=-1))  # (B, T, 2L)
        stats = stats + self.latent_skip(latents)
        mu, logvar = stats.chunk(2, dim=-1)
        return chord_logits, mu, logvar.clamp(-8.0, 4.0)

    # ----------------------------------------------------------------- sampling, one bar at a time

    def initial_state(self) -> LSTMState:
        zeros = torch.zeros(self.config.num_layers, 1, self.config.hidden_dim)
        return LSTMState(zeros, zeros.clone(), started=False)

    @torch.inference_mode()
    def step(self, state: LSTMState, latent: torch.Tensor | None, chord: int, style: torch.Tensor,
             mode: int) -> tuple[LSTMState, torch.Tensor]:
        """Feed one bar (latent (L,), joint chord index) or, with `latent=None`, a song start.

        Returns the new state and its output (H + L,: the LSTM's output and the latent fed), from
        which `chord_logits` and `latent_distribution` give the next bar.
        """
        is_start = latent is None
        z = torch.zeros(1, 1, self.config.latent_dim) if is_start else latent.view(1, 1, -1)
        chord_t = torch.tensor([[NO_CHORD if is_start else chord]])
        start_t = torch.tensor([[is_start]])
        x = self._inputs(z, chord_t, style.view(1, -1).float(), torch.tensor([mode]), start_t)  # (1, 1, D)
        output, (h, c) = self.lstm(x, (state.h, state.c))
        return LSTMState(h, c, started=True), torch.cat([output[0, 0], z.view(-1)])

    @torch.inference_mode()
    def chord_logits(self, output: torch.Tensor) -> torch.Tensor:
        """(N_CHORDS,) logits of the next bar's chord from a step output (H + L,)."""
        return self.chord_head(output[:self.config.hidden_dim])

    @torch.inference_mode()
    def latent_distribution(self, output: torch.Tensor, chord: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (L,), of the next bar's latent given its chord."""
        embedded = self.chord_embedding(torch.tensor(chord))
        hidden, latent = output[:self.config.hidden_dim], output[self.config.hidden_dim:]
        mu, logvar = (self.latent_head(torch.cat([hidden, embedded])) + self.latent_skip(latent)).chunk(2)
        return mu, logvar.clamp(-8.0, 4.0)


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


def sample_latent(mu: torch.Tensor, logvar: torch.Tensor, temperature: float,
                  rng: np.random.Generator) -> torch.Tensor:
    """A latent (L,) from N(mu, exp(logvar)) with its spread scaled by `temperature`."""
    noise = torch.from_numpy(rng.standard_normal(mu.shape[0]).astype(np.float32))
    return mu + noise * torch.exp(0.5 * logvar) * temperature


def sequence_losses(model: BarLSTM, latents: torch.Tensor, chords: torch.Tensor, style: torch.Tensor,
                    mode: torch.Tensor, first_is_song_start: torch.Tensor,
                    lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bar chord NLL and latent NLL of windows of bars, and their mask.

    `latents` (B, T + 1, L) and `chords` (B, T + 1) hold a context bar followed by T target bars;
    where `first_is_song_start` (B,) is true the context bar is replaced by a song start. Padding
    beyond `lengths` (B,) (number of target bars) is masked. Returns (chord_nll (B, T),
    latent_nll (B, T) in nats, summed over dimensions, mask (B, T) float).
    """
    batch, total = chords.shape
    steps = total - 1
    start = torch.zeros(batch, steps, dtype=torch.bool)
    start[:, 0] = first_is_song_start
    chord_logits, mu, logvar = model(latents[:, :-1], chords[:, :-1], style, mode, start, chords[:, 1:])
    chord_nll = F.cross_entropy(chord_logits.reshape(-1, N_CHORDS), chords[:, 1:].reshape(-1),
                                reduction="none").view(batch, steps)
    target = latents[:, 1:]
    latent_nll = 0.5 * (logvar + (target - mu).pow(2) / logvar.exp() + np.log(2 * np.pi)).sum(-1)  # (B, T)
    if lengths is None:
        mask = torch.ones(batch, steps)
    else:
        mask = (torch.arange(steps)[None, :] < lengths[:, None]).float()
    return chord_nll, latent_nll, mask


@dataclass
class FastState:
    """Recurrent state for `FastLSTM`: h and c, each (layers, H) numpy float32."""

    h: np.ndarray
    c: np.ndarray

    def clone(self) -> "FastState":
        return FastState(self.h.copy(), self.c.copy())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class FastLSTM:
    """A numpy copy of `BarLSTM`'s one-bar-at-a-time path (`step`, heads) for generation."""

    def __init__(self, model: BarLSTM) -> None:
        from scipy.special import erf

        self._erf = erf
        weights = {name: tensor.detach().cpu().numpy().astype(np.float32).copy()
                   for name, tensor in model.state_dict().items()}
        self.config = model.config
        self.chord_embedding = weights["chord_embedding.weight"]
        self.mode_embedding = weights["mode_embedding.weight"]
        self.cells = []
        for layer in range(model.config.num_layers):
            self.cells.append((weights[f"lstm.weight_ih_l{layer}"].T.copy(), weights[f"lstm.weight_hh_l{layer}"].T.copy(),
                               weights[f"lstm.bias_ih_l{layer}"] + weights[f"lstm.bias_hh_l{layer}"]))
        self.chord_head = (weights["chord_head.weight"].T.copy(), weights["chord_head.bias"])
        self.latent_head = [(weights[f"latent_head.{i}.weight"].T.copy(), weights[f"latent_head.{i}.bias"]) for i in (0, 2)]
        self.latent_skip = weights["latent_skip.weight"].T.copy()  # (L, 2L)

    def initial_state(self) -> FastState:
        shape = (self.config.num_layers, self.config.hidden_dim)
        return FastState(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def step(self, state: FastState, latent: np.ndarray | None, chord: int, style: np.ndarray,
             mode: int) -> tuple[FastState, np.ndarray]:
        """As `BarLSTM.step`: feed one bar (or a song start when `latent` is None)."""
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
        weight, bias = self.chord_head
        return output[:self.config.hidden_dim] @ weight + bias

    def latent_distribution(self, output: np.ndarray, chord: int) -> tuple[np.ndarray, np.ndarray]:
        (w1, b1), (w2, b2) = self.latent_head
        size = self.config.hidden_dim
        hidden = np.concatenate([output[:size], self.chord_embedding[chord]]) @ w1 + b1
        hidden = 0.5 * hidden * (1.0 + self._erf(hidden * 0.7071067811865476))
        mu, logvar = np.split(hidden @ w2 + b2 + output[size:] @ self.latent_skip, 2)
        return mu, np.clip(logvar, -8.0, 4.0)


def sample_latent_np(mu: np.ndarray, logvar: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """A latent (L,) from N(mu, exp(logvar)) with its spread scaled by `temperature`."""
    return (mu + rng.standard_normal(mu.shape[0]) * np.exp(0.5 * logvar) * temperature).astype(np.float32)
