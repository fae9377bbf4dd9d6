"""Bar VAE: one bar of four voices (16 steps) ↔ a latent vector, conditioned on chord and style.

Encoder: a bidirectional GRU over the bar's steps (the four voices' embedded tokens, see
`models.tokens` for the token format), its final states and mean output with the condition
through an MLP → (mu, logvar).

Decoder, in two parts that add up to each step's logits:
- a bar part: an MLP from (latent, condition) to base logits for all 16 steps at once, plus a
  context vector per step for the step part;
- a step part: a small MLP shared by all steps that reads the tokens 1, 2, 3, 4, 8, 12, 16, 32
  and 64 steps back (all voices; before the bar's start, the previous bars' steps — so "as one
  beat, half a bar, one, two or four bars ago" is as easy to say as "held"), the step's
  position and its context vector. Besides logits it scores pitches relative to what they are heard against:
  an interval from the voice's last pitch (-12..12 semitones, wider together) and a pitch
  class relative to the bar's chord root — melody moves by steps and lands on chord tones in
  every key, which absolute pitch logits would have to learn once per pitch. Training feeds the
  true earlier tokens (teacher forcing); generation samples the 16 steps in order. Because the
  step MLP's first layer is linear in one-hot tokens, `models.inference.FastDecoder` (numpy)
  folds it into lookup tables: a step costs a few table rows, one small matrix product and a
  draw, so a whole bar decodes in well under a millisecond. Sizes and weight shapes come from
  `models.layout`.

Condition (`BarCondition`): chord root (0..11, 12 = none) and quality, key mode (major/minor),
key offset (semitones the bar was moved from C major / A minor, 0 when generating), style
weights over `STYLES` (one-hot in training; any blend when generating) and an activity level
0..3 (how many steps carry an onset; the composer's energy control).

Drums are decoded by separate parts that see the latent and the activity but not the style or
chord: only Lakh songs have drums, so drums learned there serve every style blend. Voices
absent from a whole song (drums in the lo-fi loops, ...) are unknown, not silent: the encoder
reads them as an "unknown" token and the loss ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.config import VAEConfig
from models.layout import (
    CONTEXT_OFFSETS,
    DRUM_ACTIVITY_EMBED,
    INTERVAL_BUCKETS,
    N_ACTIVITY,
    N_INTERVALS,
    N_PITCHED,
    PITCH_CLASSES,
    STEP_EMBED,
    TAIL_STEPS,
    conditioner_sizes,
)
from models.theory import CHORD_QUALITIES, NO_CHORD_ROOT
from models.tokens import DRUM_VOCAB, FIRST_PITCH_TOKEN, N_VOICES, PITCHED_VOCAB, STEPS_PER_BAR, STYLES, VOCAB_SIZES


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


def context_tokens(tokens: torch.Tensor, previous_tail: torch.Tensor | None) -> torch.Tensor:
    """(B, 16, K, 4): for each step, the tokens `CONTEXT_OFFSETS` steps back.

    `previous_tail` (B, TAIL_STEPS, 4) holds the steps before the bar (None: rests, as at a
    song's start).
    """
    if previous_tail is None:
        previous_tail = torch.zeros(tokens.shape[0], TAIL_STEPS, tokens.shape[2], dtype=tokens.dtype)
    sequence = torch.cat([previous_tail.to(tokens.dtype), tokens], dim=1)  # (B, TAIL + 16, 4)
    steps = torch.arange(STEPS_PER_BAR)
    index = torch.stack([TAIL_STEPS + steps - k for k in CONTEXT_OFFSETS], dim=1)  # (16, K)
    return sequence[:, index]  # (B, 16, K, 4)


class Conditioner(nn.Module):
    """BarCondition → (B, cond_dim) vector."""

    def __init__(self, cond_dim: int) -> None:
        super().__init__()
        sizes = conditioner_sizes(cond_dim)
        self.root = nn.Embedding(NO_CHORD_ROOT + 1, sizes["root"])
        self.quality = nn.Embedding(len(CHORD_QUALITIES), sizes["quality"])
        self.mode = nn.Embedding(2, sizes["mode"])
        self.key_offset = nn.Embedding(12, sizes["key_offset"])
        self.style = nn.Linear(len(STYLES), sizes["style"], bias=False)
        self.activity = nn.Embedding(N_ACTIVITY, sizes["activity"])

    def forward(self, cond: BarCondition) -> torch.Tensor:
        return torch.cat([self.root(cond.root), self.quality(cond.quality), self.mode(cond.mode),
                          self.key_offset(cond.key_offset), self.style(cond.style),
                          self.activity(cond.activity)], dim=-1)  # (B, cond_dim)


class BarVAE(nn.Module):
    """Encoder MLP; decoder = bar MLP (all steps at once) + step MLP over earlier tokens."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        e, h, d = config.embed_dim, config.hidden_dim, config.drum_hidden_dim
        ctx, ar = config.context_dim, config.step_hidden_dim
        # Encoder: one embedding per voice; the extra last index is "unknown voice".
        self.embeddings = nn.ModuleList(nn.Embedding(v + 1, e) for v in VOCAB_SIZES)
        self.encoder_conditioner = Conditioner(config.cond_dim)
        # A bidirectional GRU over the steps shares its weights across time: a figure is read
        # the same wherever it falls in the bar.
        self.encoder_rnn = nn.GRU(N_VOICES * e, config.encoder_hidden_dim, batch_first=True, bidirectional=True)
        self.encoder = nn.Sequential(
            nn.Linear(4 * config.encoder_hidden_dim + config.cond_dim, h), nn.GELU(),
            nn.Linear(h, 2 * config.latent_dim),
        )
        # Pitched voices: bar part and step part.
        self.decoder_conditioner = Conditioner(config.cond_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim + config.cond_dim, h), nn.GELU(),
            nn.Linear(h, h), nn.GELU(),
        )
        # Low-rank base logits: all 16 steps from a small code (cheaper to run per bar).
        self.base_head = nn.Sequential(nn.Linear(h, config.base_rank),
                                       nn.Linear(config.base_rank, STEPS_PER_BAR * N_PITCHED * PITCHED_VOCAB))
        self.context_head = nn.Linear(h, STEPS_PER_BAR * ctx)  # a context vector per step
        self.step_embedding = nn.Embedding(STEPS_PER_BAR, STEP_EMBED)
        self.context_embeddings = nn.ModuleList(nn.Embedding(v, config.context_embed_dim) for v in VOCAB_SIZES)
        n_context = len(CONTEXT_OFFSETS) * N_VOICES * config.context_embed_dim
        self.step_hidden = nn.Linear(n_context + STEP_EMBED + ctx, ar)
        self.step_head = nn.Linear(ar, N_PITCHED * PITCHED_VOCAB)
        self.interval_head = nn.Linear(ar, N_PITCHED * N_INTERVALS)
        self.chord_tone_head = nn.Linear(ar, N_PITCHED * 12)
        self.register_buffer("interval_buckets", torch.from_numpy(INTERVAL_BUCKETS), persistent=False)
        self.register_buffer("pitch_classes", torch.from_numpy(PITCH_CLASSES), persistent=False)
        # Drums: the same two parts, without style or chord, reading earlier drum tokens only.
        self.drum_activity = nn.Embedding(N_ACTIVITY, DRUM_ACTIVITY_EMBED)
        self.drum_decoder = nn.Sequential(
            nn.Linear(config.latent_dim + DRUM_ACTIVITY_EMBED, d), nn.GELU(),
            nn.Linear(d, d), nn.GELU(),
        )
        self.drum_base_head = nn.Linear(d, STEPS_PER_BAR * DRUM_VOCAB)
        self.drum_context_head = nn.Linear(d, STEPS_PER_BAR * ctx)
        drum_ar = config.drum_step_hidden_dim
        self.drum_step_hidden = nn.Linear(len(CONTEXT_OFFSETS) * config.context_embed_dim + STEP_EMBED + ctx, drum_ar)
        self.drum_step_head = nn.Linear(drum_ar, DRUM_VOCAB)

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
        steps, last = self.encoder_rnn(torch.cat(embedded, dim=-1))  # (B, 16, 2He), (2, B, He)
        summary = torch.cat([last.transpose(0, 1).flatten(1), steps.mean(dim=1)], dim=-1)  # (B, 4He)
        stats = self.encoder(torch.cat([summary, self.encoder_conditioner(cond)], dim=-1))  # (B, 2L)
        mu, logvar = stats.chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def bar_part(self, z: torch.Tensor,
                 cond: BarCondition) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pitched base logits (B, 16, 3, V), pitched context (B, 16, ctx), drum base logits
        (B, 16, Vd), drum context (B, 16, ctx)) of latents `z` (B, L)."""
        hidden = self.decoder(torch.cat([z, self.decoder_conditioner(cond)], dim=-1))  # (B, H)
        hidden = F.dropout(hidden, self.config.dropout, self.training)
        base = self.base_head(hidden).view(-1, STEPS_PER_BAR, N_PITCHED, PITCHED_VOCAB)
        drum_hidden = self.drum_decoder(torch.cat([z, self.drum_activity(cond.activity)], dim=-1))  # (B, Hd)
        drum_base = self.drum_base_head(drum_hidden).view(-1, STEPS_PER_BAR, DRUM_VOCAB)
        context = self.context_head(hidden).view(-1, STEPS_PER_BAR, self.config.context_dim)
        drum_context = self.drum_context_head(drum_hidden).view(-1, STEPS_PER_BAR, self.config.context_dim)
        return base, context, drum_base, drum_context

    def decode(self, z: torch.Tensor, cond: BarCondition, tokens: torch.Tensor,
               previous_tail: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Teacher-forced per-voice logits [(B, 16, V_voice) x 4] of latents `z` (B, L).

        Step t's logits see the given `tokens` (B, 16, 4) before t only (and `previous_tail`).
        """
        base, context, drum_base, drum_context = self.bar_part(z, cond)
        batch = z.shape[0]
        earlier = context_tokens(tokens, previous_tail)  # (B, 16, K, 4)
        embedded = torch.stack([self.context_embeddings[v](earlier[..., v]) for v in range(N_VOICES)], dim=3)
        # embedded: (B, 16, K, 4, E)
        if self.training and self.config.context_dropout > 0:
            # Hide whole earlier tokens (inverted dropout: nothing to undo when generating).
            keep = torch.rand(embedded.shape[:4] + (1,)) >= self.config.context_dropout  # (B, 16, K, 4, 1)
            embedded = embedded * keep / (1.0 - self.config.context_dropout)
        steps = self.step_embedding.weight[None].expand(batch, -1, -1)  # (B, 16, STEP_EMBED)
        pitched_in = torch.cat([embedded.flatten(2), steps, context], dim=-1)
        hidden = F.dropout(F.relu(self.step_hidden(pitched_in)), self.config.dropout, self.training)  # (B, 16, A)
        pitched = self.step_head(hidden).view(batch, STEPS_PER_BAR, N_PITCHED, PITCHED_VOCAB)
        relative = self._relative_scores(hidden, tokens, previous_tail, cond.root)  # (B, 16, 3, 36)
        pitched = base + pitched + F.pad(relative, (FIRST_PITCH_TOKEN, 0))
        drum_in = torch.cat([embedded[:, :, :, 3].flatten(2), steps, drum_context], dim=-1)
        drums = drum_base + self.drum_step_head(F.relu(self.drum_step_hidden(drum_in)))
        return [pitched[:, :, 0], pitched[:, :, 1], pitched[:, :, 2], drums]

    def _relative_scores(self, hidden: torch.Tensor, tokens: torch.Tensor, previous_tail: torch.Tensor | None,
                         root: torch.Tensor) -> torch.Tensor:
        """(B, 16, 3, 36) pitch scores from intervals to each voice's last pitch and from pitch
        classes relative to the chord root, weighted by the step part's `hidden` (B, 16, A)."""
        batch = hidden.shape[0]
        if previous_tail is None:
            previous_tail = torch.zeros(batch, TAIL_STEPS, tokens.shape[2], dtype=tokens.dtype)
        sequence = torch.cat([previous_tail.to(tokens.dtype), tokens], dim=1)[..., :N_PITCHED]  # (B, T, 3)
        positions = torch.arange(sequence.shape[1])[None, :, None].expand_as(sequence)
        onset_at = torch.where(sequence >= FIRST_PITCH_TOKEN, positions, torch.full_like(positions, -1))
        last_at = torch.cummax(onset_at, dim=1).values[:, TAIL_STEPS - 1:-1]  # (B, 16, 3): before each step
        last_pitch = torch.gather(sequence, 1, last_at.clamp(min=0)) - FIRST_PITCH_TOKEN  # (B, 16, 3)
        known = (last_at >= 0).unsqueeze(-1).float()
        intervals = self.interval_head(hidden).view(batch, STEPS_PER_BAR, N_PITCHED, N_INTERVALS)
        buckets = self.interval_buckets[last_pitch.clamp(min=0)]  # (B, 16, 3, 36)
        scores = torch.gather(intervals, 3, buckets) * known
        tones = self.chord_tone_head(hidden).view(batch, STEPS_PER_BAR, N_PITCHED, 12)
        relative_class = (self.pitch_classes[None] - root[:, None, None]) % 12  # (B, 3, 36)
        tone_scores = torch.gather(tones, 3, relative_class[:, None].expand(-1, STEPS_PER_BAR, -1, -1))
        has_chord = (root != NO_CHORD_ROOT).float()[:, None, None, None]
        return scores + tone_scores * has_chord

    def forward(self, tokens: torch.Tensor, cond: BarCondition, voice_mask: torch.Tensor | None = None,
                previous_tail: torch.Tensor | None = None,
                sample: bool = True) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(teacher-forced logits per voice, mu, logvar) of bars `tokens` (B, 16, 4).

        `previous_tail` (B, TAIL_STEPS, 4): the steps before each bar in its song (rests before a
        song's start).
        """
        mu, logvar = self.encode(tokens, cond, voice_mask)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode(z, cond, tokens, previous_tail), mu, logvar


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
