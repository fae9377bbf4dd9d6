"""Offline rendering: bars → FluidSynth → lo-fi effects → WAV file (the `render` and `demo` commands)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streamer.config import Config
from streamer.effects import EffectsChain
from streamer.fallback import RuleBasedParts
from streamer.midifile import midi_to_bars, read_midi
from streamer.render import BarRenderer
from streamer.types import Bar
from streamer.wavfile import WavWriter

log = logging.getLogger(__name__)

TAIL_SECONDS = 1.5  # let the last release tails ring out
PROGRESS_MIN_SECONDS = 5.0  # show a progress bar for music longer than this


def render_bars_to_wav(bars: Iterable[Bar], out_path: str | Path, config: Config, *, seed: int = 0,
                       effects: bool = True, total_seconds: float | None = None,
                       progress: bool = True) -> float:
    """Render `bars` into a WAV file at `out_path`; returns the seconds of audio written."""
    renderer = BarRenderer(config.render, seed=seed)
    chain = EffectsChain.from_settings(config.effects, renderer.sample_rate, seed) if effects else None
    show_bar = progress and total_seconds is not None and total_seconds > PROGRESS_MIN_SECONDS
    try:
        with WavWriter(out_path, renderer.sample_rate) as wav, \
                tqdm(total=round(total_seconds or 0, 1), unit="s", disable=not show_bar,
                     desc=Path(out_path).name, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s") as bar_progress:
            for bar in bars:
                block = renderer.render_bar(bar)
                wav.write(chain.process(block) if chain else block)
                bar_progress.update(bar.seconds)
            tail = renderer.render_tail(TAIL_SECONDS)
            wav.write(chain.process(tail) if chain else tail)
            seconds = wav.frames_written / renderer.sample_rate
    finally:
        renderer.close()
    return seconds


def render_pcm(bars: Iterable[Bar], config: Config, *, seed: int = 0) -> np.ndarray:
    """Render `bars` as the stream plays them (renderer + effects chain): float32 (frames, 2)."""
    renderer = BarRenderer(config.render, seed=seed)
    chain = EffectsChain.from_settings(config.effects, renderer.sample_rate, seed)
    try:
        return np.concatenate([chain.process(renderer.render_bar(bar)) for bar in bars])
    finally:
        renderer.close()


def render_midi_file(midi_path: str | Path, out_path: str | Path, config: Config, *, seed: int = 0,
                     effects: bool = True, swing: float | None = None, progress: bool = True) -> float:
    """Render an ordinary MIDI file with chiplofi's voices; returns the seconds written.

    `swing` None plays the file as written (0.5, straight): its own groove is already in the
    note times, and adding the stream's swing on top would distort triplets and shuffles.
    """
    midi = read_midi(midi_path)
    bars = midi_to_bars(midi, track_id=Path(midi_path).stem)
    render_settings = dataclasses.replace(config.render, swing=0.5 if swing is None else swing)
    config = dataclasses.replace(config, render=render_settings)
    total = sum(bar.seconds for bar in bars)
    log.info("rendering %s: %d bars, %.1f s", midi_path, len(bars), total)
    return render_bars_to_wav(bars, out_path, config, seed=seed, effects=effects,
                              total_seconds=total, progress=progress)


def render_demo(out_path: str | Path, config: Config, *, bars: int = 16, seed: int = 0,
                progress: bool = True) -> float:
    """A short rule-based lo-fi demo through the whole sound chain."""
    parts = RuleBasedParts(seed=seed)
    demo_bars = [parts.next_bar() for _ in range(bars)]
    return render_bars_to_wav(demo_bars, out_path, config, seed=seed,
                              total_seconds=sum(b.seconds for b in demo_bars), progress=progress)
