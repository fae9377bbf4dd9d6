"""Bar VAE: one bar of four voices (16 steps) ↔ a latent vector, conditioned on chord and style.

Encoder: a bidirectional GRU over the bar's steps (the four voices' embedded tokens, see
`models.data` for the token format), its final states and mean output with the condition
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
  every key, which absolute pitch logits would have to learn once per pitch. Training feeds the true earlier tokens (teacher forcing);
  generation samples the 16 steps in order. Because the step MLP's first layer is linear in
  one-hot tokens, `FastDecoder` folds it into lookup tables: a step costs a few table rows, one
  small matrix product and a draw, so a whole bar decodes in well under a millisecond.

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

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import erf as _erf
from torch import nn

from models.config import VAEConfig
from models.data import (CHORD_QUALITIES, FIRST_PITCH_TOKEN, N_VOICES, NO_CHORD_ROOT, STEPS_PER_BAR, STYLES,
                         VOCAB_SIZES)

N_ACTIVITY = 4
PITCHED_VOCAB = VOCAB_SIZES[0]
DRUM_VOCAB = VOCAB_SIZES[3]
N_PITCHED = 3
CONTEXT_OFFSETS = (1, 2, 3, 4, 8, 12, 16, 32, 64)  # the step part reads the tokens this many steps back
TAIL_STEPS = max(CONTEXT_OFFSETS)  # steps of the previous bars the step part can see (4 bars)
STEP_EMBED = 8
MAX_INTERVAL = 12  # intervals from the voice's last pitch scored one by one; wider ones share a score
N_INTERVALS = 2 * MAX_INTERVAL + 2
N_PITCHES = PITCHED_VOCAB - FIRST_PITCH_TOKEN


def _interval_buckets() -> np.ndarray:
    """(36, 36) bucket of the interval from last pitch index (row) to candidate pitch index (column)."""
    delta = np.arange(N_PITCHES)[None, :] - np.arange(N_PITCHES)[:, None]
    return np.where(np.abs(delta) <= MAX_INTERVAL, delta + MAX_INTERVAL, N_INTERVALS - 1)


def _pitch_classes() -> np.ndarray:
    """(3, 36) pitch class of every pitch index of each pitched voice."""
    from models.data import PITCH_RANGES, VOICES

    return np.stack([(PITCH_RANGES[VOICES[v]][0] + np.arange(N_PITCHES)) % 12 for v in range(N_PITCHED)])


INTERVAL_BUCKETS = _interval_buckets()
PITCH_CLASSES = _pitch_classes()


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
        self.drum_activity = nn.Embedding(N_ACTIVITY, 8)
        self.drum_decoder = nn.Sequential(
            nn.Linear(config.latent_dim + 8, d), nn.GELU(),
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

    def bar_part(self, z: torch.Tensor, cond: BarCondition) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


# --------------------------------------------------------------------------- numpy inference

_SQRT_HALF = 0.7071067811865476  # a Python float keeps float32 arrays float32


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * _SQRT_HALF))


class FastDecoder:
    """A numpy copy of `BarVAE`'s decoder for generating one bar at a time.

    Generation decodes single bars step by step, where torch's per-operation overhead would
    dominate. The step MLPs' first layers are linear in one-hot tokens, so they are folded into
    per-(offset, voice) tables: a step sums a dozen table rows, applies GELU and one product.
    Usage: `bar = decoder.bar(z, cond, activity)`, then for each step
    `decoder.step_logits(bar, t, earlier)` with `earlier` (K, 4) the tokens `CONTEXT_OFFSETS` back.
    """

    def __init__(self, vae: BarVAE) -> None:
        w = {name: tensor.detach().cpu().numpy().astype(np.float32).copy() for name, tensor in vae.state_dict().items()}
        self.latent_dim = vae.config.latent_dim
        prefix = "decoder_conditioner."
        self.root, self.quality = w[prefix + "root.weight"], w[prefix + "quality.weight"]
        self.mode, self.key_offset = w[prefix + "mode.weight"], w[prefix + "key_offset.weight"]
        self.style, self.activity = w[prefix + "style.weight"], w[prefix + "activity.weight"]

        def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
            return w[f"{name}.weight"].T.copy(), w[f"{name}.bias"]

        self.trunk = [linear("decoder.0"), linear("decoder.2")]
        base_1, base_2 = linear("base_head.0"), linear("base_head.1")
        # The two linear layers of the low-rank head folded into one per-bar product chain.
        self.base_head = (base_1, base_2)
        self.context_head = linear("context_head")
        self.drum_activity = w["drum_activity.weight"]
        self.drum_trunk = [linear("drum_decoder.0"), linear("drum_decoder.2")]
        self.drum_base_head, self.drum_context_head = linear("drum_base_head"), linear("drum_context_head")

        # Fold the step MLPs' first layers into one table: a row per (offset, voice, token), its
        # columns the pitched hidden units then the drum hidden units (drum rows: voice 3 only).
        e = vae.config.context_embed_dim
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
            hidden = _gelu(hidden @ weight + bias)
        drum_hidden = np.concatenate([z.astype(np.float32), self.drum_activity[activity]])
        for weight, bias in self.drum_trunk:
            drum_hidden = _gelu(drum_hidden @ weight + bias)
        context = (hidden @ self.context_head[0] + self.context_head[1]).reshape(STEPS_PER_BAR, -1)
        drum_context = (drum_hidden @ self.drum_context_head[0] + self.drum_context_head[1]).reshape(STEPS_PER_BAR, -1)
        pre = np.concatenate([context @ self.context_weight, drum_context @ self.drum_context_weight], axis=1)
        return {
            "base": ((hidden @ self.base_head[0][0] + self.base_head[0][1]) @ self.base_head[1][0]
                     + self.base_head[1][1]).reshape(STEPS_PER_BAR, N_PITCHED, PITCHED_VOCAB),
            "drum_base": (drum_hidden @ self.drum_base_head[0] + self.drum_base_head[1]).reshape(STEPS_PER_BAR, DRUM_VOCAB),
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
