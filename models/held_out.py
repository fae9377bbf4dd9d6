"""The networks' held-out figures: the VAE's reconstruction accuracy (`evaluate_vae`), the LSTM's
NLL per bar (`evaluate_lstm`), the pair's two headline figures (`held_out_figures`) and the
chord bigram baseline (`chord_bigram_nll`). Training validates with them; `chiplofi eval`
reports them (`models.evaluate`)."""

from __future__ import annotations

import numpy as np
import torch

from models.corpus import Corpus
from models.errors import ModelError
from models.layout import N_CHORDS
from models.lstm import BarLSTM, sequence_losses
from models.tensors import BarTensors, SongSequences, bar_tensors, encode_means, song_sequences, window_batch, windows
from models.vae import BarVAE, active_units, kl_terms, reconstruction_loss


@torch.inference_mode()
def evaluate_vae(vae: BarVAE, data: Corpus | BarTensors, batch_size: int = 1024) -> dict[str, float]:
    """Held-out figures of the VAE: per-step reconstruction accuracy (decoding the posterior
    mean; all voices, known voices only), per voice, cross-entropy per bar, KL, active units."""
    tensors = bar_tensors(data) if isinstance(data, Corpus) else data
    vae.eval()
    total_ce = total_kl = 0.0
    correct = np.zeros(4)
    counted = np.zeros(4)
    mus = []
    for begin in range(0, len(tensors), batch_size):
        index = slice(begin, begin + batch_size)
        tokens, mask = tensors.tokens[index], tensors.voice_mask[index]
        cond = tensors.condition(index)
        logits, mu, logvar = vae(tokens, cond, mask, tensors.previous_tail[index].long(), sample=False)
        ce, _, _ = reconstruction_loss(logits, tokens, mask)
        _, kl = kl_terms(mu, logvar, 0.0)
        total_ce += float(ce) * tokens.shape[0]
        total_kl += float(kl) * tokens.shape[0]
        for voice, voice_logits in enumerate(logits):
            known = mask[:, voice:voice + 1].expand(-1, tokens.shape[1])
            right = (voice_logits.argmax(-1) == tokens[..., voice]) & known
            correct[voice] += float(right.sum())
            counted[voice] += float(known.sum())
        mus.append(mu)
    n = max(len(tensors), 1)
    result = {
        "accuracy": float(correct.sum() / max(counted.sum(), 1)),
        "cross_entropy_per_bar": total_ce / n,
        "kl_per_bar": total_kl / n,
        "active_units": active_units(torch.cat(mus)) if mus else 0,
        "bars": len(tensors),
    }
    for voice, name in enumerate(("lead", "harmony", "bass", "drums")):
        result[f"accuracy_{name}"] = float(correct[voice] / counted[voice]) if counted[voice] else float("nan")
    return result



@torch.inference_mode()
def evaluate_lstm(lstm: BarLSTM, vae: BarVAE | None, data: Corpus | SongSequences,
                  window: int = 64) -> dict[str, float]:
    """Held-out NLL per bar (nats) of the LSTM: next chord, next latent (VAE posterior means)."""
    if isinstance(data, Corpus):
        if vae is None:
            raise ModelError("evaluate_lstm needs the VAE to encode a corpus")
        tensors = bar_tensors(data)
        seqs = song_sequences(tensors, encode_means(vae, tensors))
    else:
        seqs = data
    lstm.eval()
    items = windows(seqs, window, None)
    chord_sum = latent_sum = bars = 0.0
    for begin in range(0, len(items), 64):
        latents, chords, style, mode, start, lengths = window_batch(seqs, items[begin:begin + 64], window)
        chord_nll, latent_nll, mask = sequence_losses(lstm, latents, chords, style, mode, start, lengths)
        chord_sum += float((chord_nll * mask).sum())
        latent_sum += float((latent_nll * mask).sum())
        bars += float(mask.sum())
    return {"chord_nll": chord_sum / max(bars, 1), "latent_nll": latent_sum / max(bars, 1), "bars": bars}


def held_out_figures(vae: BarVAE, lstm: BarLSTM, val_t: BarTensors, window: int) -> dict[str, float]:
    """The figures the summary compares (VAE accuracy, LSTM chord NLL) of a model pair on held-out
    bars, the LSTM reading the pair's own VAE latents. Used on the starting models of a fine-tuning."""
    vae_metrics = evaluate_vae(vae, val_t)
    lstm_metrics = evaluate_lstm(lstm, None, song_sequences(val_t, encode_means(vae, val_t)), window)
    return {"val_accuracy": vae_metrics["accuracy"], "val_chord_nll": lstm_metrics["chord_nll"]}


def chord_bigram_nll(train: SongSequences, held_out: SongSequences, smoothing: float = 0.5) -> float:
    """Held-out NLL per bar (nats) of a chord bigram Markov chain fitted on `train` (a baseline)."""
    counts = np.full((N_CHORDS + 1, N_CHORDS), smoothing)  # row N_CHORDS: song start
    for chords in train.chords:
        previous = N_CHORDS
        for chord in chords.tolist():
            counts[previous, chord] += 1
            previous = chord
    log_probs = np.log(counts / counts.sum(axis=1, keepdims=True))
    total, bars = 0.0, 0
    for chords in held_out.chords:
        previous = N_CHORDS
        for chord in chords.tolist():
            total -= log_probs[previous, chord]
            previous = chord
            bars += 1
    return total / max(bars, 1)
