"""Checkpoints: safetensors weights plus a JSON card; loading never unpickles.

A checkpoint named `<dir>/<kind>` is two files:
- `<kind>.safetensors`: the model's state dict (float32 tensors);
- `<kind>.json`: ``format_version``, ``kind`` ("vae" or "lstm"), ``model_args`` (the config the
  loader rebuilds the model from), ``data_hash``, ``metrics``, ``created`` (UTC, ISO 8601),
  ``weights_sha256`` and ``weights_bytes`` of the weights file, and a ``model_id``.

Every problem — a missing or truncated file, a JSON that does not parse, an unknown version or
kind, a weights file that does not match its card, a missing, unexpected or wrongly shaped
tensor — raises `CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.config import LSTMConfig, VAEConfig, config_from_dict
from models.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KINDS: dict[str, tuple[type, type]] = {}  # kind → (config class, model class), filled lazily


def _kinds() -> dict[str, tuple[type, type]]:
    if not KINDS:
        from models.lstm import BarLSTM
        from models.vae import BarVAE

        KINDS.update({"vae": (VAEConfig, BarVAE), "lstm": (LSTMConfig, BarLSTM)})
    return KINDS


@dataclasses.dataclass
class CheckpointInfo:
    """The JSON card of a checkpoint."""

    kind: str
    model_args: dict[str, Any]
    data_hash: str
    metrics: dict[str, Any]
    created: str
    model_id: str
    weights_sha256: str
    weights_bytes: int
    format_version: int = FORMAT_VERSION


def paths(directory: str | Path, kind: str) -> tuple[Path, Path]:
    """(weights path, card path) of checkpoint `kind` in `directory`."""
    directory = Path(directory)
    return directory / f"{kind}.safetensors", directory / f"{kind}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(directory: str | Path, kind: str, model: nn.Module, data_hash: str = "",
                    metrics: dict[str, Any] | None = None) -> CheckpointInfo:
    """Write `model` (which has a `.config` dataclass) as checkpoint `kind` in `directory`.

    Files are written under temporary names and renamed, so a reader never sees half a file.
    """
    if kind not in _kinds():
        raise CheckpointError(f"unknown checkpoint kind {kind!r} (known: {sorted(_kinds())})")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = paths(directory, kind)
    tensors = {name: tensor.detach().to(torch.float32).contiguous().clone()
               for name, tensor in model.state_dict().items()}
    tmp_weights = weights_path.with_name(weights_path.name + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"kind": kind, "format_version": str(FORMAT_VERSION)})
    sha = _sha256(tmp_weights)
    info = CheckpointInfo(
        kind=kind,
        model_args=dataclasses.asdict(model.config),
        data_hash=data_hash,
        metrics=dict(metrics or {}),
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        model_id=f"chiplofi-{kind}-{sha[:10]}",
        weights_sha256=sha,
        weights_bytes=tmp_weights.stat().st_size,
    )
    tmp_card = card_path.with_name(card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(dataclasses.asdict(info), indent=2, sort_keys=True) + "\n")
    os.replace(tmp_weights, weights_path)
    os.replace(tmp_card, card_path)
    log.info("saved %s checkpoint %s (%s)", kind, weights_path, info.model_id)
    return info


def read_info(directory: str | Path, kind: str) -> CheckpointInfo:
    """The JSON card of checkpoint `kind` in `directory`, checked."""
    _, card_path = paths(directory, kind)
    try:
        raw = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{card_path}: checkpoint card not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{card_path}: unreadable checkpoint card ({error})") from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"{card_path}: checkpoint card is not a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{card_path}: unknown checkpoint format version {version!r} "
                              f"(this chiplofi reads version {FORMAT_VERSION})")
    if raw.get("kind") != kind:
        raise CheckpointError(f"{card_path}: checkpoint kind is {raw.get('kind')!r}, expected {kind!r}")
    fields = {f.name for f in dataclasses.fields(CheckpointInfo)}
    missing = sorted(fields - set(raw))
    if missing:
        raise CheckpointError(f"{card_path}: checkpoint card lacks {missing}")
    return CheckpointInfo(**{name: raw[name] for name in fields})


def load_checkpoint(directory: str | Path, kind: str) -> tuple[nn.Module, CheckpointInfo]:
    """(model in eval mode, card) of checkpoint `kind` ("vae" or "lstm") in `directory`."""
    if kind not in _kinds():
        raise CheckpointError(f"unknown checkpoint kind {kind!r} (known: {sorted(_kinds())})")
    info = read_info(directory, kind)
    weights_path, card_path = paths(directory, kind)
    if not weights_path.exists():
        raise CheckpointError(f"{weights_path}: checkpoint weights not found")
    size = weights_path.stat().st_size
    if size != info.weights_bytes:
        raise CheckpointError(f"{weights_path}: {size} bytes, the card says {info.weights_bytes} "
                              "(truncated or replaced file)")
    if _sha256(weights_path) != info.weights_sha256:
        raise CheckpointError(f"{weights_path}: content does not match the checksum in {card_path.name}")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({error})") from error

    config_class, model_class = _kinds()[kind]
    config = config_from_dict(config_class, info.model_args, str(card_path))
    try:
        model = model_class(config)
    except (ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{card_path}: cannot build a {kind} model from model_args ({error})") from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{weights_path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise CheckpointError(f"{weights_path}: unexpected tensors {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{weights_path}: tensor {name} has shape {tuple(tensor.shape)}, "
                                  f"the model needs {tuple(expected[name].shape)}")
    model.load_state_dict({name: t.to(expected[name].dtype) for name, t in tensors.items()})
    model.eval()
    return model, info


def load_models(directory: str | Path) -> tuple[nn.Module, nn.Module, dict[str, CheckpointInfo]]:
    """(VAE, LSTM, cards by kind) from a checkpoint directory; checks that they belong together."""
    vae, vae_info = load_checkpoint(directory, "vae")
    lstm, lstm_info = load_checkpoint(directory, "lstm")
    if vae.config.latent_dim != lstm.config.latent_dim:
        raise CheckpointError(f"{directory}: VAE latent size {vae.config.latent_dim} does not match "
                              f"the LSTM's {lstm.config.latent_dim}")
    trained_on = lstm_info.metrics.get("vae_model_id")
    if trained_on and trained_on != vae_info.model_id:
        raise CheckpointError(f"{directory}: the LSTM was trained on the latents of {trained_on}, "
                              f"not of this VAE ({vae_info.model_id})")
    return vae, lstm, {"vae": vae_info, "lstm": lstm_info}


def shipped_directory() -> Path:
    """The checkpoints shipped with chiplofi (`models/checkpoints/`)."""
    return Path(__file__).resolve().parent / "checkpoints"
