"""pretty_midi and pyfluidsynth, imported once and quietly.

pyfluidsynth (which pretty_midi also imports when it is installed) prints where it found
libfluidsynth on stdout whenever $CI is set. stdout carries our commands' output
(`chiplofi config example`, a WAV written to '-') and stderr our one-line errors, so that
debugging line is dropped. Import both libraries from here, never directly.
"""

from __future__ import annotations

import contextlib
import io
from types import ModuleType

with contextlib.redirect_stdout(io.StringIO()):
    try:
        import fluidsynth as _fluidsynth
    except ImportError:  # training and evaluation need no synthesizer
        _fluidsynth = None
    import pretty_midi

fluidsynth: ModuleType | None = _fluidsynth

# A corrupt or hostile file can parse as years of music (a 16 s beat for ten million ticks) or
# as millions of beats lasting microseconds: rendering it would fill a disk, and counting its
# beats one by one (get_beats) takes minutes.
MAX_MIDI_HOURS = 4.0
MAX_MIDI_BEATS = 200_000  # quarter notes: 4 h at 800 BPM


def implausible_timing(midi: pretty_midi.PrettyMIDI) -> str:
    """Why no real song is timed like `midi` (one line), or "" when it is plausible."""
    end_time = midi.get_end_time()
    if end_time > MAX_MIDI_HOURS * 3600:
        return (f"the music would last {end_time / 3600:,.1f} h, more than the {MAX_MIDI_HOURS:g} h allowed "
                "(a corrupt tempo or timing?)")
    beats = midi.time_to_tick(end_time) / max(midi.resolution, 1)  # from the ticks: cheap
    if beats > MAX_MIDI_BEATS:
        return f"{beats:,.0f} beats, more than the {MAX_MIDI_BEATS:,} allowed (a corrupt tempo or resolution?)"
    return ""


__all__ = ["fluidsynth", "implausible_timing", "pretty_midi"]
