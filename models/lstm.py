"""Bar-sequence LSTM: from the bars so far (latent + chord), the next bar's chord and latent.

The next bar is predicted in two parts: p(chord | history), then p(latent | history, chord) as a
diagonal Gaussian, so the composer can choose or override the chord (a planned progression, a
phrase that returns) and still draw a latent that fits it. Chords are key-normalised (C major /
A minor, see `models.corpus.Corpus.key_normalised`); latents are the VAE encoder's means.

One bar at a time: `BarLSTM.initial_state()` gives an `LSTMState`; `step` feeds one bar and
returns the new state with an output that `chord_logits` and `latent_distribution` read. The
composer runs the numpy copy of this path (`models.inference.FastLSTM`, tested to match);
sizes, chord indices and weight shapes come from `models.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.config import LSTMConfig
from models.layout import MODE_EMBED, N_CHORDS, NO_CHORD, lstm_input_dim


@dataclass
class LSTMState:
    """Recurrent state of one generated sequence: h and c, each (layers, 1, H)."""

    h: torch.Tensor
    c: torch.Tensor
    started: bool = False  # False until the first bar has been fed

    def clone(self) -> LSTMState:
        return LSTMState(self.h.clone(), self.c.clone(), self.started)


class BarLSTM(nn.Module):
    """Input per bar: [latent, chord embedding, style weights, key mode, start flag]."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.chord_embedding = nn.Embedding(N_CHORDS, config.chord_embed_dim)
        self.mode_embedding = nn.Embedding(2, MODE_EMBED)
        self.lstm = nn.LSTM(lstm_input_dim(config), config.hidden_dim, config.num_layers, batch_first=True,
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
