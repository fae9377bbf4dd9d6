"""Errors of the streamer; all derive from `ChiplofiError` (see models/errors.py for why it lives there)."""

from models.errors import CheckpointError, ChiplofiError, DataError, ModelError, SoundFontError

__all__ = [
    "ChiplofiError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputFileError",
    "ModelError",
    "OutputFileError",
    "RenderError",
    "SoundFontError",
    "StatusUnavailableError",
]


class ConfigError(ChiplofiError):
    """A configuration key has a value that is not accepted; the message names the key."""


class InputFileError(ChiplofiError):
    """An input file (MIDI, config, ...) is missing, empty or corrupt; the message names it."""


class OutputFileError(ChiplofiError):
    """An output file cannot be written; the message names it."""


class RenderError(ChiplofiError):
    """FluidSynth could not be set up or failed while rendering."""


class StatusUnavailableError(ChiplofiError):
    """No running stream answers at the status address (`chiplofi status`); the message names it."""
