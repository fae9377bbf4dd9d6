"""Checkpoints: round trip, and every way a checkpoint can be wrong raises CheckpointError."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import checkpoint as ckpt
from models.debug import debug_models, write_debug_checkpoint
from models.errors import CheckpointError


def reseal(directory, kind="vae"):
    """Make the card's size and checksum match an edited weights file (to reach the later checks)."""
    weights, card = ckpt.paths(directory, kind)
    raw = json.loads(card.read_text())
    raw["weights_bytes"] = weights.stat().st_size
    raw["weights_sha256"] = ckpt._sha256(weights)
    card.write_text(json.dumps(raw))


def test_round_trip(tmp_path):
    vae, lstm = debug_models(seed=2)
    info = ckpt.save_checkpoint(tmp_path, "vae", vae, "hash123", {"val_accuracy": 0.5})
    ckpt.save_checkpoint(tmp_path, "lstm", lstm, "hash123", {})
    loaded, card = ckpt.load_checkpoint(tmp_path, "vae")
    assert card == info and card.data_hash == "hash123" and card.metrics == {"val_accuracy": 0.5}
    assert card.format_version == ckpt.FORMAT_VERSION and card.created.endswith("+00:00")
    assert card.model_args == {k: getattr(vae.config, k) for k in card.model_args}
    for name, tensor in vae.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    assert not loaded.training
    v, l, cards = ckpt.load_models(tmp_path)
    assert set(cards) == {"vae", "lstm"}
    raw = json.loads((tmp_path / "vae.json").read_text())
    assert {"model_args", "format_version", "data_hash", "metrics", "created"} <= set(raw)


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="card not found"):
        ckpt.load_checkpoint(tmp_path, "vae")
    write_debug_checkpoint(tmp_path)
    (tmp_path / "vae.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"vae\.safetensors.*not found"):
        ckpt.load_checkpoint(tmp_path, "vae")


def test_truncated_weights(tmp_path):
    write_debug_checkpoint(tmp_path)
    weights = tmp_path / "vae.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"vae\.safetensors.*truncated"):
        ckpt.load_checkpoint(tmp_path, "vae")
    reseal(tmp_path)  # even when the card is made to match, the file itself does not parse
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        ckpt.load_checkpoint(tmp_path, "vae")


def test_changed_bytes_fail_the_checksum(tmp_path):
    write_debug_checkpoint(tmp_path)
    weights = tmp_path / "vae.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(tmp_path, "vae")


def test_unknown_version_and_bad_card(tmp_path):
    write_debug_checkpoint(tmp_path)
    card = tmp_path / "lstm.json"
    raw = json.loads(card.read_text())
    card.write_text(json.dumps({**raw, "format_version": 99}))
    with pytest.raises(CheckpointError, match=r"lstm\.json.*unknown checkpoint format version 99"):
        ckpt.load_checkpoint(tmp_path, "lstm")
    card.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable checkpoint card"):
        ckpt.load_checkpoint(tmp_path, "lstm")
    card.write_text(json.dumps({**raw, "kind": "vae"}))
    with pytest.raises(CheckpointError, match="kind"):
        ckpt.load_checkpoint(tmp_path, "lstm")
    with pytest.raises(CheckpointError, match="unknown checkpoint kind"):
        ckpt.load_checkpoint(tmp_path, "gan")


def test_missing_and_unexpected_tensors(tmp_path):
    write_debug_checkpoint(tmp_path)
    weights = tmp_path / "vae.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != name}, str(weights))
    reseal(tmp_path)
    with pytest.raises(CheckpointError, match=f"missing tensors.*{name}"):
        ckpt.load_checkpoint(tmp_path, "vae")
    save_file({**tensors, "extra.weight": torch.zeros(2)}, str(weights))
    reseal(tmp_path)
    with pytest.raises(CheckpointError, match="unexpected tensors.*extra.weight"):
        ckpt.load_checkpoint(tmp_path, "vae")


def test_wrong_shape(tmp_path):
    write_debug_checkpoint(tmp_path)
    card = tmp_path / "vae.json"
    raw = json.loads(card.read_text())
    raw["model_args"]["hidden_dim"] += 8
    card.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"vae\.safetensors: tensor .* has shape"):
        ckpt.load_checkpoint(tmp_path, "vae")
    raw["model_args"]["no_such_arg"] = 1
    card.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="unknown model_args"):
        ckpt.load_checkpoint(tmp_path, "vae")


def test_models_that_do_not_belong_together(tmp_path):
    write_debug_checkpoint(tmp_path)
    vae, _ = debug_models()
    from models.config import VAEConfig
    from models.vae import BarVAE

    other = BarVAE(VAEConfig(latent_dim=4, embed_dim=4, hidden_dim=16, drum_hidden_dim=8, cond_dim=10))
    ckpt.save_checkpoint(tmp_path, "vae", other)
    with pytest.raises(CheckpointError, match="latent size"):
        ckpt.load_models(tmp_path)
    ckpt.save_checkpoint(tmp_path, "vae", debug_models(seed=5)[0])  # same shape, other weights
    with pytest.raises(CheckpointError, match="trained on the latents"):
        ckpt.load_models(tmp_path)


def test_shipped_checkpoint_loads_and_composes():
    from models.composer import Composer, Controls

    directory = ckpt.shipped_directory()

    vae, lstm, cards = ckpt.load_models(directory)
    assert cards["lstm"].metrics["vae_model_id"] == cards["vae"].model_id
    assert sum(p.stat().st_size for p in directory.iterdir()) <= 20 * 1024 * 1024
    composer = Composer(vae, lstm, Controls(seed=0))
    bars = [next(composer) for _ in range(6)]
    assert all({n[0] for n in bar.notes} == {"lead", "harmony", "bass", "drums"} for bar in bars)
