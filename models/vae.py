"""Bar VAE: one bar of four voices (16 steps) ↔ a latent vector, conditioned on chord and style.

The encoder reads the bar's tokens (see `models.data` for the token format) and its condition;
the decoder turns a latent plus condition into per-step, per-voice logits in one pass, plus a
learned transition term per voice: logits[t] += T_voice[token[t - 1]] (the previous step's token;
for step 0 the last token of the previous bar). Training feeds the true previous tokens (teacher
forcing); generation samples the 16 steps in order, which costs one table lookup per step, so a
whole bar still decodes in well under a millisecond. The transitions carry what a step-wise
model does best (a note is held after its onset, rests follow rests, small melodic steps).

Condition (`BarCondition`): chord root (0..11, 12 = none) and quality, key mode (major/minor),
key offset (semitones the bar was moved from C major / A minor, 0 when generating), style
weights over `STYLES` (one-hot in training; any blend when generating) and an activity level
0..3 (how many steps carry an onset; the composer's energy control).

Drums are decoded by a separate head that sees the latent and the activity but not the
style: only Lakh songs have drums, so drums learned there are used for every style blend.
Voices absent from a whole song (drums in the lo-fi loops, ...) are unknown, not silent:
the encoder reads them as an "unknown" token and the loss ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import erf as _erf
from torch import nn

from models.config import VAEConfig
from models.data import (CHORD_QUALITIES, FIRST_PITCH_TOKEN, N_VOICES, NO_CHORD_ROOT, STEPS_PER_BAR,
                         STYLES, VOCAB_SIZES)

N_ACTIVITY = 4
PITCHED_VOCAB = VOCAB_SIZES[0]
N_PITCHED = 3


@dataclass
class BarCondition:
    """What a bar is decoded under; every field has batch shape (B,) except `style` (B, S)."""

    root: torch.Tensor  # (B,) int64, 0..12
    quality: torch.Tensor  # (B,) int64
    mode: torch.Tensor  # (B,) int64, 0 major / 1 minor
    key_offset: torch.Tensor  # (B,) int64, 0..11
    style: torch.Tensor  # (B, S) float, weights over STYLES
    activity: torch.Tensor  # (B,) int64, 0..3


def activity_levels(tokens: torch.Tensor, voice_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Activity 0..3 of bars `(B, 16, 4)`: steps with an onset in a (known) pitched voice, by 4."""
    onsets = tokens[..., :N_PITCHED] >= FIRST_PITCH_TOKEN  # (B, 16, 3)
    if voice_mask is not None:
        onsets = onsets & voice_mask[:, None, :N_PITCHED]
    busy_steps = onsets.any(dim=-1).sum(dim=-1)  # (B,)
    return torch.clamp(busy_steps // 4, max=N_ACTIVITY - 1)


class Conditioner(nn.Module):
    """BarCondition → (B, cond_dim) vector."""

    def __init__(self, cond_dim: int) -> None:
        super().__init__()
        part = cond_dim // 5
        if part < 2:
            raise ValueError(f"cond_dim must be at least 10, not {cond_dim}")
        self.root = nn.Embedding(NO_CHORD_ROOT + 1, part)
        self.quality = nn.Embedding(len(CHORD_QUALITIES), part)
        self.mode = nn.Embedding(2, part // 2)
        self.key_offset = nn.Embedding(12, part // 2)
        self.style = nn.Linear(len(STYLES), part, bias=False)
        self.activity = nn.Embedding(N_ACTIVITY, cond_dim - 3 * part - 2 * (part // 2))

    def forward(self, cond: BarCondition) -> torch.Tensor:
        return torch.cat([self.root(cond.root), self.quality(cond.quality), self.mode(cond.mode),
                          self.key_offset(cond.key_offset), self.style(cond.style),
                          self.activity(cond.activity)], dim=-1)  # (B, cond_dim)


class BarVAE(nn.Module):
    """Encoder MLP over the embedded bar, decoder MLP to all steps' logits at once."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        e, h = config.embed_dim, config.hidden_dim
        # One embedding per voice; the extra last index is "unknown voice".
        self.embeddings = nn.ModuleList(nn.Embedding(v + 1, e) for v in VOCAB_SIZES)
        self.encoder_conditioner = Conditioner(config.cond_dim)
        self.encoder = nn.Sequential(
            nn.Linear(STEPS_PER_BAR * N_VOICES * e + config.cond_dim, h), nn.GELU(),
            nn.Linear(h, h), nn.GELU(),
            nn.Linear(h, 2 * config.latent_dim),
        )
        self.decoder_conditioner = Conditioner(config.cond_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim + config.cond_dim, h), nn.GELU(),
            nn.Linear(h, h), nn.GELU(),
            nn.Linear(h, STEPS_PER_BAR * N_PITCHED * PITCHED_VOCAB),
        )
        # Transition logits per voice: row = previous step's token, column = this step's token.
        self.transitions = nn.ParameterList(nn.Parameter(torch.zeros(v, v)) for v in VOCAB_SIZES)
        self.drum_activity = nn.Embedding(N_ACTIVITY, 8)
        d = config.drum_hidden_dim
        self.drum_decoder = nn.Sequential(
            nn.Linear(config.latent_dim + 8, d), nn.GELU(),
            nn.Linear(d, d), nn.GELU(),
            nn.Linear(d, STEPS_PER_BAR * VOCAB_SIZES[3]),
        )

    def encode(self, tokens: torch.Tensor, cond: BarCondition,
               voice_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, L), of bars `tokens` (B, 16, 4); `voice_mask` (B, 4) bool."""
        embedded = []
        for voice, embedding in enumerate(self.embeddings):
            column = tokens[..., voice]  # (B, 16)
            if voice_mask is not None:
                unknown = torch.full_like(column, VOCAB_SIZES[voice])
                column = torch.where(voice_mask[:, voice:voice + 1], column, unknown)
            embedded.append(embedding(column))  # (B, 16, E)
        flat = torch.cat(embedded, dim=-1).flatten(1)  # (B, 16 * 4 * E)
        stats = self.encoder(torch.cat([flat, self.encoder_conditioner(cond)], dim=-1))  # (B, 2L)
        mu, logvar = stats.chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z: torch.Tensor, cond: BarCondition, previous: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-voice logits [(B, 16, V_voice) x 4] of latents `z` (B, L).

        `previous` (B, 16, 4): the token before each step (teacher forcing); None leaves out the
        transition term (the composer adds it step by step while sampling).
        """
        hidden = torch.cat([z, self.decoder_conditioner(cond)], dim=-1)  # (B, L + C)
        pitched = self.decoder(hidden).view(-1, STEPS_PER_BAR, N_PITCHED, PITCHED_VOCAB)  # (B, 16, 3, V)
        drums = self.drum_decoder(torch.cat([z, self.drum_activity(cond.activity)], dim=-1))
        drums = drums.view(-1, STEPS_PER_BAR, VOCAB_SIZES[3])  # (B, 16, Vd)
        logits = [pitched[:, :, 0], pitched[:, :, 1], pitched[:, :, 2], drums]
        if previous is not None:
            logits = [voice_logits + self.transitions[voice][previous[..., voice]]
                      for voice, voice_logits in enumerate(logits)]
        return logits

    def forward(self, tokens: torch.Tensor, cond: BarCondition, voice_mask: torch.Tensor | None = None,
                previous_last: torch.Tensor | None = None,
                sample: bool = True) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(teacher-forced logits per voice, mu, logvar) of bars `tokens` (B, 16, 4).

        `previous_last` (B, 4): the last step's tokens of each bar's previous bar (0 = rest at a
        song's start).
        """
        mu, logvar = self.encode(tokens, cond, voice_mask)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode(z, cond, previous_tokens(tokens, previous_last)), mu, logvar


def previous_tokens(tokens: torch.Tensor, previous_last: torch.Tensor | None) -> torch.Tensor:
    """(B, 16, 4): the token before each step; step 0 gets `previous_last` (B, 4) or rest."""
    first = torch.zeros_like(tokens[:, :1]) if previous_last is None else previous_last[:, None, :]
    return torch.cat([first, tokens[:, :-1]], dim=1)


def reconstruction_loss(logits: list[torch.Tensor], tokens: torch.Tensor,
                        voice_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross-entropy summed over steps and known voices, mean over bars; correct count; counted steps)."""
    total = tokens.new_zeros((), dtype=torch.float32)
    correct = tokens.new_zeros((), dtype=torch.float32)
    counted = tokens.new_zeros((), dtype=torch.float32)
    for voice, voice_logits in enumerate(logits):
        target = tokens[..., voice]  # (B, 16)
        mask = voice_mask[:, voice:voice + 1].expand_as(target).float()  # (B, 16)
        loss = F.cross_entropy(voice_logits.reshape(-1, voice_logits.shape[-1]), target.reshape(-1),
                               reduction="none").view_as(target)
        total = total + (loss * mask).sum()
        correct = correct + ((voice_logits.argmax(-1) == target).float() * mask).sum()
        counted = counted + mask.sum()
    return total / tokens.shape[0], correct, counted


def kl_terms(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL with free bits per dimension, plain KL), both summed over dimensions, mean over bars."""
    kl_per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=0)  # (L,)
    return torch.clamp(kl_per_dim, min=free_bits).sum(), kl_per_dim.sum()


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across bars `mu` (N, L) more than `threshold`."""
    return int((mu.var(dim=0) > threshold).sum())


_SQRT_HALF = 0.7071067811865476  # a Python float keeps float32 arrays float32


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * _SQRT_HALF))


class FastDecoder:
    """A numpy copy of `BarVAE.decode` for one bar at a time (no torch dispatch per layer).

    Generation decodes single bars, where torch's per-operation overhead dominates; this does
    the same arithmetic (float32) in a few numpy calls, well under a millisecond per bar.
    """

    def __init__(self, vae: BarVAE) -> None:
        weights = {name: tensor.detach().cpu().numpy().astype(np.float32).copy()
                   for name, tensor in vae.state_dict().items()}
        self.latent_dim = vae.config.latent_dim
        prefix = "decoder_conditioner."
        self.root = weights[prefix + "root.weight"]
        self.quality = weights[prefix + "quality.weight"]
        self.mode = weights[prefix + "mode.weight"]
        self.key_offset = weights[prefix + "key_offset.weight"]
        self.style = weights[prefix + "style.weight"]  # (part, S)
        self.activity = weights[prefix + "activity.weight"]
        self.layers = [(weights[f"decoder.{i}.weight"].T.copy(), weights[f"decoder.{i}.bias"]) for i in (0, 2, 4)]
        self.transitions = [weights[f"transitions.{voice}"] for voice in range(N_VOICES)]
        self.drum_activity = weights["drum_activity.weight"]
        self.drum_layers = [(weights[f"drum_decoder.{i}.weight"].T.copy(), weights[f"drum_decoder.{i}.bias"])
                            for i in (0, 2, 4)]

    def condition(self, root: int, quality: int, mode: int, key_offset: int, style: np.ndarray,
                  activity: int) -> np.ndarray:
        """(cond_dim,) condition vector, as `Conditioner` computes it."""
        return np.concatenate([self.root[root], self.quality[quality], self.mode[mode], self.key_offset[key_offset],
                               self.style @ style.astype(np.float32), self.activity[activity]])

    def decode(self, z: np.ndarray, cond: np.ndarray, activity: int) -> list[np.ndarray]:
        """Per-voice logits [(16, V) x 4] of one latent z (L,) under condition vector `cond`,
        without the transition term (add `self.transitions[voice][previous_token]` per step)."""
        hidden = np.concatenate([z.astype(np.float32), cond])
        for number, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight + bias
            if number < 2:
                hidden = _gelu(hidden)
        pitched = hidden.reshape(STEPS_PER_BAR, N_PITCHED, PITCHED_VOCAB)  # (16, 3, V)
        drums = np.concatenate([z.astype(np.float32), self.drum_activity[activity]])
        for number, (weight, bias) in enumerate(self.drum_layers):
            drums = drums @ weight + bias
            if number < 2:
                drums = _gelu(drums)
        return [pitched[:, 0], pitched[:, 1], pitched[:, 2], drums.reshape(STEPS_PER_BAR, VOCAB_SIZES[3])]
