"""SIGHUP → new model playing, and the samples lost in the swap, on the real `chiplofi stream`.

The daemon runs with a config file whose `stream.checkpoint` names checkpoint A (the shipped
one) and a WAV file output, in real time (or `--speed K`). A second full-size checkpoint B is
the shipped one with one VAE weight nudged by 1e-6 (same size and load cost, another model id).
For each swap the config is rewritten to name the other checkpoint and the daemon gets SIGHUP
(a reload reads the config again, see streamer/reload.py: `Reloader._once`); /status is polled
every 20 ms. Per swap:
  loaded      wall time from SIGHUP to /status `checkpoint.id` naming the new model (the
              reload validated it and the composer thread swapped it in)
  playing     from SIGHUP to the first bar composed by the new model reaching the outputs
              (/status `now_playing.composer_id`): in bars (bar starts counted by the
              daemon's `bars_played`, 1 = the next bar boundary), in seconds of audio, and wall
  lost        growth of the counters that mean missing or replaced audio across the swap:
              `underruns` (fallback bed played), `pcm_underruns` (silence padded), the WAV
              sink's `frames_dropped`
Continuity of the whole run: the daemon stops itself after `--duration` seconds of audio (its
clock advances in blocks of 1024 frames), so the WAV must hold exactly the frames the clock
advanced; and it must hold no run of digital silence longer than `SILENCE_FRAMES` (the
effects' tape hiss never rests at 0; padding is exact zeros).
Each `stream.swap_at` mode runs its own daemon: `bar` (the new model from the next bar),
`section` (the default: from the next section boundary), `track` (from the next track). The
wait per mode is the music heard between SIGHUP and the new model, in bars and seconds; the
new model's first bar must be bar 0 of its own track (it begins a new track in a related key).
Goals (issues 7, 15): with `bar` ≤ 1 bar from SIGHUP to the new model playing; with `section`
≤ a section (8 bars) plus one; 0 samples lost in every mode.
Run: .venv/bin/python bench/bench_swap.py [--modes bar,section,track] [--swaps 3] [--speed 1]
     [--buffer-seconds S]
(`--buffer-seconds` overrides stream.buffer_seconds, default the config's: 30 s.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench_daemon import ROOT, get_status, machine_description  # noqa: E402
from models.checkpoint import read_info, shipped_directory  # noqa: E402
from streamer.config import Config  # noqa: E402
from testkit.waiting import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_BARS = {"bar": 1, "section": 8 + 1, "track": None}  # None: reported, no goal (a track is 2–4 min)
GOAL_LOST = 0
MODES = ("bar", "section", "track")
LONGEST_WAIT_SECONDS = {"bar": 3.5, "section": 8 * 3.5, "track": 250.0}  # bars of at most 3.5 s (70 BPM)
BLOCK_FRAMES = 1024  # the daemon's clock step (streamer.audio_thread.BLOCK_FRAMES)
POLL_SECONDS = 0.02
SETTLE_BARS = 2  # bars of the new model heard before the next swap
# ... plus 0..MAX_EXTRA_BARS more (seeded), so that SIGHUP lands anywhere in a section, not
# always two bars into the new model's four-bar intro.
MAX_EXTRA_BARS = 8
SILENCE_FRAMES = 64  # a longer run of exact zeros in the recording is a gap


def write_second_checkpoint(directory: Path) -> Path:
    """The shipped checkpoint with one VAE weight moved by 1e-6: same size, another model id."""
    import torch

    from models.checkpoint import load_models, save_checkpoint

    vae, lstm, cards = load_models(shipped_directory())
    with torch.no_grad():
        next(vae.parameters()).view(-1)[0] += 1e-6
    vae_card = save_checkpoint(directory, "vae", vae, cards["vae"].data_hash, cards["vae"].metrics)
    save_checkpoint(directory, "lstm", lstm, cards["lstm"].data_hash,
                    {**cards["lstm"].metrics, "vae_model_id": vae_card.model_id})
    return directory


def composer_id(directory: Path) -> str:
    return f"{read_info(directory, 'vae').model_id}+{read_info(directory, 'lstm').model_id}"


def write_config(path: Path, checkpoint: Path) -> None:
    """Rewritten whole and renamed: the reload never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'[stream]\ncheckpoint = "{checkpoint}"\n')
    os.replace(tmp, path)


def wait_status(port: int, predicate, timeout: float, process: subprocess.Popen) -> dict:
    """Poll /status until `predicate(status)`; the daemon dying or the deadline passing is fatal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {process.returncode}")
        try:
            status = get_status(port)
        except OSError:
            status = None
        if status is not None and predicate(status):
            return status
        time.sleep(POLL_SECONDS)
    raise RuntimeError("timed out waiting on /status")


def loss_counters(status: dict, wav_name: str) -> dict:
    sink = next(s for s in status["sinks"] if s["name"] == wav_name)
    return {"underruns": status["counters"]["underruns"], "pcm_underruns": status["counters"]["pcm_underruns"],
            "fallback_bars": status["counters"]["fallback_bars"], "wav_frames_dropped": sink["frames_dropped"]}


def bar_seconds(status: dict) -> float:
    return 4 * 60.0 / status["now_playing"]["tempo_bpm"]


def one_swap(process: subprocess.Popen, port: int, config: Path, target: Path, target_id: str,
             wav_name: str, timeout: float, settle_bars: int) -> dict:
    write_config(config, target)
    before = get_status(port)
    process.send_signal(signal.SIGHUP)
    sent = time.monotonic()
    loaded_at = None
    while True:
        if time.monotonic() - sent > timeout:
            raise RuntimeError(f"{target_id} was not playing {timeout:.0f} s after SIGHUP")
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {process.returncode}")
        status = get_status(port)
        now = time.monotonic()
        if status["checkpoint"]["last_reload_error"]:
            raise RuntimeError(f"reload failed: {status['checkpoint']['last_reload_error']}")
        if loaded_at is None and status["checkpoint"]["id"] == target_id:
            loaded_at = now
        if status["now_playing"]["composer_id"] == target_id:
            playing = status
            playing_at = now
            break
        time.sleep(POLL_SECONDS)
    assert loaded_at is not None  # the composer swaps before its first bar can play
    # Bar starts since the signal: 1 = the new model's bar was the next one to start.
    bars = playing["counters"]["bars_played"] - before["counters"]["bars_played"]
    audio = playing["clock"]["position_seconds"] - before["clock"]["position_seconds"]
    settle = playing["clock"]["position_seconds"] + settle_bars * bar_seconds(playing)
    after = wait_status(port, lambda s: s["clock"]["position_seconds"] >= settle, timeout, process)
    lost_before, lost_after = loss_counters(before, wav_name), loss_counters(after, wav_name)
    return {"to": target_id, "loaded_wall_seconds": round(loaded_at - sent, 3),
            "first_bar": {k: playing["now_playing"][k] for k in ("track_id", "bar", "section", "key")},
            "playing_wall_seconds": round(playing_at - sent, 3), "playing_bars": bars,
            "playing_audio_seconds": round(audio, 3), "bar_seconds": round(bar_seconds(playing), 3),
            "buffer_ahead_at_sighup_seconds": before["buffer"]["ahead_seconds"],
            "lost": {k: lost_after[k] - lost_before[k] for k in lost_before},
            "at_audio_seconds": round(before["clock"]["position_seconds"], 3)}


def read_wav(path: Path) -> np.ndarray:
    """(frames, 2) int16 of the daemon's 16-bit stereo WAV (one segment: the run is short)."""
    import wave

    with wave.open(str(path), "rb") as handle:
        assert handle.getnchannels() == 2 and handle.getsampwidth() == 2
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").reshape(-1, 2)


def longest_silence(frames: np.ndarray) -> tuple[int, int]:
    """(length, first frame) of the longest run of frames that are 0 on both channels."""
    silent = np.concatenate([[False], (frames == 0).all(axis=1), [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    if len(edges) == 0:
        return 0, -1
    starts, ends = edges[0::2], edges[1::2]
    longest = int(np.argmax(ends - starts))
    return int(ends[longest] - starts[longest]), int(starts[longest])


def run_mode(mode: str, args: argparse.Namespace, stream, sample_rate: int, checkpoints: list[Path],
             ids: list[str], tmp: Path) -> dict:
    """One daemon with `stream.swap_at = mode`, swapped --swaps times (or more): its figures."""
    config = tmp / f"chiplofi-{mode}.toml"
    write_config(config, checkpoints[0])
    wav = tmp / f"swap-{mode}.wav"
    port = free_port()
    # A swap takes at most the ring's depth of audio plus the wait for the boundary, the loading
    # (wall time × speed) and the settling bars; the run has room for --swaps of them after the
    # first ~20 s, and whatever the swaps leave is used for more.
    per_swap = (stream.buffer_seconds + LONGEST_WAIT_SECONDS[mode] + 8.0 * args.speed
                + (SETTLE_BARS + MAX_EXTRA_BARS + 2) * 3.5)
    rng = random.Random(f"bench_swap {mode}")
    duration = 20.0 + args.swaps * per_swap
    env = {**os.environ, "CHIPLOFI_STREAM__STATE_DIR": str(tmp / f"state-{mode}"),
           "CHIPLOFI_STREAM__BUFFER_SECONDS": str(stream.buffer_seconds),
           "CHIPLOFI_STREAM__READY_SECONDS": str(stream.ready_seconds), "CHIPLOFI_STREAM__SWAP_AT": mode}
    command = [sys.executable, "-m", "streamer.cli", "stream", "--seed", "0", "--config", str(config), "--output",
               str(wav), "--status-addr", f"127.0.0.1:{port}", "--speed", f"{args.speed:g}", "--duration",
               f"{duration:g}"]
    log_path = tmp / f"daemon-{mode}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    swaps = []
    try:
        wav_name = f"file:{wav}"
        timeout = (per_swap + 30.0) / args.speed
        first = wait_status(process=process, port=port, timeout=120.0,
                            predicate=lambda s: s["now_playing"]["composer_id"] == ids[0])
        start_at = first["clock"]["position_seconds"] + SETTLE_BARS * bar_seconds(first)
        wait_status(port, lambda s: s["clock"]["position_seconds"] >= start_at, timeout, process)
        # At least --swaps swaps; more while the audio left holds one more (nothing idles).
        while True:
            position = get_status(port)["clock"]["position_seconds"]
            if len(swaps) >= args.swaps and duration - position < per_swap:
                break
            target = (len(swaps) + 1) % 2
            settle_bars = SETTLE_BARS + rng.randint(0, MAX_EXTRA_BARS)
            swaps.append(one_swap(process, port, config, checkpoints[target], ids[target], wav_name, timeout,
                                  settle_bars))
            print(f"{mode} swap {len(swaps)}: loaded {swaps[-1]['loaded_wall_seconds']:.2f} s, playing after "
                  f"{swaps[-1]['playing_bars']} bars ({swaps[-1]['playing_audio_seconds']:.1f} s of audio), "
                  f"from {swaps[-1]['first_bar']}", flush=True)
        final = get_status(port)
        code = process.wait(timeout=(duration - final["clock"]["position_seconds"]) / args.speed + 90.0)
    except Exception:
        process.kill()
        process.wait()
        print(log_path.read_text()[-3000:], file=sys.stderr)
        raise
    frames = read_wav(wav)
    silence, silence_at = longest_silence(frames)
    expected = math.ceil(duration * sample_rate / BLOCK_FRAMES) * BLOCK_FRAMES
    lost_counted = {key: sum(s["lost"][key] for s in swaps) for key in swaps[0]["lost"]}
    samples_lost = (abs(expected - int(len(frames))) + lost_counted["wav_frames_dropped"]
                    + (silence if silence > SILENCE_FRAMES else 0))
    return {
        "swap_at": mode,
        "command": f"chiplofi stream --seed 0 --config FILE --output FILE.wav --speed {args.speed:g} "
                   f"--duration {duration:g} (stream.swap_at = {mode!r}); SIGHUP after pointing "
                   "stream.checkpoint at the other checkpoint",
        "swaps": swaps,
        "summary": {
            "loaded_wall_seconds": {"median": round(statistics.median(s["loaded_wall_seconds"] for s in swaps), 3),
                                    "max": max(s["loaded_wall_seconds"] for s in swaps)},
            "playing_bars": {"median": statistics.median(s["playing_bars"] for s in swaps),
                             "max": max(s["playing_bars"] for s in swaps)},
            "playing_audio_seconds": {"median": round(statistics.median(s["playing_audio_seconds"] for s in swaps), 2),
                                      "max": max(s["playing_audio_seconds"] for s in swaps)},
            "new_model_starts_a_track": all(s["first_bar"]["bar"] == 0 for s in swaps),
            "lost_during_swaps": lost_counted,
        },
        "continuity": {"wav_frames": int(len(frames)), "clock_frames": expected,
                       "frames_missing": expected - int(len(frames)), "longest_digital_silence_frames": silence,
                       "longest_digital_silence_at_seconds": round(silence_at / sample_rate, 3),
                       "exit_code": code},
        "samples_lost": samples_lost,
        "replaced": lost_counted["underruns"] + lost_counted["pcm_underruns"],
        "goals": {"playing_bars_max": GOAL_BARS[mode], "samples_lost": GOAL_LOST},
    }


def mode_ok(result: dict) -> bool:
    goal = result["goals"]["playing_bars_max"]
    summary = result["summary"]
    return ((goal is None or summary["playing_bars"]["max"] <= goal) and summary["new_model_starts_a_track"]
            and result["samples_lost"] == 0 and result["replaced"] == 0 and result["continuity"]["exit_code"] == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"stream.swap_at modes to measure, comma-separated (default {','.join(MODES)})")
    parser.add_argument("--swaps", type=int, default=3,
                        help="SIGHUP swaps per mode at least (default 3); the run's spare audio is used for more")
    parser.add_argument("--speed", type=float, default=1.0, help="clock speed (default 1: real time)")
    parser.add_argument("--buffer-seconds", type=float, default=None,
                        help="stream.buffer_seconds for this run (default: the config's default)")
    parser.add_argument("--json", type=Path, default=RESULTS / "swap.json")
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes: expected some of {', '.join(MODES)}, got {args.modes!r}")
    defaults = Config()
    buffer_seconds = args.buffer_seconds or defaults.stream.buffer_seconds
    stream = replace(defaults.stream, buffer_seconds=buffer_seconds,
                     ready_seconds=min(defaults.stream.ready_seconds, buffer_seconds))
    sample_rate = defaults.render.sample_rate
    machine = machine_description()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-swap-") as tmp_name:
        tmp = Path(tmp_name)
        checkpoints = [shipped_directory(), write_second_checkpoint(tmp / "second")]
        ids = [composer_id(c) for c in checkpoints]
        for mode in modes:
            results[mode] = run_mode(mode, args, stream, sample_rate, checkpoints, ids, tmp)
    result = {"figure": "SIGHUP → new model playing, per stream.swap_at; samples lost in the swap",
              "machine": machine, "load_average_end": [round(x, 2) for x in os.getloadavg()],
              "speed": args.speed, "buffer_seconds": stream.buffer_seconds, "modes": results}
    print(f"{'swap_at':<9}{'swap':<6}{'loaded s':>10}{'playing bars':>14}{'audio s':>9}{'ahead s':>9}  first bar, lost")
    for mode, figures in results.items():
        for number, swap in enumerate(figures["swaps"], 1):
            first = swap["first_bar"]
            print(f"{mode:<9}{number:<6}{swap['loaded_wall_seconds']:>10.2f}{swap['playing_bars']:>14}"
                  f"{swap['playing_audio_seconds']:>9.1f}{swap['buffer_ahead_at_sighup_seconds']:>9.1f}  "
                  f"{first['track_id']} bar {first['bar']} ({first['section']}, {first['key']}), {swap['lost']}")
    for mode, figures in results.items():
        summary, goal = figures["summary"], figures["goals"]["playing_bars_max"]
        print(f"swap_at = {mode}: SIGHUP → new model playing: median {summary['playing_bars']['median']:g} bars "
              f"({summary['playing_audio_seconds']['median']:.1f} s of music), max {summary['playing_bars']['max']} "
              f"bars{f' (goal ≤ {goal})' if goal is not None else ''}; loaded in median "
              f"{summary['loaded_wall_seconds']['median']:.2f} s (wall); new model begins its own track: "
              f"{summary['new_model_starts_a_track']}; samples lost {figures['samples_lost']} (goal {GOAL_LOST}), "
              f"underruns/padding {figures['replaced']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(mode_ok(figures) for figures in results.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
