"""The training loop both networks use: epochs within a budget, the best model kept, resume.

`fit` runs epochs until `Budget.max_epochs`, the wall-clock deadline, or `Budget.patience`
epochs without improvement. After each epoch rank 0 validates (`validate` gives the score the
best model is kept by, lower is better, and the history row), keeps the model when the score
improved by more than `IMPROVEMENT` (`keeper.keep`), optionally halves the learning rate on a
plateau, and writes `<resume_dir>/<stage>.safetensors` and `<stage>.json` (weights, optimiser
tensors, torch's random state and the loop state, without pickle) so an interrupted run goes on
from the last finished epoch. At the end the best model is restored (`keeper.restore`).

What an epoch trains on is the caller's: `epoch(state)` returns the number of batches and the
function that trains on batch `i` (forward, backward, optimiser step) and reports its figures.
An epoch cut by the deadline is validated only if at least a quarter of it ran.

Under torchrun (WORLD_SIZE > 1, `Dist`) every rank trains on its share of the batches; the
deadline, plateau and stop decisions are rank 0's, shared with all ranks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models import checkpoint as ckpt
from models.errors import CheckpointError

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)

IMPROVEMENT = 1e-4  # a score must drop by more than this to count as better
LR_FLOOR = 1e-5  # plateau halving stops here


class Dist:
    """Rank, world size and collective helpers; a single process when not under torchrun."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world > 1:
            return nn.parallel.DistributedDataParallel(model)
        return model

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, shared by all ranks (time budget, plateau, early stop)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1 if flag else 0])
        torch.distributed.broadcast(value, 0)
        return bool(value.item())

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


# --------------------------------------------------------------------------- what the caller gives

@dataclass
class Step:
    """One trained batch: figures summed over the epoch (`sums`) and the progress bar's postfix."""

    sums: dict[str, float]
    shown: dict[str, str] = field(default_factory=dict)


@dataclass
class Epoch:
    """An epoch's batches: how many, and the function that trains on batch `i` (0-based)."""

    batches: int
    train_batch: Callable[[int], Step]


@dataclass
class Validation:
    """Rank 0's held-out figures after an epoch."""

    score: float  # the best model is kept by it; lower is better
    record: dict[str, Any]  # the epoch's row of the history
    metrics: dict[str, Any]  # what the kept model's card says, if this epoch is the best


@dataclass(frozen=True)
class Budget:
    max_epochs: int
    patience: int  # epochs without improvement before stopping
    deadline: float = math.inf  # on the `clock` given to `fit` (time.monotonic by default)


class Keeper(Protocol):
    """Where the best model goes, and how it comes back."""

    def keep(self, metrics: dict[str, Any]) -> None: ...

    def restore(self) -> dict[str, Any]: ...


@dataclass
class CheckpointKeeper:
    """Keeps the best model as checkpoint `kind` in `directory` (`models.checkpoint`)."""

    directory: Path
    kind: str
    model: nn.Module
    data_hash: str

    def keep(self, metrics: dict[str, Any]) -> None:
        ckpt.save_checkpoint(self.directory, self.kind, self.model, self.data_hash, metrics)

    def restore(self) -> dict[str, Any]:
        best, info = ckpt.load_checkpoint(self.directory, self.kind)
        self.model.load_state_dict(best.state_dict())
        return info.metrics


# --------------------------------------------------------------------------- resume state

def new_state(**extra: Any) -> dict[str, Any]:
    """The loop state of a stage that has not started; `extra` keys are the caller's (saved too)."""
    return {"epoch": 0, "best": math.inf, "bad_epochs": 0, "history": [], "done": False, **extra}


def save_resume(directory: Path, stage: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                state: dict[str, Any]) -> None:
    """Weights, optimiser tensors and the loop's state, without pickle (safetensors + JSON)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for param_id, param_state in opt_state["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"opt.{param_id}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars[f"{param_id}.{name}"] = float(value.item() if torch.is_tensor(value) else value)
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = directory / f"{stage}.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, directory / f"{stage}.safetensors")
    payload = {"stage": stage, "state": state, "opt_scalars": scalars,
               "opt_param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]}
    (directory / f"{stage}.json.tmp").write_text(json.dumps(payload))
    os.replace(directory / f"{stage}.json.tmp", directory / f"{stage}.json")


def saved_state(directory: Path, stage: str) -> dict[str, Any]:
    """The loop state saved for `stage`, or {} when there is none or it does not parse."""
    try:
        return json.loads((directory / f"{stage}.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return {}


def load_resume(directory: Path, stage: str, model: nn.Module,
                optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Put the saved weights, optimiser and random state back; the loop state, or None if none was saved."""
    weights, card = directory / f"{stage}.safetensors", directory / f"{stage}.json"
    if not (weights.exists() and card.exists()):
        return None
    try:
        payload = json.loads(card.read_text())
        tensors = load_file(str(weights))
    except Exception as error:  # noqa: BLE001 - any damage means "start this stage again"
        raise CheckpointError(f"{weights}: cannot resume ({error})") from error
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as error:
        raise CheckpointError(f"{weights}: resume state does not fit the model ({error})") from error
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, param_id, name = key.split(".", 2)
            opt_state.setdefault(int(param_id), {})[name] = value
    for key, value in payload["opt_scalars"].items():
        param_id, name = key.split(".", 1)
        opt_state.setdefault(int(param_id), {})[name] = torch.tensor(value)
    groups = optimizer.state_dict()["param_groups"]
    for group, saved in zip(groups, payload["opt_param_groups"], strict=False):
        group.update({k: v for k, v in saved.items() if k in group and k != "params"})
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return payload["state"]


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar of `total` batches that leaves no line behind (none at all when not `enabled`)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled, leave=False)


# --------------------------------------------------------------------------- the loop

def fit(stage: str, model: nn.Module, optimizer: torch.optim.Optimizer, *,
        epoch: Callable[[dict[str, Any]], Epoch], validate: Callable[[dict[str, float], int, int], Validation],
        keeper: Keeper, budget: Budget, resume_dir: Path, resume: bool = False,
        state: dict[str, Any] | None = None, halve_lr_on_plateau: bool = False, dist: Dist | None = None,
        progress: bool = False, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Train `model` (stage "vae" or "lstm": names the resume files; upper case in logs and the
    progress bar) and return the kept model's metrics, the model holding its weights.

    `epoch(state)` is called at the start of each epoch (`state["epoch"]` epochs done; the
    caller's own keys of `state` are its to update); `validate(sums, batches, epoch)` gets the
    epoch's summed batch figures, how many batches they sum, and the epoch's number (from 1).
    `state` is a fresh stage's state (`new_state()` by default). With `resume`, the state saved
    in `resume_dir` replaces it when there is one; a finished stage only restores its best model.
    """
    dist = dist or Dist()
    label = stage.upper()
    state = state if state is not None else new_state()
    if resume:
        loaded = load_resume(resume_dir, stage, model, optimizer)
        if loaded is not None:
            state = loaded
            log.info("resuming %s training at epoch %d", label, state["epoch"])
    if state["done"]:
        return keeper.restore()
    while state["epoch"] < budget.max_epochs:
        plan = epoch(state)
        model.train()
        sums: dict[str, float] = defaultdict(float)  # a figure no batch reported reads 0
        out_of_time = False
        batch_number = 0
        bar = progress_bar(plan.batches, f"{label} epoch {state['epoch'] + 1}", progress and dist.main)
        for batch_number in range(plan.batches):
            if dist.agree(clock() > budget.deadline):
                out_of_time = True
                break
            step = plan.train_batch(batch_number)
            for name, value in step.sums.items():
                sums[name] += value
            bar.update()
            bar.set_postfix(**step.shown)
        bar.close()
        done_batches = max(1, batch_number + (0 if out_of_time else 1))
        if out_of_time and batch_number < plan.batches // 4:
            break  # too little of an epoch to be worth validating
        state["epoch"] += 1
        improved = False
        if dist.main:
            result = validate(sums, done_batches, state["epoch"])
            state["history"].append(result.record)
            improved = result.score < state["best"] - IMPROVEMENT
            if improved:
                state["best"], state["bad_epochs"] = result.score, 0
                keeper.keep(result.metrics)
            else:
                state["bad_epochs"] += 1
        if halve_lr_on_plateau and dist.agree(dist.main and not improved):
            for group in optimizer.param_groups:  # a plateau: smaller steps (on every rank)
                group["lr"] = max(group["lr"] * 0.5, LR_FLOOR)
        if dist.main:
            save_resume(resume_dir, stage, model, optimizer, state)
        if dist.agree(out_of_time or state["bad_epochs"] >= budget.patience):
            break
    dist.barrier()
    if dist.main:
        state["done"] = True
        save_resume(resume_dir, stage, model, optimizer, state)
    return keeper.restore()
