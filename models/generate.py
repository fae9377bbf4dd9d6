"""Offline generation: whole tracks from the composer, written as MIDI files plus an index.

Each track becomes one MIDI file with four instruments named `lead`, `harmony`, `bass` and
`drums` (drums on the percussion channel), the track's tempo, a 4/4 time signature and its key
signature. `index.json` lists the tracks: id, file, seed, key, tempo, bars, seconds, sections,
whether it plays drums (at NES style some tracks do not) and the model id. The same checkpoint,
seed and controls give byte-identical files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from models.composer import ComposedBar, Composer, Controls
from models.errors import ModelError
from models.midi_lib import pretty_midi
from models.midi_write import voices_to_midi
from models.tokens import STEPS_PER_BEAT

log = logging.getLogger(__name__)


def track_to_midi(bars: list[ComposedBar]) -> pretty_midi.PrettyMIDI:
    """One track's bars as a PrettyMIDI with the four named instruments, tempo, metre and key."""
    if not bars:
        raise ModelError("a track needs at least one bar")
    notes = [(voice, pitch, bar.bar_index * bar.steps + start, length, velocity)
             for bar in bars for voice, pitch, start, length, velocity in bar.notes]
    return voices_to_midi(notes, bars[0].tempo_bpm, bars[0].key)


def write_tracks(checkpoint_dir: str | Path | None, minutes: float, seed: int, out_dir: str | Path,
                 controls: Controls | None = None) -> list[Path]:
    """Write whole tracks until at least `minutes` of music; returns the MIDI paths.

    `checkpoint_dir` None means the shipped checkpoints. `controls` (temperature, style, key,
    tempo, energy) default to `Controls()`; its seed is replaced by `seed`.
    """
    if minutes <= 0:
        raise ModelError(f"minutes must be positive, not {minutes}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Controls(**{**asdict(controls or Controls()), "seed": seed})
    composer = Composer.from_checkpoint(checkpoint_dir, settings)
    paths: list[Path] = []
    index = []
    total_seconds = 0.0
    current: list[ComposedBar] = []
    for bar in composer:
        current.append(bar)
        if bar.bar_index < bar.bars_in_track - 1:
            continue
        path = out_dir / f"{bar.track_id}.mid"
        track_to_midi(current).write(str(path))
        seconds = len(current) * bar.steps / STEPS_PER_BEAT * 60.0 / bar.tempo_bpm
        sections = []
        for item in current:
            if not sections or sections[-1]["name"] != item.section or item.bar_index == 0:
                sections.append({"name": item.section, "first_bar": item.bar_index})
        index.append({
            "track_id": bar.track_id, "file": path.name, "seed": seed, "key": bar.key,
            "tempo_bpm": bar.tempo_bpm, "bars": len(current), "seconds": round(seconds, 2),
            "sections": sections, "model_id": composer.model_id,
            "drums": any(note[0] == "drums" for item in current for note in item.notes),
        })
        paths.append(path)
        total_seconds += seconds
        log.info("wrote %s: %s, %.1f BPM, %d bars (%.0f s)", path, bar.key, bar.tempo_bpm, len(current), seconds)
        current = []
        if total_seconds >= minutes * 60.0:
            break
    (out_dir / "index.json").write_text(json.dumps({"seed": seed, "model_id": composer.model_id,
                                                    "controls": asdict(settings), "tracks": index},
                                                   indent=2, sort_keys=True) + "\n")
    return paths
