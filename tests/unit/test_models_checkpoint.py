"""Checkpoints: round trip, and every way a checkpoint can be wrong raises CheckpointError, with
or without torch; the torch-free composer plays what the torch-loaded models give."""

from __future__ import annotations

import importlib
import itertools
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy, save_file as save_numpy
from safetensors.torch import load_file, save_file

from models import checkpoint as ckpt
from models.composer import Composer, Controls
from models.debug import DEBUG_LSTM, DEBUG_VAE, debug_models, write_debug_checkpoint
from models.errors import CheckpointError
from models.layout import vae_shapes


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
    _, _, cards = ckpt.load_models(tmp_path)
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
    directory = ckpt.shipped_directory()

    vae, lstm, cards = ckpt.load_models(directory)
    assert cards["lstm"].metrics["vae_model_id"] == cards["vae"].model_id
    assert sum(p.stat().st_size for p in directory.iterdir()) <= 20 * 1024 * 1024
    composer = Composer.from_modules(vae, lstm, Controls(seed=0))
    bars = [next(composer) for _ in range(6)]
    assert all({n[0] for n in bar.notes} == {"lead", "harmony", "bass", "drums"} for bar in bars)


# --------------------------------------------------------------------------- without torch

@pytest.fixture
def without_torch(monkeypatch):
    """While a test runs, importing torch (or safetensors' torch part) raises ImportError."""
    blocked = {"torch", "safetensors.torch"} | {name for name in sys.modules if name.startswith("torch.")}
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def debug_checkpoint(tmp_path):
    return write_debug_checkpoint(tmp_path / "ckpt", seed=1)


def rewrite_weights(directory, change, kind="vae"):
    """Replace the weights file with `change(arrays)`, written by safetensors' numpy part, resealed."""
    weights, _ = ckpt.paths(directory, kind)
    save_numpy(change(load_numpy(str(weights))), str(weights))
    reseal(directory, kind)


def test_composer_from_numpy_weights_without_torch(debug_checkpoint, without_torch):
    vae, lstm = ckpt.load_weight_pair(debug_checkpoint)
    assert vae.info == ckpt.read_info(debug_checkpoint, "vae") and lstm.info.kind == "lstm"
    assert vae.config == DEBUG_VAE and lstm.config == DEBUG_LSTM
    assert {name: a.shape for name, a in vae.arrays.items()} == vae_shapes(DEBUG_VAE)
    assert all(a.dtype == np.float32 and a.flags.writeable for a in [*vae.arrays.values(), *lstm.arrays.values()])
    composer = Composer.from_checkpoint(debug_checkpoint, Controls(seed=4))
    assert composer.model_id == f"{vae.info.model_id}+{lstm.info.model_id}"
    assert all(bar.notes for bar in itertools.islice(composer, 8))
    with pytest.raises(ImportError):  # the fixture does block torch
        importlib.import_module("torch")


def test_numpy_weights_are_the_saved_state_dict(debug_checkpoint):
    vae, _ = debug_models(seed=1)
    loaded = ckpt.load_weights(debug_checkpoint, "vae")
    for name, tensor in vae.state_dict().items():
        assert np.array_equal(tensor.numpy(), loaded.arrays[name])


CORRUPTIONS = {
    "missing tensor": (lambda a: {k: v for k, v in a.items() if k != "step_head.bias"},
                       r"vae\.safetensors: missing tensors \['step_head\.bias'\]"),
    "unexpected tensor": (lambda a: {**a, "extra.weight": np.zeros(2, np.float32)},
                          r"vae\.safetensors: unexpected tensors \['extra\.weight'\]"),
    "wrong shape": (lambda a: {**a, "step_head.weight": np.zeros((3, 3), np.float32)},
                    r"vae\.safetensors: tensor step_head\.weight has shape \(3, 3\), the model needs \(114, 32\)"),
    "not floating point": (lambda a: {**a, "step_head.bias": np.zeros(114, np.int32)},
                           r"vae\.safetensors: tensor step_head\.bias holds int32"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_numpy_loading_rejects_bad_tensors(debug_checkpoint, without_torch, corruption):
    change, message = CORRUPTIONS[corruption]
    rewrite_weights(debug_checkpoint, change)
    with pytest.raises(CheckpointError, match=message):
        ckpt.load_weights(debug_checkpoint, "vae")
    with pytest.raises(CheckpointError, match=message):
        Composer.from_checkpoint(debug_checkpoint)


def test_numpy_loading_rejects_a_config_that_does_not_fit(debug_checkpoint, without_torch):
    card = debug_checkpoint / "lstm.json"
    raw = json.loads(card.read_text())
    card.write_text(json.dumps({**raw, "model_args": {**raw["model_args"], "hidden_dim": 40}}))
    with pytest.raises(CheckpointError, match=r"lstm\.safetensors: tensor .* has shape .* the model needs"):
        ckpt.load_weights(debug_checkpoint, "lstm")
    card.write_text(json.dumps({**raw, "model_args": {**raw["model_args"], "num_layers": 0}}))
    with pytest.raises(CheckpointError, match=r"lstm\.json: cannot build a lstm model .*num_layers"):
        ckpt.load_weights(debug_checkpoint, "lstm")
    card.write_text(json.dumps({**raw, "model_args": [1, 2]}))
    with pytest.raises(CheckpointError, match=r"lstm\.json: model_args is not a JSON object"):
        ckpt.load_weights(debug_checkpoint, "lstm")


def test_numpy_loading_rejects_truncated_and_unknown_files(debug_checkpoint, without_torch):
    weights = debug_checkpoint / "vae.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"vae\.safetensors.*truncated"):
        ckpt.load_weights(debug_checkpoint, "vae")
    reseal(debug_checkpoint)
    with pytest.raises(CheckpointError, match=r"vae\.safetensors: unreadable safetensors"):
        ckpt.load_weights(debug_checkpoint, "vae")
    card = debug_checkpoint / "lstm.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "format_version": 2}))
    with pytest.raises(CheckpointError, match=r"lstm\.json: unknown checkpoint format version 2"):
        ckpt.load_weights(debug_checkpoint, "lstm")
    with pytest.raises(CheckpointError, match="unknown checkpoint kind 'gan'"):
        ckpt.load_weights(debug_checkpoint, "gan")


class _TouchOnUnpickle:
    """Unpickling this creates `marker`: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_is_never_unpickled(debug_checkpoint, tmp_path, without_torch):
    marker = tmp_path / "unpickled"
    weights = debug_checkpoint / "vae.safetensors"
    weights.write_bytes(pickle.dumps({"step_head.weight": _TouchOnUnpickle(marker)}))
    reseal(debug_checkpoint)  # the card vouches for the file: only its format can stop it
    with pytest.raises(CheckpointError, match=r"vae\.safetensors: unreadable safetensors"):
        ckpt.load_weights(debug_checkpoint, "vae")
    with pytest.raises(CheckpointError, match=r"vae\.safetensors: unreadable safetensors"):
        Composer.from_checkpoint(debug_checkpoint)
    assert not marker.exists()


def test_numpy_composer_equals_the_torch_built_one_on_the_shipped_checkpoint():
    """The stream's torch-free composer plays exactly the bars the torch-loaded models give."""
    directory = ckpt.shipped_directory()
    vae, lstm, cards = ckpt.load_models(directory)
    model_id = f"{cards['vae'].model_id}+{cards['lstm'].model_id}"
    for controls in (Controls(seed=0), Controls(seed=41, temperature=1.6, style_blend=0.8, energy=0.9)):
        from_torch = list(itertools.islice(Composer.from_modules(vae, lstm, controls, model_id), 64))
        from_numpy_composer = Composer.from_checkpoint(directory, controls)
        assert from_numpy_composer.model_id == model_id
        assert list(itertools.islice(from_numpy_composer, 64)) == from_torch
