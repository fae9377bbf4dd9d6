"""Simple baselines for the models' held-out figures, fitted on the same training songs.

Torch-free (numpy). All work in the models' space: songs moved to C major / A minor
(`Corpus.key_normalised`), voices absent from a whole song left out (unknown, not silent).

Reconstruction (beside the VAE's per-step, teacher-forced accuracy; `BarArrays` in, the share
of correctly predicted tokens over all steps of the known voices out):
- `StepBigram`: per voice, the most frequent token after the previous step's token (for step 0,
  the previous bar's last token; a rest at a song's start). It sees exactly what the VAE's
  transition term sees, without the latent.
- `PositionMode`: per voice and step of the bar, the most frequent token.
- `copy_previous_bar_accuracy`: each bar predicted as a copy of the bar before it (rests for a
  song's first bar).

Sequence likelihood (beside the LSTM's held-out NLL, in nats per bar, over the same targets:
joint chord indices and the VAE's posterior-mean latents of every bar, a song's first bar
predicted from the song start):
- `ChordMarkov`: a first-order Markov chain over joint chords (with a song-start state),
  add-`smoothing` counts; NLL = -log p(chord_t | chord_t-1).
- `LatentMarkov`: a linear-Gaussian Markov chain over latents: z_t ~ N(W x_t, diag s²) with
  x_t = [z_t-1 (0 at a song start), song-start flag, one-hot chord_t, style weights, key mode,
  1], fitted by ridge regression; s² is the per-dimension residual variance on the training
  songs. Like the LSTM it is told the bar's chord, style and mode. NLL = -log N(z_t; W x_t, s²),
  summed over latent dimensions (a density, so it can be negative).
The LSTM's two terms are p(chord_t | history) and p(z_t | history, chord_t); the baselines' sum
is compared with the LSTM's sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.corpus import Corpus
from models.layout import N_CHORDS  # joint (root, quality) chord indices, as the LSTM's
from models.tokens import N_VOICES, STEPS_PER_BAR, STYLES, VOCAB_SIZES


@dataclass
class BarArrays:
    """A key-normalised corpus as the VAE sees it."""

    tokens: np.ndarray  # (N, 16, 4) int64
    previous_last: np.ndarray  # (N, 4) int64: the previous bar's last tokens (0 at a song's start)
    voice_mask: np.ndarray  # (N, 4) bool: voice present in the bar's song
    song_starts: np.ndarray  # (n_songs + 1,) int64

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def first_bars(self) -> np.ndarray:
        """(N,) bool: the bar opens its song."""
        first = np.zeros(len(self), dtype=bool)
        starts = self.song_starts[:-1][np.diff(self.song_starts) > 0]
        first[starts] = True
        return first


def bar_arrays(corpus: Corpus) -> BarArrays:
    """`BarArrays` of `corpus` after moving every song to C major / A minor."""
    normalised = corpus.key_normalised()
    tokens = normalised.tokens.astype(np.int64)
    song_of_bar = normalised.song_of_bar()
    present = np.array([s.voices_present for s in normalised.songs], dtype=bool).reshape(-1, N_VOICES)
    arrays = BarArrays(tokens, np.zeros((len(tokens), N_VOICES), dtype=np.int64),
                       present[song_of_bar] if len(tokens) else np.zeros((0, N_VOICES), dtype=bool),
                       normalised.song_starts.astype(np.int64))
    if len(tokens):
        arrays.previous_last[1:] = tokens[:-1, -1, :]
        arrays.previous_last[arrays.first_bars] = 0
    return arrays


def _previous_steps(arrays: BarArrays) -> np.ndarray:
    """(N, 16, 4) the token before each step."""
    return np.concatenate([arrays.previous_last[:, None, :], arrays.tokens[:, :-1, :]], axis=1)


def accuracy(predicted: np.ndarray, arrays: BarArrays) -> float:
    """Share of correct tokens over all steps of known voices (`predicted` (N, 16, 4))."""
    known = np.broadcast_to(arrays.voice_mask[:, None, :], arrays.tokens.shape)
    counted = int(known.sum())
    if counted == 0:
        return math.nan
    return float(((predicted == arrays.tokens) & known).sum() / counted)


def accuracy_per_voice(predicted: np.ndarray, arrays: BarArrays) -> list[float]:
    """Accuracy of each voice (NaN for a voice known in no bar)."""
    result = []
    for voice in range(N_VOICES):
        known = arrays.voice_mask[:, voice]
        counted = int(known.sum()) * STEPS_PER_BAR
        right = (predicted[known, :, voice] == arrays.tokens[known, :, voice]).sum()
        result.append(float(right / counted) if counted else math.nan)
    return result


class StepBigram:
    """Per voice: the most frequent token after the previous step's token."""

    def __init__(self, train: BarArrays) -> None:
        previous = _previous_steps(train)
        self.table: list[np.ndarray] = []
        for voice, vocab in enumerate(VOCAB_SIZES):
            known = train.voice_mask[:, voice]
            counts = np.zeros((vocab, vocab), dtype=np.int64)
            np.add.at(counts, (previous[known, :, voice].ravel(), train.tokens[known, :, voice].ravel()), 1)
            fallback = int(counts.sum(axis=0).argmax())
            best = counts.argmax(axis=1)
            best[counts.sum(axis=1) == 0] = fallback  # a previous token never seen in training
            self.table.append(best)

    def predict(self, arrays: BarArrays) -> np.ndarray:
        previous = _previous_steps(arrays)
        return np.stack([self.table[v][previous[..., v]] for v in range(N_VOICES)], axis=-1)


class PositionMode:
    """Per voice and step of the bar: the most frequent token."""

    def __init__(self, train: BarArrays) -> None:
        self.best = np.zeros((STEPS_PER_BAR, N_VOICES), dtype=np.int64)
        for voice, vocab in enumerate(VOCAB_SIZES):
            column = train.tokens[train.voice_mask[:, voice], :, voice]  # (n, 16)
            for step in range(STEPS_PER_BAR):
                counts = np.bincount(column[:, step], minlength=vocab)
                self.best[step, voice] = int(counts.argmax())

    def predict(self, arrays: BarArrays) -> np.ndarray:
        return np.broadcast_to(self.best, arrays.tokens.shape).copy()


def copy_previous_bar(arrays: BarArrays) -> np.ndarray:
    """Each bar predicted as the bar before it in its song (rests for a song's first bar)."""
    predicted = np.zeros_like(arrays.tokens)
    predicted[1:] = arrays.tokens[:-1]
    predicted[arrays.first_bars] = 0
    return predicted


def reconstruction_baselines(train: BarArrays, held_out: BarArrays) -> dict[str, float]:
    """Held-out accuracy of every reconstruction baseline, fitted on `train`."""
    return {
        "step_bigram": accuracy(StepBigram(train).predict(held_out), held_out),
        "position_mode": accuracy(PositionMode(train).predict(held_out), held_out),
        "copy_previous_bar": accuracy(copy_previous_bar(held_out), held_out),
    }


# --------------------------------------------------------------------------- sequence baselines

@dataclass
class Sequences:
    """Per-song bar sequences in the LSTM's terms (numpy)."""

    latents: list[np.ndarray]  # each (T, L) float
    chords: list[np.ndarray]  # each (T,) joint chord index
    style: np.ndarray  # (n_songs, S) float weights over STYLES
    mode: np.ndarray  # (n_songs,) 0 major / 1 minor

    @property
    def bars(self) -> int:
        return int(sum(len(c) for c in self.chords))


class ChordMarkov:
    """First-order Markov chain over joint chord indices, with a song-start state."""

    def __init__(self, train: Sequences, smoothing: float = 0.5) -> None:
        counts = np.full((N_CHORDS + 1, N_CHORDS), float(smoothing))  # row N_CHORDS: song start
        for chords in train.chords:
            previous = np.concatenate([[N_CHORDS], chords[:-1]]).astype(np.int64)
            np.add.at(counts, (previous, np.asarray(chords, dtype=np.int64)), 1.0)
        self.log_probs = np.log(counts / counts.sum(axis=1, keepdims=True))

    def nll_per_bar(self, data: Sequences) -> float:
        """Mean -log p(chord_t | chord_t-1), nats per bar."""
        total, bars = 0.0, 0
        for chords in data.chords:
            chords = np.asarray(chords, dtype=np.int64)
            previous = np.concatenate([[N_CHORDS], chords[:-1]])
            total -= float(self.log_probs[previous, chords].sum())
            bars += len(chords)
        return total / bars if bars else math.nan


class LatentMarkov:
    """Linear-Gaussian Markov chain over latents (see the module docstring)."""

    def __init__(self, train: Sequences, ridge: float = 1.0, min_variance: float = 1e-4) -> None:
        x, y = self._design(train)
        if len(x) == 0:
            raise ValueError("no training bars for the latent baseline")
        gram = x.T @ x + ridge * np.eye(x.shape[1])
        self.weights = np.linalg.solve(gram, x.T @ y)  # (F, L)
        residual = y - x @ self.weights
        self.variance = np.maximum((residual ** 2).mean(axis=0), min_variance)  # (L,)

    @staticmethod
    def _design(data: Sequences) -> tuple[np.ndarray, np.ndarray]:
        rows, targets = [], []
        for song, (latents, chords) in enumerate(zip(data.latents, data.chords, strict=True)):
            latents = np.asarray(latents, dtype=np.float64)
            steps = len(latents)
            if steps == 0:
                continue
            previous = np.concatenate([np.zeros((1, latents.shape[1])), latents[:-1]])
            start = np.zeros((steps, 1))
            start[0] = 1.0
            chord = np.zeros((steps, N_CHORDS))
            chord[np.arange(steps), np.asarray(chords, dtype=np.int64)] = 1.0
            style = np.broadcast_to(np.asarray(data.style[song], dtype=np.float64), (steps, len(STYLES)))
            mode = np.full((steps, 1), float(data.mode[song]))
            rows.append(np.concatenate([previous, start, chord, style, mode, np.ones((steps, 1))], axis=1))
            targets.append(latents)
        if not rows:
            return np.zeros((0, 0)), np.zeros((0, 0))
        return np.concatenate(rows), np.concatenate(targets)

    def nll_per_bar(self, data: Sequences) -> float:
        """Mean -log N(z_t; prediction, variance), summed over dimensions: nats per bar."""
        x, y = self._design(data)
        if len(x) == 0:
            return math.nan
        residual = y - x @ self.weights
        nll = 0.5 * (np.log(2 * np.pi * self.variance) + residual ** 2 / self.variance).sum(axis=1)
        return float(nll.mean())


def sequence_baselines(train: Sequences, held_out: Sequences) -> dict[str, float]:
    """Held-out NLL (nats per bar) of the chord and latent baselines and their sum."""
    chord = ChordMarkov(train).nll_per_bar(held_out)
    latent = LatentMarkov(train).nll_per_bar(held_out)
    return {"chord_nll": chord, "latent_nll": latent, "nll": chord + latent}


def sequences_from(latents: Sequence[np.ndarray], chords: Sequence[np.ndarray], style: np.ndarray,
                   mode: np.ndarray) -> Sequences:
    """`Sequences` from per-song arrays (any array-likes, e.g. torch tensors)."""
    return Sequences([np.asarray(z, dtype=np.float64) for z in latents],
                     [np.asarray(c, dtype=np.int64) for c in chords],
                     np.asarray(style, dtype=np.float64), np.asarray(mode, dtype=np.int64))
