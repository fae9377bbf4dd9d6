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

__all__ = ["fluidsynth", "pretty_midi"]
