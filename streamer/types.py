"""The data that flows through the pipeline: notes and bars (composer → buffer → render)."""

from __future__ import annotations

from dataclasses import dataclass

# Re-exported: the pipeline imports the voice order from here, beside the Note and Bar that carry it.
from models.voices import VOICES as VOICES  # (lead, harmony, bass, drums): pulse 1, pulse 2, triangle, noise

MIN_TEMPO, MAX_TEMPO = 30.0, 300.0  # BPM: a bar outside is refused (streamer.composer.check_bar)


@dataclass(frozen=True, slots=True)
class Note:
    """One note of one voice, timed in beats from the downbeat of the bar that holds it."""

    voice: str
    pitch: int  # MIDI key number 0..127 (drums: General MIDI drum key)
    start: float  # beats from the bar's downbeat, 0 <= start < bar.beats
    duration: float  # beats; may run past the bar line, the note keeps ringing
    velocity: int  # 1..127


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of music ready to render, plus what it is (for now-playing and status)."""

    notes: tuple[Note, ...]
    tempo_bpm: float
    beats: float = 4.0  # length in beats (4/4 → 4)
    track_id: str = ""
    bar_index: int = 0  # index within its track
    section: str = ""
    key: str = ""
    chord: str = ""
    track_number: int = -1  # the radio's running track number (-1: not a track, e.g. the bridge or the bed)

    @property
    def seconds(self) -> float:
        return self.beats * 60.0 / self.tempo_bpm
