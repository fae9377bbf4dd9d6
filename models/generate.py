"""Offline generation: whole tracks from the composer, written as MIDI files plus an index.

Each track becomes one MIDI file with four instruments named `lead`, `harmony`, `bass` and
`drums` (drums on the percussion channel), the track's tempo, a 4/4 time signature and its key
signature. `index.json` lists the tracks: id, file, seed, key, tempo, bars, seconds, sections
and the model id. The same checkpoint, seed and controls give byte-identical files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from models.midi_lib import pretty_midi

from models.composer import ComposedBar, Composer, Controls, parse_key
from models.data import MINOR, STEPS_PER_BEAT, VOICES
from models.errors import ModelError

log = logging.getLogger(__name__)

# General MIDI programs for players without chiplofi's SoundFont (square lead, e-piano,
# synth bass); the names are what chiplofi's renderer goes by.
PROGRAMS = {"lead": 80, "harmony": 4, "bass": 38, "drums": 0}


def track_to_midi(bars: list[ComposedBar]) -> pretty_midi.PrettyMIDI:
    """One track's bars as a PrettyMIDI with the four named instruments, tempo, metre and key."""
    if not bars:
        raise ModelError("a track needs at least one bar")
    tempo = float(bars[0].tempo_bpm)
    seconds_per_step = 60.0 / tempo / STEPS_PER_BEAT
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo, resolution=480)
    midi.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    tonic, mode = parse_key(bars[0].key)
    midi.key_signature_changes.append(pretty_midi.KeySignature(tonic + (12 if mode == MINOR else 0), 0.0))
    instruments = {voice: pretty_midi.Instrument(PROGRAMS[voice], is_drum=voice == "drums", name=voice)
                   for voice in VOICES}
    for bar in bars:
        origin = bar.bar_index * bar.steps
        for voice, pitch, start, length, velocity in bar.notes:
            begin = (origin + start) * seconds_per_step
            end = (origin + start + max(1, length)) * seconds_per_step
            if voice == "drums":
                end = begin + 0.5 * seconds_per_step
            instruments[voice].notes.append(pretty_midi.Note(int(velocity), int(pitch), begin, end))
    for voice in VOICES:
        instruments[voice].notes.sort(key=lambda n: (n.start, n.pitch))
        midi.instruments.append(instruments[voice])
    return midi


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
