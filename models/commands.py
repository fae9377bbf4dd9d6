"""The `train` and `generate` subcommands, registered on the CLI's argparse subparsers.

Torch is imported only when a command runs, so `chiplofi --help` stays quick. `render_wav`
(midi_path, wav_path) is injected by the CLI, which keeps `models` free of `streamer`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from models.errors import ModelError
from models.train_options import TRAIN_DESCRIPTION, add_train_arguments

log = logging.getLogger(__name__)

RenderWav = Callable[[Path, Path], None]

GENERATE_DESCRIPTION = """\
Compose whole tracks (2-4 minutes each, intro / A / B / A' / outro) until at least
--minutes of music, and write one MIDI file per track (instruments lead, harmony, bass,
drums; tempo and key in the file) plus index.json. The same seed and options give
identical files."""


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `chiplofi generate`."""
    parser.add_argument("--minutes", type=float, default=10.0, help="at least this much music (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the MIDI files and index.json")
    parser.add_argument("--wav", action="store_true", help="also render every track to a WAV file beside its MIDI")
    parser.add_argument("--checkpoint", metavar="DIR", default=None,
                        help="checkpoint directory (default: the shipped models/checkpoints)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="0.05 (safe) .. 3 (adventurous) (default %(default)s)")
    parser.add_argument("--style", type=float, default=0.3, metavar="BLEND",
                        help="style blend, 0 = lo-fi .. 1 = NES (default %(default)s); above 0.5 some "
                             "tracks play without drums, as most of the NES training songs do: half of them at 1")
    parser.add_argument("--energy", type=float, default=0.5, help="0 (sparse) .. 1 (busy) (default %(default)s)")
    parser.add_argument("--key", default=None, help="fixed key, e.g. 'F minor' (default: chosen per track)")
    parser.add_argument("--tempo", type=float, default=None, metavar="BPM",
                        help="fixed tempo in BPM (default: chosen per track in 70..92)")
    return parser


def run_train(args: argparse.Namespace) -> int:
    """Handler of `train`."""
    from models.train import run_from_args

    return run_from_args(args)


def run_generate(args: argparse.Namespace, render_wav: RenderWav | None) -> int:
    """Handler of `generate`."""
    if args.wav and render_wav is None:
        raise ModelError("--wav is not available: no renderer was given to the generate command")
    from models.composer import Controls
    from models.generate import write_tracks

    controls = Controls(seed=args.seed, temperature=args.temperature, style_blend=args.style, key=args.key,
                        tempo_bpm=args.tempo, energy=args.energy)
    paths = write_tracks(args.checkpoint, args.minutes, args.seed, args.out, controls)
    for path in paths:
        if args.wav:
            wav_path = path.with_suffix(".wav")
            render_wav(path, wav_path)  # type: ignore[misc]
            log.info("rendered %s", wav_path)
    sys.stdout.write(generate_summary(Path(args.out), paths, args.wav))
    return 0


def generate_summary(out_dir: Path, paths: list[Path], wav: bool) -> str:
    """What `generate` prints: every file it wrote with the track's key, tempo and length, and
    "no drums" for a track without (from the index.json it wrote beside them), and how to listen."""
    tracks = {t["file"]: t for t in json.loads((out_dir / "index.json").read_text())["tracks"]}
    seconds = sum(t["seconds"] for t in tracks.values())
    lines = [f"wrote {len(paths)} track{'s' if len(paths) != 1 else ''} ({seconds / 60:.1f} min) to "
             f"{out_dir.resolve()}, listed in index.json:"]
    for path in paths:
        track = tracks[path.name]
        files = f"{path.name} + {path.with_suffix('.wav').name}" if wav else path.name
        drums = "" if track["drums"] else ", no drums"
        lines.append(f"  {files}: {track['key']}, {track['tempo_bpm']:.0f} BPM, {track['seconds']:.0f} s{drums}")
    if paths and not wav:
        lines.append(f"listen: chiplofi render {paths[0].resolve()} -o {paths[0].stem}.wav  (or generate with --wav)")
    return "\n".join(lines) + "\n"


def add_model_commands(subparsers: argparse._SubParsersAction, render_wav: RenderWav | None) -> None:
    """Register `train` and `generate`; each sets `func=handler(args) -> int`."""
    train = subparsers.add_parser("train", help="train the music models (VAE + LSTM) on MIDI folders",
                                  description=TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(train)
    train.set_defaults(func=run_train, log_level=logging.INFO)  # epoch lines while it works

    generate = subparsers.add_parser("generate", help="compose tracks into MIDI files (and WAV with --wav)",
                                     description=GENERATE_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generate_arguments(generate)
    generate.set_defaults(func=lambda args: run_generate(args, render_wav))
