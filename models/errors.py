"""The root of chiplofi's single exception hierarchy.

It lives here, in a module without torch, because `models` must never import `streamer`
while `streamer` may import this module; `streamer.errors` builds on it.
"""


class ChiplofiError(Exception):
    """Every error chiplofi raises on purpose; the CLI prints its message on one line."""


class ModelError(ChiplofiError):
    """A model could not be built, trained or sampled."""


class CheckpointError(ModelError):
    """A checkpoint is missing, truncated, of an unknown version or does not fit its model."""


class DataError(ChiplofiError):
    """Training or evaluation data could not be used (no usable MIDI in a folder, ...)."""


class SoundFontError(ChiplofiError):
    """The SoundFont cannot be built or loaded (here, not in streamer.errors: soundfonts/ raises it)."""
