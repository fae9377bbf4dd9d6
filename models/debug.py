"""Tiny models and synthetic data so model tests run on a CPU in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import checkpoint as ckpt
from models.config import LSTMConfig, TrainConfig, VAEConfig
from models.corpus import Corpus, SongInfo
from models.lstm import BarLSTM
from models.theory import MINOR, NO_CHORD_ROOT
from models.tokens import FIRST_PITCH_TOKEN, HOLD, STEPS_PER_BAR, pitch_to_token
from models.vae import BarVAE

DEBUG_VAE = VAEConfig(latent_dim=8, embed_dim=4, hidden_dim=64, drum_hidden_dim=32, cond_dim=20, context_dim=8,
                      encoder_hidden_dim=8, context_embed_dim=4, step_hidden_dim=32, drum_step_hidden_dim=16,
                      base_rank=16)
DEBUG_LSTM = LSTMConfig(latent_dim=8, hidden_dim=32, chord_embed_dim=8, dropout=0.0)
DEBUG_TRAIN = TrainConfig(minutes=0.5, max_epochs_vae=3, max_epochs_lstm=3, batch_size=32, lstm_batch_size=4,
                          lstm_window=8, beta_warmup_steps=20, patience=2, threads=1, validation_percent=30.0)


def debug_models(seed: int = 0) -> tuple[BarVAE, BarLSTM]:
    """A tiny VAE and LSTM with random weights (deterministic for a seed)."""
    torch.manual_seed(seed)
    return BarVAE(DEBUG_VAE).eval(), BarLSTM(DEBUG_LSTM).eval()


def write_debug_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """Save the tiny random models as a checkpoint directory (for composer/generate tests)."""
    vae, lstm = debug_models(seed)
    vae_info = ckpt.save_checkpoint(directory, "vae", vae, "debug", {"note": "random debug weights"})
    ckpt.save_checkpoint(directory, "lstm", lstm, "debug", {"vae_model_id": vae_info.model_id})
    return Path(directory)


def synthetic_corpus(n_songs: int = 12, bars_per_song: int = 16, seed: int = 0) -> Corpus:
    """Songs of simple, learnable patterns: a I–vi–IV–V loop, arpeggio lead, root bass, backbeat drums."""
    rng = np.random.default_rng(seed)
    progression = [(0, 0), (9, 1), (5, 0), (7, 0)]  # (root, quality index: maj / min)
    tokens_all, chords_all, songs, starts = [], [], [], [0]
    for song in range(n_songs):
        tonic = int(rng.integers(0, 12))
        tokens = np.zeros((bars_per_song, STEPS_PER_BAR, 4), dtype=np.int16)
        chords = np.zeros((bars_per_song, 2), dtype=np.int16)
        for bar in range(bars_per_song):
            root, quality = progression[bar % 4]
            root = (root + tonic) % 12
            chords[bar] = (root, quality)
            third = 3 if quality == 1 else 4
            for step, interval in zip(range(0, 16, 4), (0, third, 7, 12), strict=True):
                tokens[bar, step, 0] = pitch_to_token(0, 60 + root + interval)
                tokens[bar, step + 1, 0] = HOLD
            tokens[bar, 0, 1] = pitch_to_token(1, 64 + root + third)
            tokens[bar, 1:16, 1] = HOLD
            tokens[bar, 0, 2] = pitch_to_token(2, 36 + root)
            tokens[bar, 1:8, 2] = HOLD
            tokens[bar, 8, 2] = pitch_to_token(2, 43 + root)
            tokens[bar, 9:16, 2] = HOLD
            tokens[bar, [0, 8], 3] |= 1
            tokens[bar, [4, 12], 3] |= 2
            tokens[bar, ::2, 3] |= 4
        tokens_all.append(tokens)
        chords_all.append(chords)
        style = song % 3
        songs.append(SongInfo(f"synthetic/{song}.mid", f"synthetic/{song}", style, tonic, 0, 90.0,
                              (True, True, True, style == 2)))
        starts.append(starts[-1] + bars_per_song)
    assert all(int(t.max()) >= FIRST_PITCH_TOKEN for t in tokens_all)
    assert NO_CHORD_ROOT == 12 and MINOR == 1
    return Corpus(np.concatenate(tokens_all), np.concatenate(chords_all), np.array(starts, dtype=np.int64),
                  songs, "synthetic", {})
