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
    """A configuration key has a value that is not accepted; the message names the key (one line
    per bad key).

    Each line stays short whatever value it echoes (a 100 MB string, say): past `MAX_LINE`
    characters it is cut, saying how much was left out."""

    MAX_LINE = 400

    def __init__(self, message: str) -> None:
        super().__init__("\n".join(self._cut(line) for line in message.split("\n")))

    @classmethod
    def _cut(cls, line: str) -> str:
        if len(line) <= cls.MAX_LINE:
            return line
        keep = cls.MAX_LINE - 60
        return f"{line[:keep]}… ({len(line) - keep} more characters)"


class InputFileError(ChiplofiError):
    """An input file (MIDI, config, ...) is missing, empty or corrupt; the message names it."""


class OutputFileError(ChiplofiError):
    """An output file cannot be written; the message names it."""


class RenderError(ChiplofiError):
    """FluidSynth could not be set up or failed while rendering."""


class StatusUnavailableError(ChiplofiError):
    """No running stream answers at the status address (`chiplofi status`); the message names it."""
