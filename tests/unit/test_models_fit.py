"""models.fit: the one training loop: early stop, plateau halving, restore-best, deadline, resume."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from models.fit import LR_FLOOR, Budget, Epoch, Step, Validation, fit, saved_state

BATCHES = 8


class MemoryKeeper:
    """Keeps the best weights in memory (the training code keeps them as a checkpoint)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.kept: list[dict] = []
        self.best: tuple[dict, dict] | None = None

    def keep(self, metrics: dict) -> None:
        self.kept.append(metrics)
        self.best = (copy.deepcopy(self.model.state_dict()), metrics)

    def restore(self) -> dict:
        assert self.best is not None
        self.model.load_state_dict(self.best[0])
        return self.best[1]


class Run:
    """A linear model fitted to y = 2x + noise (the noise from torch's global generator, so a
    resumed run matches an uninterrupted one only if the random state is saved), validated by a
    scripted score per epoch."""

    def __init__(self, tmp_path: Path, scores: list[float], *, lr: float = 0.05, stop_at: tuple[int, int] | None = None,
                 clock_ticks: dict[tuple[int, int], float] | None = None) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.keeper = MemoryKeeper(self.model)
        self.scores = scores
        self.stop_at = stop_at  # (epoch, batch) where training is interrupted
        self.clock_ticks = clock_ticks or {}  # (epoch, batch) → the clock's time from that batch on
        self.now = 0.0
        self.resume_dir = tmp_path / "resume"
        self.trained: list[tuple[int, int]] = []
        self.validated: list[dict] = []

    def clock(self) -> float:
        return self.now

    def epoch(self, state: dict) -> Epoch:
        number = state["epoch"]

        def train_batch(i: int) -> Step:
            if (number, i) == self.stop_at:
                raise KeyboardInterrupt
            x = torch.linspace(-1, 1, 4)[:, None]
            y = 2 * x + 0.1 * torch.randn(4, 1)
            loss = ((self.model(x) - y) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.trained.append((number, i))
            self.now = self.clock_ticks.get((number, i + 1), self.now)  # the time the next batch sees
            value = float(loss.detach())
            return Step({"loss": value}, {"loss": f"{value:.3f}"})

        return Epoch(BATCHES, train_batch)

    def validate(self, sums: dict[str, float], batches: int, epoch: int) -> Validation:
        self.validated.append({"epoch": epoch, "batches": batches, "loss": sums["loss"],
                               "lr": self.optimizer.param_groups[0]["lr"],
                               "weights": copy.deepcopy(self.model.state_dict())})
        score = self.scores[epoch - 1]
        return Validation(score, {"epoch": epoch, "train_loss": sums["loss"] / batches, "val_loss": score},
                          {"epoch": epoch, "val_loss": score})

    def fit(self, max_epochs: int, patience: int = 10, *, resume: bool = False, halve: bool = False,
            deadline: float = float("inf")) -> dict:
        return fit("vae", self.model, self.optimizer, epoch=self.epoch, validate=self.validate, keeper=self.keeper,
                   budget=Budget(max_epochs, patience, deadline), resume_dir=self.resume_dir, resume=resume,
                   halve_lr_on_plateau=halve, clock=self.clock)


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_stops_after_patience_epochs_without_gain_and_restores_the_best(tmp_path):
    # Epoch 4 equals the best within the margin (1e-4): not a gain.
    run = Run(tmp_path, [3.0, 2.0, 2.5, 2.00005, 2.1, 1.0, 0.5])
    metrics = run.fit(max_epochs=7, patience=3)
    assert [v["epoch"] for v in run.validated] == [1, 2, 3, 4, 5]  # stopped: 3 epochs without gain
    assert [m["epoch"] for m in run.keeper.kept] == [1, 2]
    assert metrics == {"epoch": 2, "val_loss": 2.0}
    assert _same_weights(run.model.state_dict(), run.validated[1]["weights"])  # epoch 2's, not the last
    assert not _same_weights(run.model.state_dict(), run.validated[-1]["weights"])
    state = saved_state(run.resume_dir, "vae")
    assert state["done"] and state["epoch"] == 5 and state["bad_epochs"] == 3 and state["best"] == 2.0
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4, 5]
    assert all(v["batches"] == BATCHES for v in run.validated)


def test_a_plateau_halves_the_learning_rate_down_to_a_floor_only_when_asked(tmp_path):
    scores = [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    halving = Run(tmp_path / "halving", scores, lr=8e-5)
    halving.fit(max_epochs=8, halve=True)
    # (the rate each epoch trained at) epochs 2 and 3 follow no gain, 4 gained, 5.. follow none.
    assert [v["lr"] for v in halving.validated] == pytest.approx([8e-5, 8e-5, 4e-5, 2e-5, 2e-5, 1e-5, LR_FLOOR,
                                                                   LR_FLOOR])
    constant = Run(tmp_path / "constant", scores, lr=8e-5)
    constant.fit(max_epochs=8)
    assert {v["lr"] for v in constant.validated} == {8e-5}


def test_an_interrupted_run_resumes_at_its_last_epoch_and_ends_as_an_uninterrupted_one(tmp_path, caplog):
    scores = [3.0, 2.0, 1.0, 0.5]
    whole = Run(tmp_path / "whole", scores)
    whole.fit(max_epochs=4)

    interrupted = Run(tmp_path / "parts", scores, stop_at=(2, 3))  # in the third epoch
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(max_epochs=4)
    assert saved_state(interrupted.resume_dir, "vae")["epoch"] == 2
    resumed = Run(tmp_path / "parts", scores)  # a new process: fresh model, optimiser and random state
    caplog.set_level(logging.INFO, logger="models.fit")
    metrics = resumed.fit(max_epochs=4, resume=True)
    assert "resuming VAE training at epoch 2" in caplog.text
    assert resumed.trained[0] == (2, 0)  # the interrupted epoch again, from its start
    assert metrics == {"epoch": 4, "val_loss": 0.5}
    assert _same_weights(resumed.model.state_dict(), whole.model.state_dict())
    assert [v["loss"] for v in interrupted.validated + resumed.validated] == [v["loss"] for v in whole.validated]
    assert saved_state(resumed.resume_dir, "vae")["history"] == saved_state(whole.resume_dir, "vae")["history"]

    # A finished stage, resumed, trains no more: it only brings back the best model.
    again = Run(tmp_path / "parts", scores)
    again.keeper.best = resumed.keeper.best
    assert again.fit(max_epochs=10, resume=True) == {"epoch": 4, "val_loss": 0.5} and not again.trained


def test_the_deadline_ends_training_and_a_short_last_epoch_is_not_validated(tmp_path):
    scores = [3.0, 2.0, 1.0]
    # The clock passes the deadline after 5 of epoch 2's 8 batches: those 5 are validated.
    late = Run(tmp_path / "late", scores, clock_ticks={(1, 5): 10.0})
    late.fit(max_epochs=3, deadline=5.0)
    assert [(v["epoch"], v["batches"]) for v in late.validated] == [(1, BATCHES), (2, 5)]
    assert late.trained[-1] == (1, 4)
    # ... after 1 batch (under a quarter of the epoch): epoch 2 is dropped, epoch 1's model kept.
    early = Run(tmp_path / "early", scores, clock_ticks={(1, 1): 10.0})
    metrics = early.fit(max_epochs=3, deadline=5.0)
    assert [v["epoch"] for v in early.validated] == [1] and metrics == {"epoch": 1, "val_loss": 3.0}
    assert saved_state(early.resume_dir, "vae")["epoch"] == 1
