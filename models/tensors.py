"""The corpus as torch tensors for the two networks: `BarTensors` (every bar with its condition,
for the VAE), `transpose_batch` (the VAE's random transpositions), `encode_means` and
`SongSequences` (per song the VAE's latents and the chords, for the LSTM), and the LSTM's
windows over them (`windows`, `window_batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.corpus import Corpus
from models.layout import chord_index
from models.theory import NO_CHORD_ROOT
from models.tokens import FIRST_PITCH_TOKEN, N_PITCHES, STEPS_PER_BAR, STYLES
from models.vae import TAIL_STEPS, BarCondition, BarVAE, activity_levels


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
    """Per song of `tensors` its bars' `latents` (N, L) and joint chord indices, style and mode."""
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


def windows(seqs: SongSequences, window: int, offset_rng: np.random.Generator | None) -> list[tuple[int, int]]:
    """(song, first target bar) of windows covering every song; random phase when training."""
    result = []
    for song, chords in enumerate(seqs.chords):
        length = len(chords)
        phase = int(offset_rng.integers(0, window)) if offset_rng is not None and length > window else 0
        starts = [0] + list(range(phase if phase > 0 else window, length, window))
        result.extend((song, s) for s in starts)
    return result


def balanced_windows(seqs: SongSequences, items: Sequence[tuple[int, int]], window: int, floor: float,
                     max_repeats: int) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """`items` (from `windows`) with each style's windows repeated round(floor × B / b) times, at
    least once and at most `max_repeats` times (B: the bars of all the windows, b: the style's), so a
    rare style brings about `floor` × B bars to the epoch; and the repeats per style index."""
    styles = seqs.style.argmax(dim=1).tolist()
    bars: dict[int, int] = {}
    for song, first in items:
        bars[styles[song]] = bars.get(styles[song], 0) + min(window, len(seqs.chords[song]) - first)
    total = sum(bars.values())
    repeats = {style: max(1, min(max_repeats, round(floor * total / count))) if count else 1
               for style, count in sorted(bars.items())}
    return [item for item in items for _ in range(repeats[styles[item[0]]])], repeats


def window_batch(seqs: SongSequences, items: Sequence[tuple[int, int]], window: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LSTM's batch of `items` (from `windows`): latents (B, window + 1, L) and chords
    (B, window + 1), each row the bar before the window (zeros at a song's start) then up to
    `window` bars; style (B, S), key mode (B,), song-start flags (B,) and lengths (B,)."""
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
