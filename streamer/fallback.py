"""The rule-based parts (`models.rule_parts`) as the stream's bars: the demo, and the bed that
plays while a model can't."""

from __future__ import annotations

from models.rule_parts import NOTE_NAMES, RuleParts
from streamer.types import Bar, Note

__all__ = ["NOTE_NAMES", "RuleBasedParts"]


class RuleBasedParts(RuleParts):
    """Endless bars in one key and tempo; `next_bar()` gives the next one as a `Bar`."""

    def next_bar(self) -> Bar:  # type: ignore[override]
        bar = super().next_bar()
        return Bar(tuple(Note(*note) for note in bar.notes), bar.tempo_bpm, 4.0, bar.track_id, bar.bar_index,
                   section="loop", key=bar.key, chord=bar.chord)
