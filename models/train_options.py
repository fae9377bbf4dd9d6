"""The options of `chiplofi train` (models.commands) and `python -m models.train`: both build
their parser from here, so models.train never imports the CLI module that runs it. Torch-free."""

from __future__ import annotations

import argparse

from models.config import TrainConfig
from models.finetune import FINE_TUNE_MINUTES, SHIPPED

TRAIN_DESCRIPTION = """\
Train the bar VAE, then the LSTM over its latents, on MIDI folders. Songs are moved to
C major / A minor, split by song (by game for NES) into training and validation, and
trained within a wall-clock budget with early stopping. The output directory receives
vae.safetensors/.json, lstm.safetensors/.json (usable with `generate --checkpoint DIR`),
loss_curves.png and resume/ (for --resume). At the end it prints the held-out figures beside
simple baselines, warns when a model does no better, and says how to play the result.

With a few dozen files of one's own, fine-tune the shipped models instead of training from
scratch: `chiplofi train --data MYFOLDER --out DIR --init-from` (a budget of 8 minutes; 40 files
took 95 s on 2 busy cores; the summary shows the figures before and after on MYFOLDER's held-out
files).

To train only a new LSTM over a VAE one already has (the shipped LSTM was made so, over the
shipped VAE): `chiplofi train --vae-from [DIR] --out NEWDIR` (the VAE's files are copied as they are).

More machines: torchrun --nproc_per_node=N -m models.train --out DIR [options]
(data-parallel, gloo backend, CPU)."""


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `chiplofi train` and `python -m models.train`."""
    defaults = TrainConfig()
    parser.add_argument("--data", nargs="+", metavar="DIR", default=None,
                        help="MIDI folders to train on (default: ../shared/data/lofi, nes, lakh-lofi, pop909 and "
                             "vgmidi); a folder named 'nes...' is read by channel, others by register and role")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory for the checkpoints and loss_curves.png")
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"wall-clock budget for both models, the LSTM's alone with --vae-from (default "
                             f"{defaults.minutes:g}, with --init-from "
                             f"{FINE_TUNE_MINUTES:g}; reading the data not counted)")
    parser.add_argument("--init-from", nargs="?", const=SHIPPED, default=None, metavar="DIR",
                        help="fine-tune: start from the models in checkpoint directory DIR (given alone: the "
                             "shipped models), with smaller learning rates and the architecture of DIR")
    parser.add_argument("--vae-from", nargs="?", const=SHIPPED, default=None, metavar="DIR",
                        help="keep the VAE of checkpoint directory DIR (given alone: the shipped one) as it is and "
                             "train only a new LSTM over its latents, with the whole budget (the shipped LSTM "
                             "was made so, see models/README.md)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help=f"epoch limit per model (default: VAE {defaults.max_epochs_vae}, "
                             f"LSTM {defaults.max_epochs_lstm})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--patience", type=int, default=defaults.patience, metavar="N",
                        help="stop a model after N epochs without validation improvement (default %(default)s)")
    parser.add_argument("--threads", type=int, default=defaults.threads, metavar="N",
                        help="torch threads per process (default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser
