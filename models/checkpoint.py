"""Checkpoints: safetensors weights plus a JSON card; loading never unpickles and needs no torch.

A checkpoint named `<dir>/<kind>` is two files:
- `<kind>.safetensors`: the model's state dict (float32 tensors);
- `<kind>.json`: ``format_version``, ``kind`` ("vae" or "lstm"), ``model_args`` (the config the
  loader rebuilds the model from), ``data_hash``, ``metrics``, ``created`` (UTC, ISO 8601),
  ``weights_sha256`` and ``weights_bytes`` of the weights file, and a ``model_id``.

Reading is torch-free: `load_weights` / `load_weight_pair` return numpy arrays (read with
`safetensors.numpy`) checked against the shapes `models.layout` derives from the card's
``model_args``; the stream generates from them (`models.inference`). `load_checkpoint` and
`load_models` build the torch modules (training, evaluation) from the same checked arrays and
import torch only when called. Every problem — a missing or truncated file, a JSON that does
not parse, an unknown version or kind, a weights file that does not match its card or is not
safetensors (a pickle, say), a missing, unexpected or wrongly shaped tensor, a NaN or infinite
weight — raises `CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save_file

from models.config import LSTMConfig, VAEConfig, config_from_dict
from models.errors import CheckpointError
from models.layout import Shapes, lstm_shapes, vae_shapes

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# kind → (config class, the tensor shapes a config implies)
KINDS: dict[str, tuple[type, Callable[[Any], Shapes]]] = {"vae": (VAEConfig, vae_shapes),
                                                         "lstm": (LSTMConfig, lstm_shapes)}


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


# A card is a few kB and the weights a few MB (models/checkpoints: 5.1 MB for the VAE); the caps
# keep a wrong file (a disk image, /dev/zero behind a symlink) from being read into memory.
MAX_CARD_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_regular_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `max_bytes`.

    Opened without blocking and checked on the open descriptor: a FIFO would block `open` until a
    writer comes (for ever), a device like /dev/zero never ends, and a check by name before
    opening could be raced by a rename. Raises CheckpointError naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open {what} ({error.strerror or error})") from error
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{path}: {what} is not a regular file")
        if info.st_size > max_bytes:
            raise CheckpointError(f"{path}: {what} is {info.st_size} bytes, more than the {max_bytes} accepted")
        try:
            data = handle.read(max_bytes + 1)
        except OSError as error:
            raise CheckpointError(f"{path}: cannot read {what} ({error.strerror or error})") from error
    if len(data) > max_bytes:  # it grew while being read
        raise CheckpointError(f"{path}: {what} is more than the {max_bytes} bytes accepted")
    return data


def save_checkpoint(directory: str | Path, kind: str, model: nn.Module, data_hash: str = "",
                    metrics: dict[str, Any] | None = None) -> CheckpointInfo:
    """Write `model` (which has a `.config` dataclass) as checkpoint `kind` in `directory`.

    Files are written under temporary names and renamed, so a reader never sees half a file.
    """
    _check_kind(kind)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = paths(directory, kind)
    arrays = module_arrays(model)
    # What is written must load: the same check as on reading (a module that left its layout
    # in models.layout fails here, not in the stream).
    _check_arrays(arrays, KINDS[kind][1](model.config), weights_path)
    tmp_weights = weights_path.with_name(weights_path.name + ".tmp")
    save_file(arrays, str(tmp_weights), metadata={"kind": kind, "format_version": str(FORMAT_VERSION)})
    sha = _sha256(tmp_weights)
    info = CheckpointInfo(
        kind=kind,
        model_args=dataclasses.asdict(model.config),
        data_hash=data_hash,
        metrics=dict(metrics or {}),
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
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
    text = read_regular_file(card_path, MAX_CARD_BYTES, "checkpoint card")
    try:
        raw = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
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
    for name in ("model_args", "metrics"):
        if not isinstance(raw[name], dict):
            raise CheckpointError(f"{card_path}: {name} is not a JSON object")
    return CheckpointInfo(**{name: raw[name] for name in fields})


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """A checked checkpoint as numpy: its config, its float32 arrays by tensor name, its card."""

    config: VAEConfig | LSTMConfig
    arrays: dict[str, np.ndarray]
    info: CheckpointInfo


def load_weights(directory: str | Path, kind: str) -> LoadedWeights:
    """Checkpoint `kind` ("vae" or "lstm") in `directory` as numpy arrays, checked; no torch."""
    _check_kind(kind)
    info = read_info(directory, kind)
    weights_path, card_path = paths(directory, kind)
    # One read of one open file: the size, the checksum and the tensors are all of the same bytes.
    weights = read_regular_file(weights_path, MAX_WEIGHTS_BYTES, "checkpoint weights")
    size = len(weights)
    if size != info.weights_bytes:
        raise CheckpointError(f"{weights_path}: {size} bytes, the card says {info.weights_bytes} "
                              "(truncated or replaced file)")
    if hashlib.sha256(weights).hexdigest() != info.weights_sha256:
        raise CheckpointError(f"{weights_path}: content does not match the checksum in {card_path.name}")
    config_class, shapes_of = KINDS[kind]
    config = config_from_dict(config_class, info.model_args, str(card_path))
    try:
        shapes = shapes_of(config)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{card_path}: cannot build a {kind} model from model_args ({error})") from error
    try:
        # safetensors is a JSON header plus raw little-endian arrays: nothing in it is executed.
        arrays = load(weights)
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({error})") from error
    return LoadedWeights(config, _check_arrays(arrays, shapes, weights_path), info)


def load_weight_pair(directory: str | Path) -> tuple[LoadedWeights, LoadedWeights]:
    """(VAE, LSTM) of a checkpoint directory as numpy arrays; checks that they belong together."""
    vae, lstm = load_weights(directory, "vae"), load_weights(directory, "lstm")
    if vae.config.latent_dim != lstm.config.latent_dim:
        raise CheckpointError(f"{directory}: VAE latent size {vae.config.latent_dim} does not match "
                              f"the LSTM's {lstm.config.latent_dim}")
    trained_on = lstm.info.metrics.get("vae_model_id")
    if trained_on and trained_on != vae.info.model_id:
        raise CheckpointError(f"{directory}: the LSTM was trained on the latents of {trained_on}, "
                              f"not of this VAE ({vae.info.model_id})")
    return vae, lstm


def load_checkpoint(directory: str | Path, kind: str) -> tuple[nn.Module, CheckpointInfo]:
    """(torch model in eval mode, card) of checkpoint `kind` ("vae" or "lstm") in `directory`."""
    loaded = load_weights(directory, kind)
    return _module(loaded), loaded.info


def load_models(directory: str | Path) -> tuple[nn.Module, nn.Module, dict[str, CheckpointInfo]]:
    """(VAE, LSTM, cards by kind) as torch models from a checkpoint directory; checks that they
    belong together."""
    vae, lstm = load_weight_pair(directory)
    return _module(vae), _module(lstm), {"vae": vae.info, "lstm": lstm.info}


def module_arrays(module: Any) -> dict[str, np.ndarray]:
    """A torch module's state dict as float32 numpy arrays (own copies; torch is not imported here)."""
    return {name: tensor.detach().cpu().float().numpy().copy() for name, tensor in module.state_dict().items()}


def _module(loaded: LoadedWeights) -> nn.Module:
    """The torch model of checked weights, in eval mode."""
    import torch

    from models.lstm import BarLSTM
    from models.vae import BarVAE

    model = {"vae": BarVAE, "lstm": BarLSTM}[loaded.info.kind](loaded.config)
    # strict: a module whose state dict left models.layout is a bug, and fails loudly here.
    model.load_state_dict({name: torch.from_numpy(array) for name, array in loaded.arrays.items()})
    return model.eval()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r} (known: {sorted(KINDS)})")


def _check_arrays(arrays: dict[str, np.ndarray], shapes: Shapes, weights_path: Path) -> dict[str, np.ndarray]:
    """`arrays` as float32, after checking their names and shapes against `shapes`."""
    missing = sorted(set(shapes) - set(arrays))
    unexpected = sorted(set(arrays) - set(shapes))
    if missing:
        raise CheckpointError(f"{weights_path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise CheckpointError(f"{weights_path}: unexpected tensors {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    checked = {}
    for name, array in arrays.items():
        if tuple(array.shape) != shapes[name]:
            raise CheckpointError(f"{weights_path}: tensor {name} has shape {tuple(array.shape)}, "
                                  f"the model needs {shapes[name]}")
        if not np.issubdtype(array.dtype, np.floating):
            raise CheckpointError(f"{weights_path}: tensor {name} holds {array.dtype}, not floating point numbers")
        checked[name] = np.array(array, dtype=np.float32)  # an own, writable copy
        if not np.isfinite(checked[name]).all():  # a diverged training run: the model would only play its fallback
            raise CheckpointError(f"{weights_path}: tensor {name} holds NaN or infinite values")
    return checked


def shipped_directory() -> Path:
    """The checkpoints shipped with chiplofi (`models/checkpoints/`)."""
    return Path(__file__).resolve().parent / "checkpoints"
