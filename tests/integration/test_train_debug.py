"""Training end to end on tiny models: checkpoints, loss curves, early stop, resume, then compose."""

from __future__ import annotations

import dataclasses
import json
import logging

import pretty_midi

from models import checkpoint as ckpt
from models.composer import Composer, Controls
from models.debug import DEBUG_LSTM, DEBUG_TRAIN, DEBUG_VAE, synthetic_corpus
from models.train import evaluate_lstm, evaluate_vae, main, train


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


def test_train_command_on_a_midi_folder(tmp_path, monkeypatch, caplog):
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
