"""Training end to end on tiny models: checkpoints, loss curves, early stop, resume, then compose."""

from __future__ import annotations

import dataclasses
import json
import logging

import pretty_midi
import pytest
import torch

from models import checkpoint as ckpt
from models.composer import Composer, Controls
from models.debug import DEBUG_LSTM, DEBUG_TRAIN, DEBUG_VAE, synthetic_corpus, write_debug_checkpoint
from models.errors import CheckpointError, ModelError
from models.finetune import FINE_TUNE_LEARNING_RATE, fine_tuning_config
from models.held_out import evaluate_lstm, evaluate_vae, held_out_figures
from models.split import split_corpus
from models.tensors import bar_tensors
from models.train import main, train


def test_train_resume_and_compose(tmp_path):
    corpus = synthetic_corpus(n_songs=12, bars_per_song=12)
    config = dataclasses.replace(DEBUG_TRAIN, max_epochs_vae=2, max_epochs_lstm=1, patience=10)
    result = train(tmp_path, config=config, vae_config=DEBUG_VAE, lstm_config=DEBUG_LSTM, corpus=corpus,
                   progress=False)
    for name in ("vae.safetensors", "vae.json", "lstm.safetensors", "lstm.json", "loss_curves.png"):
        assert (tmp_path / name).exists(), name
    assert 0.0 <= result.vae_metrics["val_accuracy"] <= 1.0
    assert result.vae_metrics["val_active_units"] <= DEBUG_VAE.latent_dim
    assert "val_chord_bigram_nll" in result.lstm_metrics and result.lstm_metrics["val_chord_nll"] > 0
    history = json.loads((tmp_path / "resume" / "vae.json").read_text())["state"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]

    # Resume with a larger epoch budget: continues at epoch 3 instead of starting over.
    more = dataclasses.replace(config, max_epochs_vae=3)
    state = json.loads((tmp_path / "resume" / "vae.json").read_text())
    state["state"]["done"] = False
    (tmp_path / "resume" / "vae.json").write_text(json.dumps(state))
    train(tmp_path, config=more, vae_config=DEBUG_VAE, lstm_config=DEBUG_LSTM, corpus=corpus, progress=False,
          resume=True)
    history = json.loads((tmp_path / "resume" / "vae.json").read_text())["state"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    vae, lstm, cards = ckpt.load_models(tmp_path)
    assert cards["lstm"].metrics["vae_model_id"] == cards["vae"].model_id
    assert evaluate_vae(vae, corpus)["bars"] == corpus.n_bars
    assert evaluate_lstm(lstm, vae, corpus)["chord_nll"] > 0
    composer = Composer.from_checkpoint(tmp_path, Controls(seed=1))
    bars = [next(composer) for _ in range(10)]
    assert all(bar.notes for bar in bars)


def test_train_command_on_a_midi_folder(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "songs"
    folder.mkdir()
    for number in range(6):
        midi = pretty_midi.PrettyMIDI(initial_tempo=90)
        piano = pretty_midi.Instrument(0)
        bass = pretty_midi.Instrument(33)
        for bar in range(6):
            root = [60, 57, 65, 67][(bar + number) % 4]
            t = bar * 4 * 60 / 90
            for pitch in (root, root + 4, root + 7):
                piano.notes.append(pretty_midi.Note(80, pitch, t, t + 1.2))
            bass.notes.append(pretty_midi.Note(90, root - 24, t, t + 2.4))
        midi.instruments.extend([piano, bass])
        midi.write(str(folder / f"song{number}.mid"))
    out = tmp_path / "run"
    caplog.set_level(logging.INFO)
    assert main(["--data", str(folder), "--out", str(out), "--epochs", "1", "--minutes", "1", "--threads", "1",
                 "--no-progress"]) == 0
    assert (out / "vae.json").exists() and (out / "lstm.json").exists()
    printed = capsys.readouterr().out  # the summary, with --no-progress too
    assert "VAE   reconstruction accuracy" in printed and "LSTM  chord NLL" in printed
    assert f"checkpoints in {out.resolve()}" in printed and "systemctl reload chiplofi" in printed

    # Fine-tuning the run just made, from the command line: before/after on the held-out songs.
    tuned = tmp_path / "tuned"
    assert main(["--data", str(folder), "--out", str(tuned), "--epochs", "1", "--minutes", "1", "--threads", "1",
                 "--no-progress", "--init-from", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"fine-tuned from {out}" in printed and "accuracy" in printed and " -> " in printed
    saved = json.loads((tuned / "train_config.json").read_text())
    assert saved["init_from"]["vae_model_id"] == ckpt.read_info(out, "vae").model_id
    assert saved["train"]["learning_rate"] == FINE_TUNE_LEARNING_RATE and saved["train"]["beta_warmup_steps"] == 0


def test_fine_tuning_starts_from_the_given_models(tmp_path):
    corpus = synthetic_corpus(n_songs=12, bars_per_song=12)
    config = dataclasses.replace(DEBUG_TRAIN, max_epochs_vae=1, max_epochs_lstm=1)
    start = write_debug_checkpoint(tmp_path / "start", seed=3)
    vae, lstm, _ = ckpt.load_models(start)
    # The starting models' own figures on the validation songs are the "before" of the result.
    _, val_corpus = split_corpus(corpus, config.validation_percent)
    expected = held_out_figures(vae, lstm, bar_tensors(val_corpus), config.lstm_window)
    # A different vae_config is ignored: the architecture is the starting checkpoint's.
    other_vae = dataclasses.replace(DEBUG_VAE, hidden_dim=DEBUG_VAE.hidden_dim * 2)
    result = train(tmp_path / "tuned", config=fine_tuning_config(config, minutes=0.5), vae_config=other_vae,
                   lstm_config=DEBUG_LSTM, corpus=corpus, progress=False, init_from=start)
    assert result.before == pytest.approx(expected)
    assert result.init_from == start
    assert result.vae_baselines and all(0.0 <= v <= 1.0 for v in result.vae_baselines.values())
    tuned_vae, _, cards = ckpt.load_models(tmp_path / "tuned")
    assert tuned_vae.config == DEBUG_VAE
    # One epoch from the starting weights at a small learning rate stays near them (from scratch
    # would not): the first layer moved, but by far less than its own size.
    name = next(iter(vae.state_dict()))
    moved = (tuned_vae.state_dict()[name] - vae.state_dict()[name]).norm()
    assert 0 < moved < 0.5 * vae.state_dict()[name].norm()


def test_init_from_a_missing_directory_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        train(tmp_path / "out", config=DEBUG_TRAIN, corpus=synthetic_corpus(), progress=False,
              init_from=tmp_path / "nowhere")


def test_vae_from_keeps_the_vae_and_trains_a_new_lstm_over_it(tmp_path):
    corpus = synthetic_corpus(n_songs=12, bars_per_song=12)
    config = dataclasses.replace(DEBUG_TRAIN, max_epochs_vae=1, max_epochs_lstm=1)
    start = write_debug_checkpoint(tmp_path / "start", seed=3)
    new = tmp_path / "new"
    result = train(new, config=config, lstm_config=DEBUG_LSTM, corpus=corpus, progress=False, vae_from=start)
    for name in ("vae.safetensors", "vae.json"):  # the very files: same weights, same model id
        assert (new / name).read_bytes() == (start / name).read_bytes(), name
    vae, lstm, cards = ckpt.load_models(new)  # the pair loads: the LSTM reads this VAE
    assert cards["lstm"].metrics["vae_model_id"] == ckpt.read_info(start, "vae").model_id
    # A new LSTM (same architecture as the starting one, other weights), not the starting one tuned.
    _, old_lstm, _ = ckpt.load_models(start)
    name = "chord_embedding.weight"
    assert lstm.state_dict()[name].shape == old_lstm.state_dict()[name].shape
    assert not torch.equal(lstm.state_dict()[name], old_lstm.state_dict()[name])
    # The kept VAE's figure is measured on this run's held-out songs.
    _, val_corpus = split_corpus(corpus, config.validation_percent)
    assert result.vae_metrics["val_accuracy"] == pytest.approx(evaluate_vae(vae, bar_tensors(val_corpus))["accuracy"])
    assert not (new / "resume" / "vae.json").exists()  # the VAE was not trained
    saved = json.loads((new / "train_config.json").read_text())
    assert saved["vae_from"] == {"directory": str(start), "vae_model_id": cards["vae"].model_id}

    # Resumed without --vae-from (as README's resume line does), the run keeps the VAE it started with.
    more = dataclasses.replace(config, max_epochs_lstm=2)
    state = json.loads((new / "resume" / "lstm.json").read_text())
    state["state"]["done"] = False
    (new / "resume" / "lstm.json").write_text(json.dumps(state))
    train(new, config=more, lstm_config=DEBUG_LSTM, corpus=corpus, progress=False, resume=True)
    assert (new / "vae.safetensors").read_bytes() == (start / "vae.safetensors").read_bytes()
    history = json.loads((new / "resume" / "lstm.json").read_text())["state"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # continued, not restarted over a new VAE

    with pytest.raises(ModelError, match="not both"):
        train(tmp_path / "both", config=config, corpus=corpus, progress=False, vae_from=start, init_from=start)
    with pytest.raises(CheckpointError, match="nowhere"):
        train(tmp_path / "none", config=config, corpus=corpus, progress=False, vae_from=tmp_path / "nowhere")
