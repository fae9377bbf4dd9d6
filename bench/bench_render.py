"""Render + effects speed against FluidSynth alone, on the same 4-voice music, in one run.

Rows (CPU seconds of one process, one core, median of several runs, as × real time):
  fluidsynth-cli   the `fluidsynth` program fast-rendering the same notes from a MIDI file
                   (the floor: FluidSynth alone, no Python)
  render           our BarRenderer (FluidSynth via pyfluidsynth + sample-accurate scheduling)
  effects          the lo-fi chain alone on the rendered audio
  render+effects   what `chiplofi render` and the stream do
Goal (issue 2): render+effects ≥ 100× real time.
Run: .venv/bin/python bench/bench_render.py [--minutes M] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pretty_midi

ROOT = Path(__file__).resolve().parents[1]

import soundfonts  # noqa: E402
from streamer.config import Config, RenderSettings  # noqa: E402
from streamer.effects import EffectsChain  # noqa: E402
from streamer.fallback import RuleBasedParts  # noqa: E402
from streamer.render import BarRenderer  # noqa: E402
from streamer.types import Bar  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_X_REALTIME = 100.0


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bars_to_midi(bars: list[Bar], settings: RenderSettings, path: Path) -> None:
    """The same notes as a MIDI file, each voice on its preset, for the FluidSynth CLI floor."""
    tempo = bars[0].tempo_bpm
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    seconds_per_beat = 60.0 / tempo
    instruments = {}
    for voice in ("lead", "harmony", "bass", "drums"):
        preset = getattr(settings, voice).preset
        bank, program = soundfonts.PRESETS[preset]
        instruments[voice] = pretty_midi.Instrument(program=program, is_drum=bank == 128, name=voice)
    for index, bar in enumerate(bars):
        offset = index * bar.beats
        for note in bar.notes:
            start = (offset + note.start) * seconds_per_beat
            instruments[note.voice].notes.append(
                pretty_midi.Note(note.velocity, note.pitch, start, start + note.duration * seconds_per_beat))
    midi.instruments.extend(instruments.values())
    midi.write(str(path))


def _fluidsynth_cli_cpu(midi_path: Path, sample_rate: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            ["fluidsynth", "-n", "-i", "-q", "-R", "0", "-C", "0", "-r", str(sample_rate), "-T", "raw",
             "-F", os.path.join(tmp, "out.raw"), str(soundfonts.SOUNDFONT_PATH), str(midi_path)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _render_cpu(bars: list[Bar], config: Config) -> tuple[float, np.ndarray]:
    renderer = BarRenderer(config.render, seed=1)
    start = _cpu_self()
    blocks = [renderer.render_bar(bar) for bar in bars]
    cpu = _cpu_self() - start
    renderer.close()
    return cpu, np.concatenate(blocks)


def _effects_cpu(audio: np.ndarray, config: Config, sample_rate: int) -> float:
    chain = EffectsChain.from_settings(config.effects, sample_rate, seed=1)
    block_frames = 4096
    start = _cpu_self()
    for offset in range(0, len(audio), block_frames):
        chain.process(audio[offset:offset + block_frames])
    return _cpu_self() - start


def _render_and_effects_cpu(bars: list[Bar], config: Config) -> float:
    renderer = BarRenderer(config.render, seed=1)
    chain = EffectsChain.from_settings(config.effects, renderer.sample_rate, seed=1)
    start = _cpu_self()
    for bar in bars:
        chain.process(renderer.render_bar(bar))
    cpu = _cpu_self() - start
    renderer.close()
    return cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="music length per run (default 3)")
    parser.add_argument("--runs", type=int, default=5, help="runs per row; the median is reported (default 5)")
    args = parser.parse_args()

    config = Config()
    parts = RuleBasedParts(seed=11)
    bar_seconds = parts.next_bar().seconds
    bars = [parts.next_bar() for _ in range(max(1, round(args.minutes * 60 / bar_seconds)))]
    music_seconds = sum(bar.seconds for bar in bars)
    notes = sum(len(bar.notes) for bar in bars)

    with tempfile.TemporaryDirectory() as tmp:
        midi_path = Path(tmp) / "bench.mid"
        _bars_to_midi(bars, config.render, midi_path)
        rows: dict[str, list[float]] = {"fluidsynth-cli": [], "render": [], "effects": [], "render+effects": []}
        for _ in range(args.runs):  # interleaved, so machine noise hits every row alike
            rows["fluidsynth-cli"].append(_fluidsynth_cli_cpu(midi_path, config.render.sample_rate))
            cpu, audio = _render_cpu(bars, config)
            rows["render"].append(cpu)
            rows["effects"].append(_effects_cpu(audio, config, config.render.sample_rate))
            rows["render+effects"].append(_render_and_effects_cpu(bars, config))

    floor = statistics.median(rows["fluidsynth-cli"])
    print(f"{music_seconds:.0f} s of 4-voice music ({len(bars)} bars, {notes} notes), "
          f"{args.runs} runs, CPU time of one core, median")
    print(f"{'path':<16} {'cpu s':>8} {'x real time':>12} {'vs fluidsynth':>14}")
    result_rows = {}
    for name, cpus in rows.items():
        cpu = statistics.median(cpus)
        result_rows[name] = {"cpu_seconds_median": cpu, "cpu_seconds_runs": cpus,
                             "x_realtime": music_seconds / cpu, "ratio_to_fluidsynth_cli": cpu / floor}
        print(f"{name:<16} {cpu:>8.3f} {music_seconds / cpu:>11.0f}x {cpu / floor:>13.2f}x")
    achieved = result_rows["render+effects"]["x_realtime"]
    verdict = "meets" if achieved >= GOAL_X_REALTIME else "MISSES"
    print(f"render+effects {achieved:.0f}x real time: {verdict} the goal of {GOAL_X_REALTIME:.0f}x")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "render.json").write_text(json.dumps({
        "benchmark": "render+effects vs fluidsynth alone", "music_seconds": music_seconds,
        "runs": args.runs, "rows": result_rows, "goal_x_realtime": GOAL_X_REALTIME,
        "meets_goal": achieved >= GOAL_X_REALTIME,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
