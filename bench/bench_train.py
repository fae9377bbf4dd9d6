"""Training the shipped models from scratch: the real training command, the shipped settings.

Runs `python -m models.train --out TMP --minutes B` (what `chiplofi train` runs; the shipped
VAE is its output with the defaults and the budget B its run recorded, 80 minutes; the shipped
LSTM came from a second, 3.5-minute `--vae-from` run over that VAE, see models/README.md) with
an empty data cache, so reading and parsing the MIDI counts as it does the first time. The
training settings are checked to be the shipped runs' (models/checkpoints/vae_train_config.json
for the VAE and training, train_config.json for the LSTM and its style balance) before anything
starts.

Every log line of the run is stamped on arrival with the wall time and the CPU time (user +
system, from /proc, the process and its data-reading workers) since the start, which splits
the run into: start-up and reading the data, each VAE epoch (training + validation), then
encoding the latents + the first LSTM epoch, each further LSTM epoch.

Default (`make bench`, a few minutes): `--epochs 1` (one epoch of each model). The full
time is then EXTRAPOLATED, and labelled so: reading + the shipped run's epoch counts (the
VAE's card: its best epoch, still improving when its 56-minute share of the budget ran out;
the LSTM: its best epoch + `patience`) at this run's speed per epoch. Both in wall time on
this (shared) machine and in CPU time / 2, i.e. on two otherwise idle cores. On a loaded
machine the CPU figure is an upper estimate too: torch's two threads wait on each other at
every operation, so the same work costs more CPU (less since `models` makes them wait
passively, OMP_WAIT_POLICY=PASSIVE, instead of spinning while the other is descheduled).
The command's own budget caps the training at B minutes whatever the speed (a slower
machine trains fewer epochs, and the models come out worse: see `trained` against `shipped`).
--full: the whole command from scratch, as the shipped VAE was made; the measured
wall and CPU time, the epochs it reached and its held-out figures beside the shipped cards'.
Goal (issue 12): ≤ 90 min on 2 cores.
Run: .venv/bin/python bench/bench_train.py [--epochs N] [--full] [--keep DIR]
Writes bench/results/train.json (default) or bench/results/train_full.json (--full).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_daemon import ROOT, machine_description  # noqa: E402
from models.checkpoint import read_info, shipped_directory  # noqa: E402
from models.config import LSTMConfig, TrainConfig, VAEConfig  # noqa: E402
from testkit.procfs import cpu_seconds  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_MINUTES = 90.0
CORES = 2  # the goal's machine
READ_DONE = re.compile(r"training on (\d+) songs \((\d+) bars\)")
VAE_START = re.compile(r"VAE: (\d+) distinct training bars")
VAE_EPOCH = re.compile(r"VAE epoch (\d+): .*accuracy ([0-9.]+)")
LSTM_EPOCH = re.compile(r"LSTM epoch (\d+): ")
TRAINED = re.compile(r"trained in ([0-9.]+) min")


@dataclasses.dataclass
class Stamp:
    wall: float  # seconds since the process started
    cpu: float  # CPU seconds of the process (and its children) by then
    line: str


LSTM_ONLY_SETTINGS = ("lstm_style_floor", "lstm_style_repeats")  # added with the LSTM's own run


def check_shipped_settings() -> dict:
    """The settings the command trains with are the shipped runs': else the figure means nothing.

    The shipped VAE comes from a whole run (vae_train_config.json: its training settings, VAE
    architecture and budget), the shipped LSTM from a second run over that VAE (train_config.json,
    `chiplofi train --vae-from`: the LSTM's architecture and its style balance). Returns the VAE
    run's record with the LSTM run's parts in it."""
    vae_run = json.loads((shipped_directory() / "vae_train_config.json").read_text())
    lstm_run = json.loads((shipped_directory() / "train_config.json").read_text())
    train = dataclasses.asdict(TrainConfig())
    expected = {"train": {key: (lstm_run if key in LSTM_ONLY_SETTINGS else vae_run)["train"].get(key)
                          for key in train if key != "minutes"},
                "vae": vae_run["vae"], "lstm": lstm_run["lstm"]}
    ours = {"train": {key: value for key, value in train.items() if key != "minutes"},
            "vae": dataclasses.asdict(VAEConfig()), "lstm": dataclasses.asdict(LSTMConfig())}
    differing = {f"{part}.{key}": (value, expected[part].get(key))
                 for part in ours for key, value in ours[part].items() if expected[part].get(key) != value}
    if differing:
        raise SystemExit("the training defaults differ from models/checkpoints/vae_train_config.json and "
                         f"train_config.json (ours, shipped): {differing}")
    return {**vae_run, "lstm": lstm_run["lstm"], "lstm_run": lstm_run}


def run_training(out: Path, cache: Path, epochs: int | None, minutes: float,
                 log_path: Path) -> tuple[list[Stamp], float, int]:
    """Run the command; (stamped log lines, CPU seconds of the whole process tree, exit code)."""
    command = [sys.executable, "-m", "models.train", "--out", str(out), "--no-progress", "--minutes", f"{minutes:g}"]
    command += ["--epochs", str(epochs)] if epochs is not None else []
    # An empty cache: the MIDI is read and parsed as the first time. OPENBLAS as `chiplofi` sets it.
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    before = os.times()
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    stamps: list[Stamp] = []
    assert process.stdout is not None
    with open(log_path, "w") as log:
        for line in process.stdout:
            stamps.append(Stamp(time.monotonic() - started, cpu_seconds(process.pid, include_reaped=True),
                                line.rstrip()))
            log.write(f"{stamps[-1].wall:9.2f} {stamps[-1].cpu:9.2f} {line}")
            log.flush()
    code = process.wait()
    after = os.times()
    # All CPU of the finished process tree (data-reading workers included), as the kernel counted it.
    total_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    stamps.append(Stamp(time.monotonic() - started, total_cpu, "(exit)"))
    return stamps, total_cpu, code


def first(stamps: list[Stamp], pattern: re.Pattern) -> Stamp:
    for stamp in stamps:
        if pattern.search(stamp.line):
            return stamp
    raise SystemExit(f"the training log has no line matching {pattern.pattern!r}")


def every(stamps: list[Stamp], pattern: re.Pattern) -> list[Stamp]:
    return [stamp for stamp in stamps if pattern.search(stamp.line)]


def phases(stamps: list[Stamp]) -> dict:
    """Wall and CPU seconds of each phase, from the stamped log lines."""
    read = first(stamps, READ_DONE)
    vae_start = first(stamps, VAE_START)
    vae_epochs = every(stamps, VAE_EPOCH)
    lstm_epochs = every(stamps, LSTM_EPOCH)
    end = stamps[-1]
    if not vae_epochs or not lstm_epochs:
        raise SystemExit("the training log has no finished VAE or LSTM epoch")

    def spans(marks: list[Stamp], begin: Stamp) -> list[dict]:
        result, previous = [], begin
        for mark in marks:
            result.append({"wall": round(mark.wall - previous.wall, 2), "cpu": round(mark.cpu - previous.cpu, 2)})
            previous = mark
        return result

    vae = spans(vae_epochs, vae_start)
    lstm = spans(lstm_epochs, vae_epochs[-1])  # the first holds loading the best VAE + encoding the latents
    match = READ_DONE.search(read.line)
    assert match is not None
    return {
        "startup_and_reading": {"wall": round(read.wall, 2), "cpu": round(read.cpu, 2)},
        "songs": int(match.group(1)), "bars": int(match.group(2)),
        "preparing_tensors": {"wall": round(vae_start.wall - read.wall, 2), "cpu": round(vae_start.cpu - read.cpu, 2)},
        "vae_epochs": vae,
        "vae_accuracy_by_epoch": [float(VAE_EPOCH.search(s.line).group(2)) for s in vae_epochs],  # type: ignore[union-attr]
        "encode_and_lstm_epochs": lstm,
        "after_last_epoch": {"wall": round(end.wall - lstm_epochs[-1].wall, 2)},
        "total": {"wall": round(end.wall, 2), "cpu": round(end.cpu, 2)},
    }


def shipped_epochs(recorded: dict) -> tuple[int, int]:
    """(VAE epochs, LSTM epochs) of the shipped run, from its cards and settings."""
    vae = read_info(shipped_directory(), "vae").metrics["epoch"]
    lstm_best = read_info(shipped_directory(), "lstm").metrics["epoch"]
    train = recorded["train"]
    return int(vae), int(min(train["max_epochs_lstm"], lstm_best + train["patience"]))


def extrapolate(measured: dict, vae_epochs: int, lstm_epochs: int) -> dict:
    """The shipped run's epochs at this run's speed (wall here; CPU / 2 = two idle cores)."""
    result = {}
    for kind in ("wall", "cpu"):
        per_vae = sorted(e[kind] for e in measured["vae_epochs"])[len(measured["vae_epochs"]) // 2]
        lstm = measured["encode_and_lstm_epochs"]
        first_lstm = lstm[0][kind]  # loading the best VAE + encoding every bar + the first epoch
        per_lstm = (sorted(e[kind] for e in lstm[1:])[len(lstm[1:]) // 2] if len(lstm) > 1 else first_lstm)
        seconds = (measured["startup_and_reading"][kind] + measured["preparing_tensors"][kind]
                   + vae_epochs * per_vae + first_lstm + (lstm_epochs - 1) * per_lstm)
        result[kind] = {"vae_epoch_seconds": round(per_vae, 1), "lstm_epoch_seconds": round(per_lstm, 1),
                        "minutes": round(seconds / 60.0 / (CORES if kind == "cpu" else 1), 1)}
    return result


class LoadSampler:
    """The 1-minute load average every few seconds while the run lasts."""

    def __init__(self, every_seconds: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_seconds,), daemon=True)
        self._thread.start()

    def _run(self, every_seconds: float) -> None:
        while not self._stop.wait(every_seconds if self.samples else 0.0):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        samples = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(samples) / len(samples), 2), "max": round(max(samples), 2)}


def held_out(directory: Path) -> dict:
    vae, lstm = read_info(directory, "vae"), read_info(directory, "lstm")
    return {"vae_model_id": vae.model_id, "lstm_model_id": lstm.model_id, "vae_best_epoch": vae.metrics["epoch"],
            "vae_val_accuracy": round(vae.metrics["val_accuracy"], 4), "lstm_best_epoch": lstm.metrics["epoch"],
            "lstm_val_chord_nll": round(lstm.metrics["val_chord_nll"], 3),
            "lstm_val_latent_nll": round(lstm.metrics["val_latent_nll"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each model in the default run (default 1)")
    parser.add_argument("--full", action="store_true",
                        help="the whole command as the shipped VAE's run had it (its recorded budget: about an "
                             "hour); the shipped LSTM then came from a 3.5-minute --vae-from run")
    parser.add_argument("--keep", type=Path, default=None, help="keep the trained checkpoints and the log in DIR")
    parser.add_argument("--json", type=Path, default=None,
                        help="result file (default bench/results/train.json, or train_full.json with --full)")
    args = parser.parse_args()
    recorded = check_shipped_settings()
    budget = float(recorded["train"]["minutes"])  # the shipped VAE run's budget
    vae_shipped, lstm_shipped = shipped_epochs(recorded)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        out = args.keep or tmp / "run"
        log_path = (args.keep or tmp) / "train.log"
        out.mkdir(parents=True, exist_ok=True)
        load = LoadSampler()
        machine = machine_description()
        stamps, total_cpu, code = run_training(out, tmp / "cache", None if args.full else args.epochs, budget,
                                               log_path)
        load_during = load.stop()
        if code != 0:
            print("\n".join(s.line for s in stamps[-30:]), file=sys.stderr)
            return 1
        measured = phases(stamps)
        trained = held_out(out)
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    wall_minutes = measured["total"]["wall"] / 60.0
    result = {
        "figure": "training the shipped models from scratch (VAE + LSTM, shipped settings, empty data cache)",
        "command": f"python -m models.train --out DIR --minutes {budget:g}"
                   + ("" if args.full else f" --epochs {args.epochs}"),
        "machine": machine, "load_during_run": load_during,
        # OpenMP's waiting policy decides how torch's threads behave on a busy machine; the training
        # process gets PASSIVE from models/__init__.py unless it was set here.
        "environment": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE (models' default)"),
                        **{name: os.environ.get(name, "") for name in ("GOMP_SPINCOUNT", "OMP_NUM_THREADS")}},
        "measured": {"wall_minutes": round(wall_minutes, 2), "cpu_minutes": round(total_cpu / 60.0, 2),
                     "cpu_minutes_per_core_of_2": round(total_cpu / 60.0 / CORES, 2), **measured},
        "trained": trained,
        "shipped": {**held_out(shipped_directory()), "epochs_run": {"vae": vae_shipped, "lstm": lstm_shipped},
                    "training_time": "not recorded in the checkpoint cards; models/README.md: the VAE's run "
                                     "62.0 min, the LSTM's own run (--vae-from) 3.5 min"},
        "goal_minutes": GOAL_MINUTES,
    }
    if not args.full:
        result["extrapolated_full_run"] = {
            "what": f"EXTRAPOLATED, not measured: reading + {vae_shipped} VAE epochs + {lstm_shipped} LSTM epochs "
                    f"(the shipped runs') at this run's median epoch time; the command's {budget:g}-minute budget "
                    "caps the training part whatever the speed",
            **extrapolate(measured, vae_shipped, lstm_shipped)}
    print(f"training from scratch ({result['command']}), load average {load_during['mean']:.1f} "
          f"(max {load_during['max']:.1f}) on {machine['cores']} cores")
    print(f"{'phase':<36}{'wall s':>9}{'CPU s':>9}")
    print(f"{'start-up + reading the MIDI':<36}{measured['startup_and_reading']['wall']:>9.1f}"
          f"{measured['startup_and_reading']['cpu']:>9.1f}")
    print(f"{'tensors':<36}{measured['preparing_tensors']['wall']:>9.1f}{measured['preparing_tensors']['cpu']:>9.1f}")
    for number, epoch in enumerate(measured["vae_epochs"], 1):
        print(f"{'VAE epoch ' + str(number):<36}{epoch['wall']:>9.1f}{epoch['cpu']:>9.1f}")
    for number, epoch in enumerate(measured["encode_and_lstm_epochs"], 1):
        label = "encode latents + LSTM epoch 1" if number == 1 else f"LSTM epoch {number}"
        print(f"{label:<36}{epoch['wall']:>9.1f}{epoch['cpu']:>9.1f}")
    print(f"{'total':<36}{measured['total']['wall']:>9.1f}{total_cpu:>9.1f}")
    print(f"trained: VAE accuracy {trained['vae_val_accuracy']} (epoch {trained['vae_best_epoch']}), LSTM chord NLL "
          f"{trained['lstm_val_chord_nll']}; shipped: {result['shipped']['vae_val_accuracy']}, "
          f"{result['shipped']['lstm_val_chord_nll']}")
    if args.full:
        print(f"measured: {wall_minutes:.1f} min wall, {total_cpu / 60:.1f} CPU min (goal ≤ {GOAL_MINUTES:g} min)")
    else:
        ext = result["extrapolated_full_run"]
        print(f"EXTRAPOLATED full run ({vae_shipped} VAE + {lstm_shipped} LSTM epochs): {ext['wall']['minutes']} min "
              f"wall at this load, {ext['cpu']['minutes']} min from CPU time / 2 (two idle cores; an upper "
              f"estimate under load); "
              f"goal ≤ {GOAL_MINUTES:g} min; `--full` measures it")
    path = args.json or RESULTS / ("train_full.json" if args.full else "train.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    figure = wall_minutes if args.full else result["extrapolated_full_run"]["cpu"]["minutes"]
    return 0 if figure <= GOAL_MINUTES else 2


if __name__ == "__main__":
    sys.exit(main())
