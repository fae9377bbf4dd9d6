"""Composers for the stream: the trained VAE + LSTM (`models.composer`), or a rule-based one.

This is the only streamer module that imports the models' composer, and it does so lazily,
inside `load_composer`, so the rule-based composer never pays for it. No part of the stream
imports torch: the trained models are read with numpy (`models.checkpoint.load_weight_pair`)
and run in numpy (`models.inference`), one BLAS thread (`OPENBLAS_NUM_THREADS`, set by the CLI
before numpy loads).

A composer is anything with an `id` and `next_bar()` (`BarSource`); those of this module also
have `start_track(number, after)`, with which the daemon continues the radio's track numbering
and key path across restarts and model swaps. Its id names what is loaded
— the checkpoint's model ids for the trained models, or `rule-based-<hash>` for the rule-based
composer — and is what /status reports as the checkpoint id.

A checkpoint is a directory holding `vae.*` and `lstm.*` (see models/checkpoint.py); the word
`rule-based` selects the rule-based composer, and so does an empty setting when no checkpoint
is shipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from models.checkpoint import KINDS, paths, shipped_directory
from streamer.errors import CheckpointError, ModelError
from streamer.fallback import RuleBasedParts, tonic_of
from streamer.types import MAX_TEMPO, MIN_TEMPO, VOICES, Bar, Note

log = logging.getLogger(__name__)

RULE_BASED = "rule-based"
RULE_TRACK_BARS = 48  # the rule-based composer changes key and tempo every this many bars
STEPS_PER_BEAT = 4  # the models' 16-step grid in 4/4
MAX_NOTES_PER_BAR = 512


@runtime_checkable
class BarSource(Protocol):
    """An endless source of bars (the stream's side of a composer: `models.composer.Composer` writes
    music, a `BarSource` hands the stream its bars)."""

    @property
    def id(self) -> str: ...

    def next_bar(self) -> Bar: ...


@dataclass(frozen=True)
class ComposerMood:
    """What a scheduled mood asks of a composer (`set_mood`); None = the composer's own choice."""

    tempo_bpm: tuple[float, float] | None = None  # (slowest, fastest): each track started draws in it
    temperature: float | None = None
    energy: float | None = None
    style_blend: float | None = None


RULE_SECTION_BARS = 8  # the rule-based tracks' sections (A, B, A, ...), so a swap can wait for one
RULE_TEMPO_RANGE = (72.0, 90.0)
RELATED_STEPS = (0, 5, 7, 2, 10)  # a related key: the same, a fourth or fifth up, a tone either way


def starts_unit(previous: Bar | None, bar: Bar, unit: str) -> bool:
    """Does `bar` begin a new `unit` ("bar", "section" or "track") after `previous`?

    A new track always begins a section; None before means nothing was played yet.
    """
    if unit == "bar" or previous is None:
        return True
    new_track = bar.track_id != previous.track_id or bar.bar_index == 0
    if unit == "track":
        return new_track
    return new_track or bar.section != previous.section


class RuleBasedComposer:
    """Endless rule-based music (streamer.fallback), in tracks of `RULE_TRACK_BARS` bars.

    Each track gets its own key and tempo from (seed, track number), so the radio is not one
    loop; `start_track` continues the numbering and the key path of whatever played before.
    """

    def __init__(self, seed: int = 0, track_bars: int = RULE_TRACK_BARS) -> None:
        self.seed = seed
        self.track_bars = track_bars
        self._track = -1
        self._after: tuple[str, float] | None = None  # the key and tempo the next track follows
        self._parts: RuleBasedParts | None = None
        self._bar_in_track = track_bars
        self.mood = ComposerMood()
        digest = hashlib.sha256(f"{RULE_BASED}:{seed}:{track_bars}".encode()).hexdigest()[:10]
        self._id = f"{RULE_BASED}-{digest}"

    @property
    def id(self) -> str:
        return self._id

    def set_mood(self, mood: ComposerMood) -> None:
        """Tracks started from now on draw their tempo in the mood's range (the rule-based parts
        have no temperature, energy or style to steer)."""
        self.mood = mood

    def start_track(self, number: int, after: tuple[str, float] | None = None) -> None:
        """Begin track `number` with the next bar, in a key related to `after` = (key, tempo)."""
        self._track = number - 1
        self._after = after
        self._parts = None

    def _new_track(self) -> RuleBasedParts:
        self._track += 1
        rng = np.random.default_rng([self.seed, self._track, 0x5EED])
        low, high = self.mood.tempo_bpm or RULE_TEMPO_RANGE
        after_tonic = tonic_of(self._after[0]) if self._after else None
        if self._after is not None and after_tonic is not None:
            tonic = (after_tonic + RELATED_STEPS[int(rng.integers(len(RELATED_STEPS)))]) % 12
            tempo = float(np.clip(self._after[1] + rng.uniform(-6.0, 6.0), low, high))
        else:
            tonic, tempo = int(rng.integers(0, 12)), float(rng.uniform(low, high))
        self._after = None
        return RuleBasedParts(seed=int(rng.integers(0, 2**31)), tonic=tonic, tempo_bpm=round(tempo, 1),
                              track_id=self.track_id(self._track))

    def track_id(self, number: int) -> str:
        return f"r{self.seed}-t{number:04d}"

    def next_bar(self) -> Bar:
        if self._parts is None or self._bar_in_track >= self.track_bars:
            self._parts = self._new_track()
            self._bar_in_track = 0
        section = "AB"[(self._bar_in_track // RULE_SECTION_BARS) % 2]
        self._bar_in_track += 1
        return dataclasses.replace(self._parts.next_bar(), section=section, track_number=self._track)


class Bridge(RuleBasedComposer):
    """The few seconds of rule-based music that open the stream while the model loads.

    It follows the key and tempo the stream last played and varies with every start (the
    number of starts is part of its seed), and its bars are not a track: no track number, no
    archive entry.
    """

    TRACK_ID = "bridge"

    def __init__(self, seed: int, starts: int, after: tuple[str, float] | None = None) -> None:
        super().__init__(seed)
        self.start_track(starts, after)

    def track_id(self, number: int) -> str:
        return self.TRACK_ID

    def next_bar(self) -> Bar:
        return dataclasses.replace(super().next_bar(), track_number=-1)


class ModelComposer:
    """Adapts `models.composer.Composer` (ComposedBar, 16th-note steps) to the stream's `Bar`s."""

    def __init__(self, composer: object, model_id: str) -> None:
        self._composer = composer
        self._id = model_id
        self._loaded_controls = getattr(composer, "controls", None)  # what a mood reverts to
        self.mood = ComposerMood()
        self._tempo_rng = np.random.default_rng([int(getattr(self._loaded_controls, "seed", 0)), 0x7E4D0])

    @property
    def id(self) -> str:
        return self._id

    @property
    def seed(self) -> int:
        return int(self._composer.controls.seed)  # type: ignore[attr-defined]

    def set_mood(self, mood: ComposerMood) -> None:
        """Temperature, energy and style apply from the next bar, a tempo range from the next track;
        what the mood leaves None goes back to the controls the model was loaded with."""
        loaded = self._loaded_controls
        if mood == self.mood or loaded is None:
            return
        self.mood = mood
        self._composer.set_controls(  # type: ignore[attr-defined]
            temperature=loaded.temperature if mood.temperature is None else mood.temperature,
            energy=loaded.energy if mood.energy is None else mood.energy,
            style_blend=loaded.style_blend if mood.style_blend is None else mood.style_blend,
            tempo_bpm=self._draw_tempo() or loaded.tempo_bpm)

    def _draw_tempo(self) -> float | None:
        """A tempo in the mood's range for the next track (None: the model chooses)."""
        span = self.mood.tempo_bpm
        return round(float(self._tempo_rng.uniform(*span)), 1) if span else None

    def start_track(self, number: int, after: tuple[str, float] | None = None) -> None:
        """Begin track `number` with the next bar, in a key related to `after` = (key, tempo)."""
        try:
            self._composer.start_track(number, after)  # type: ignore[attr-defined]
        except ModelError:  # a key name the models do not read: begin without following it
            self._composer.start_track(number, None)  # type: ignore[attr-defined]

    def next_bar(self) -> Bar:
        composed = next(self._composer)  # type: ignore[call-overload]
        if composed.bar_index == 0 and self.mood.tempo_bpm:  # a track began: draw the next one's tempo
            self._composer.set_controls(tempo_bpm=self._draw_tempo())  # type: ignore[attr-defined]
        steps = getattr(composed, "steps", 16) or 16
        notes = tuple(Note(voice, int(pitch), start / STEPS_PER_BEAT, length / STEPS_PER_BEAT, int(velocity))
                      for voice, pitch, start, length, velocity in composed.notes)
        return Bar(notes=notes, tempo_bpm=float(composed.tempo_bpm), beats=steps / STEPS_PER_BEAT,
                   track_id=composed.track_id, bar_index=composed.bar_index, section=composed.section,
                   key=composed.key, chord=composed.chord, track_number=composed.track_index)


def whole_tracks(composer: BarSource, count: int) -> list[list[Bar]]:
    """The next `count` whole tracks of `composer` (from a bar 0 to the last bar before the next
    bar 0); bars before the first bar 0 are skipped. For measuring what a composer makes."""
    bar = composer.next_bar()
    while bar.bar_index != 0:
        bar = composer.next_bar()
    tracks: list[list[Bar]] = []
    while len(tracks) < count:
        track = [bar]
        bar = composer.next_bar()
        while bar.bar_index != 0:
            track.append(bar)
            bar = composer.next_bar()
        tracks.append(track)
    return tracks


def check_bar(bar: Bar) -> Bar:
    """Reject a bar the renderer must not get (a composer bug); raises ModelError."""
    if not isinstance(bar, Bar):
        raise ModelError(f"composer returned {type(bar).__name__}, not a Bar")
    if not (math.isfinite(bar.tempo_bpm) and MIN_TEMPO <= bar.tempo_bpm <= MAX_TEMPO):
        raise ModelError(f"bar tempo {bar.tempo_bpm!r} BPM outside {MIN_TEMPO:g}..{MAX_TEMPO:g}")
    if not (math.isfinite(bar.beats) and 0 < bar.beats <= 16):
        raise ModelError(f"bar length {bar.beats!r} beats outside 0..16")
    if len(bar.notes) > MAX_NOTES_PER_BAR:
        raise ModelError(f"bar has {len(bar.notes)} notes (more than {MAX_NOTES_PER_BAR})")
    for note in bar.notes:
        if note.voice not in VOICES:
            raise ModelError(f"note of unknown voice {note.voice!r}")
        if not (0 <= note.pitch <= 127 and 1 <= note.velocity <= 127):
            raise ModelError(f"note pitch {note.pitch} / velocity {note.velocity} out of MIDI range")
        if not (math.isfinite(note.start) and math.isfinite(note.duration)
                and 0 <= note.start < bar.beats and 0 <= note.duration <= 64):
            raise ModelError(f"note at {note.start!r} beats lasting {note.duration!r} is outside the bar")
    return bar


def shipped_checkpoint() -> Path | None:
    """The shipped checkpoint directory (models/checkpoints), if its files are there."""
    directory = shipped_directory()
    needed = [path for kind in KINDS for path in paths(directory, kind)]
    return directory if all(path.is_file() for path in needed) else None


def uses_model(setting: str) -> bool:
    """Does `stream.checkpoint = setting` mean loading a trained model?"""
    return setting != RULE_BASED and (bool(setting) or shipped_checkpoint() is not None)


def describe_checkpoint(setting: str) -> str:
    """What `stream.checkpoint = setting` means, for logs and `config check`."""
    if setting == RULE_BASED:
        return "the rule-based composer"
    if setting:
        return f"checkpoint {setting}"
    shipped = shipped_checkpoint()
    return f"the shipped checkpoint {shipped}" if shipped else "the rule-based composer (no checkpoint shipped)"


def load_composer(setting: str, seed: int) -> BarSource:
    """Build the composer `stream.checkpoint = setting` names; raises CheckpointError / ModelError.

    Loading never unpickles (models.checkpoint reads safetensors and JSON only) and never
    imports torch.
    """
    if setting == RULE_BASED:
        return RuleBasedComposer(seed)
    directory = Path(setting) if setting else shipped_checkpoint()
    if directory is None:
        log.warning("no checkpoint shipped; composing with the rule-based composer")
        return RuleBasedComposer(seed)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    try:
        from models.composer import Composer as TrainedComposer, Controls
    except ImportError as exc:
        raise CheckpointError(f"{directory}: the models package cannot be imported ({exc})") from exc
    try:
        composer = TrainedComposer.from_checkpoint(directory, Controls(seed=seed))
    except (CheckpointError, ModelError):
        raise
    except Exception as exc:  # any other failure while building the models is a bad checkpoint too
        raise CheckpointError(f"{directory}: cannot load ({type(exc).__name__}: {exc})") from exc
    return ModelComposer(composer, composer.model_id)
