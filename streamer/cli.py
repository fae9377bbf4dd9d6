"""`chiplofi` command line: one entry point, one subcommand per job.

Errors chiplofi raises on purpose (`ChiplofiError`) print as one line naming the file, key or
value, and exit non-zero; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# numpy's BLAS threads cost more than they give on chiplofi's small per-bar matrices (measured:
# 0.93 → 6.7 ms per composed bar on a busy 2-core machine). Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.commands import add_model_commands  # torch-free: torch loads only when a command runs
from models.evaluate import add_eval_command  # torch-free too
from streamer.errors import ChiplofiError, ConfigError

log = logging.getLogger("chiplofi")

CONFIG_EXAMPLE_HEADER = ("# chiplofi configuration: every key with its default and what it accepts.\n"
                         "# Regenerate with `chiplofi config example`.\n\n")
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _bounded(kind: type, what: str, low: float, high: float | None, *,
             low_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: `kind` within [low, high] (or above low), with a one-line message."""
    noun = "whole number" if kind is int else "number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a {noun}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high):
            accepted = f"above {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{what} must be {accepted}, got {value}")
        return value
    return parse


_seed = _bounded(int, "seed", 0, 2**32 - 1)
_swing = _bounded(float, "swing", 0.5, 0.75)  # 0.5 = straight


def _cmd_render(args: argparse.Namespace) -> int:
    from streamer.config import load_config
    from streamer.offline import render_midi_file

    config = load_config(args.config)
    seconds = render_midi_file(args.midi, args.output, config, seed=args.seed,
                               effects=not args.no_effects, swing=args.swing,
                               progress=not args.quiet)
    sys.stdout.write(f"wrote {args.output} ({seconds:.1f} s)\n")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streamer.config import load_config
    from streamer.offline import render_demo

    config = load_config(args.config)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    seconds = render_demo(args.output, config, bars=args.bars, seed=args.seed)
    sys.stdout.write(f"demo written: {args.output.resolve()} ({seconds:.1f} s of 8-bit lo-fi)\n")
    return 0


def _cmd_soundfont_build(args: argparse.Namespace) -> int:
    from soundfonts.build import build_soundfont

    path = build_soundfont(args.output)
    sys.stdout.write(f"wrote {path} ({path.stat().st_size} bytes)\n")
    return 0


_speed = _bounded(float, "speed", 0.0, 1000.0)  # 0 = unpaced
_seconds = _bounded(float, "seconds", 0.0, None, low_open=True)


def _cmd_stream(args: argparse.Namespace) -> int:
    from streamer.daemon import Daemon
    from streamer.stream_config import CliOverrides, load_stream_config

    overrides = CliOverrides(outputs=tuple(args.output) if args.output else None, status_addr=args.status_addr,
                             checkpoint=args.checkpoint, speed=args.speed, monitor=args.monitor, seed=args.seed)
    environ = dict(os.environ)
    config = load_stream_config(args.config, overrides, environ)  # file, then environment, then flags; checked
    return Daemon(config, config_path=args.config, overrides=overrides, environ=environ, duration=args.duration).run()


def _cmd_status(args: argparse.Namespace) -> int:
    from streamer.config import StatusSettings
    from streamer.status_view import run_status
    from streamer.stream_config import CliOverrides, load_stream_config

    addr = args.addr
    if addr is None:
        addr = (load_stream_config(args.config, CliOverrides(), os.environ).status.addr if args.config is not None
                else StatusSettings().addr)
    return run_status(addr, as_json=args.json, watch=args.watch)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from streamer.stream_config import CliOverrides, describe_config, load_stream_config

    config = load_stream_config(args.file, CliOverrides(), os.environ)
    lines = describe_config(config, os.environ)
    sys.stdout.write(f"{args.file}: ok\n" + "".join(f"  {line}\n" for line in lines))
    return 0


def _cmd_config_example(args: argparse.Namespace) -> int:
    from streamer.config import example_toml

    sys.stdout.write(CONFIG_EXAMPLE_HEADER + example_toml())
    return 0


def _render_wav_for_models(midi_path: Path, wav_path: Path) -> None:
    """Injected into `generate --wav` so the models package never imports the streamer."""
    from streamer.config import Config
    from streamer.offline import render_midi_file

    # Generated files are already on the 16-step grid: give them the stream's swing.
    config = Config()
    render_midi_file(midi_path, wav_path, config, swing=config.render.swing, progress=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chiplofi",
        description="A 24/7 generative 8-bit lo-fi radio: compose, render and stream NES-style music.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    render = commands.add_parser(
        "render", help="render a MIDI file with the 8-bit voices and lo-fi finish",
        description="Render any multi-track MIDI file with chiplofi's SoundFont: pitched parts go onto "
                    "the pulse and triangle voices by register and role, drums onto the noise kit, "
                    "then the lo-fi effects. Writes 16-bit stereo WAV.")
    render.add_argument("midi", type=Path, metavar="IN.mid", help="MIDI file to render")
    render.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.wav", help="WAV file to write")
    render.add_argument("--no-effects", action="store_true", help="dry FluidSynth output, no lo-fi chain")
    render.add_argument("--seed", type=_seed, default=0, help="seed of humanisation and crackle (default 0)")
    render.add_argument("--swing", type=_swing, default=None,
                        help="swing the 16th notes (0.5 straight .. 0.75); default: as written in the file")
    render.add_argument("--config", type=Path, help="TOML config ([render] and [effects] tables)")
    render.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    render.set_defaults(func=_cmd_render)

    demo = commands.add_parser("demo", help="render a short rule-based demo to a WAV file",
                               description="Render a short lo-fi demo through the whole sound chain "
                                           "(no model needed) and say where it is.")
    demo.add_argument("-o", "--output", type=Path, default=Path("out/demo.wav"), help="default: out/demo.wav")
    demo.add_argument("--bars", type=int, default=16, help="length in bars (default 16)")
    demo.add_argument("--seed", type=_seed, default=0, help="seed (default 0)")
    demo.add_argument("--config", type=Path, help="TOML config ([render] and [effects] tables)")
    demo.set_defaults(func=_cmd_demo)

    soundfont = commands.add_parser("soundfont", help="build chiplofi's 8-bit SoundFont",
                                    description="Synthesize the NES-style SoundFont from its waveforms.")
    soundfont_commands = soundfont.add_subparsers(dest="soundfont_command", metavar="ACTION")
    soundfont_commands.required = True
    build = soundfont_commands.add_parser(
        "build", help="write the SF2 file (byte for byte the shipped one)",
        description="Regenerate soundfonts/chiplofi.sf2 (or OUTPUT) from code; deterministic.")
    from soundfonts import SOUNDFONT_PATH

    build.add_argument("-o", "--output", type=Path, default=SOUNDFONT_PATH, help=f"default: {SOUNDFONT_PATH}")
    build.set_defaults(func=_cmd_soundfont_build)

    stream = commands.add_parser(
        "stream", help="run the 24/7 stream (RTMP with video, recordings, speakers, status page)",
        description="Compose, render and stream without end: YouTube-ready RTMP(S) with a video track, "
                    "local recordings, speakers, and a status page with a live player. With no outputs "
                    "and no stream key it runs locally (recording + status page). SIGHUP reloads the "
                    "checkpoint, SIGTERM stops within 5 s.")
    stream.add_argument("--config", type=Path, help="TOML config (see `chiplofi config check`)")
    stream.add_argument("--output", action="append", metavar="URL",
                        help="rtmp:// or rtmps:// URL, a file (.wav, or .flv/.mkv/.mp4/.ts with video), "
                             "'speakers' or 'null'; repeatable; replaces stream.outputs")
    stream.add_argument("--status-addr", metavar="HOST:PORT", help="status server address (default 127.0.0.1:8080)")
    stream.add_argument("--checkpoint", metavar="PATH", help="checkpoint directory, or 'rule-based'")
    stream.add_argument("--speed", type=_speed, metavar="K", help="clock at K x real time; 0 = unpaced")
    stream.add_argument("--monitor", action="store_true", help="also play on the speakers")
    stream.add_argument("--seed", type=_seed, help="a reproducible run: this seed, from track 0, the same "
                        "music every time (default: continue the radio kept in the state directory)")
    stream.add_argument("--duration", type=_seconds, metavar="SECONDS",
                        help="stop after this many seconds of audio (tests, benchmarks)")
    stream.set_defaults(func=_cmd_stream, log_level=logging.INFO)

    status = commands.add_parser(
        "status", help="show what a running stream is doing (track, model, buffer, outputs, counters)",
        description="Ask a running `chiplofi stream` (its status server) what it is playing: track, key, "
                    "tempo, section, model, buffer, outputs, schedule and counters. Ctrl-C ends --watch.")
    status.add_argument("--addr", metavar="HOST:PORT",
                        help="the stream's status address (default: --config's [status] addr, else 127.0.0.1:8080)")
    status.add_argument("--config", type=Path, help="read the status address from this config")
    status.add_argument("--json", action="store_true", help="print /status as JSON (with --watch: one line each time)")
    status.add_argument("--watch", type=_seconds, nargs="?", const=2.0, default=None, metavar="SECONDS",
                        help="redraw every SECONDS (default 2) until Ctrl-C")
    status.set_defaults(func=_cmd_status)

    config_cmd = commands.add_parser("config", help="check a config file or print an example",
                                     description="Validate a TOML config (every key, plus environment "
                                                 "overrides CHIPLOFI_<TABLE>__<KEY>) and say what it means.")
    config_commands = config_cmd.add_subparsers(dest="config_command", metavar="ACTION")
    config_commands.required = True
    check = config_commands.add_parser("check", help="validate FILE; exit 2 naming every bad key, one a line")
    check.add_argument("file", type=Path, metavar="FILE")
    check.set_defaults(func=_cmd_config_check)
    example = config_commands.add_parser("example", help="print every key with its default and meaning",
                                         description="Print a complete, commented TOML config: every "
                                                     "key, its default and what it accepts.")
    example.set_defaults(func=_cmd_config_example)

    add_model_commands(commands, render_wav=_render_wav_for_models)
    add_eval_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Commands talk through their output and one-line errors; a long-running command sets its
    # own `log_level` default (subparser.set_defaults) to keep an INFO log.
    level = logging.DEBUG if args.verbose else getattr(args, "log_level", logging.WARNING)
    logging.basicConfig(level=level,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:  # one line per bad key
        sys.stderr.write("".join(f"chiplofi: config error: {line}\n" for line in str(exc).splitlines() or [""]))
        return EXIT_USAGE
    except ChiplofiError as exc:
        sys.stderr.write(f"chiplofi: error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("chiplofi: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
