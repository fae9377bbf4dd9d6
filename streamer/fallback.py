"""The never-silent part: the rule-based parts (`models.rule_parts`) as the stream's bars (the demo,
and the bed that plays while a model can't), and the one object that owns the fallback policy.

Every source of bars is either fallible (the ring the composer fills: it may have no bar in time)
or infallible (`FallbackBed`: it always has one). `FallbackSource` is fallback(fallible,
infallible), itself infallible: the audio thread asks it for a bar and gets the composer's when
there is one in time, else the bed's — an underrun, counted — so the stream is never silent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from models.errors import ModelError
from models.rule_parts import RuleParts
from models.theory import parse_key
from streamer.ringbuffer import BarEntry
from streamer.status_snapshot import Counters
from streamer.types import MAX_TEMPO, MIN_TEMPO, Bar, Note

__all__ = ["FallbackBed", "FallbackSource", "RuleBasedParts", "tonic_of"]

log = logging.getLogger(__name__)


class RuleBasedParts(RuleParts):
    """Endless bars in one key and tempo; `next_bar()` gives the next one as a `Bar`."""

    def next_bar(self) -> Bar:  # type: ignore[override]
        bar = super().next_bar()
        return Bar(tuple(Note(*note) for note in bar.notes), bar.tempo_bpm, 4.0, bar.track_id, bar.bar_index,
                   section="loop", key=bar.key, chord=bar.chord)


def tonic_of(key: str) -> int | None:
    """Pitch class of a key name such as 'F# minor' or 'Bb major' (None if unknown)."""
    try:
        return parse_key(key)[0] if key else None
    except ModelError:
        return None


class FallbackBed:
    """What plays while the composer cannot keep up: rule-based bars in the key and tempo last heard.

    Labelled track "fallback" so /status shows it; it restarts its pattern when the key or
    tempo it should follow changes.
    """

    TRACK_ID = "fallback"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._parts = RuleBasedParts(seed=seed, track_id=self.TRACK_ID)
        self._follow: tuple[int, float] = (self._parts.tonic, self._parts.tempo_bpm)

    def follow(self, bar: Bar) -> None:
        """Match the key and tempo of `bar` (a bar the composer made)."""
        tonic = tonic_of(bar.key)
        target = (self._follow[0] if tonic is None else tonic, bar.tempo_bpm)
        if target != self._follow and MIN_TEMPO <= bar.tempo_bpm <= MAX_TEMPO:
            self._follow = target
            self._parts = RuleBasedParts(seed=self.seed, tonic=target[0], tempo_bpm=target[1],
                                         track_id=self.TRACK_ID)

    def next_bar(self) -> Bar:
        return self._parts.next_bar()


class FallbackSource:
    """fallback(`source`, `bed`): the next bar to play, never none when one is due (audio thread only).

    `source(timeout)` is the fallible one (`BarRing.get`: a bar within `timeout` seconds, or None).
    """

    def __init__(self, source: Callable[[float], BarEntry | None], bed: FallbackBed, counters: Counters) -> None:
        self.source, self.bed, self.counters = source, bed, counters

    def next(self, timeout: float, due: bool) -> tuple[BarEntry, bool] | None:
        """(the next bar, whether it is the bed's): the source's if it has one within `timeout`;
        else, when a bar is `due` (the audio ahead runs out), the bed's — an underrun, counted.
        None: no bar yet, and none due."""
        entry = self.source(timeout)
        if entry is not None:
            return entry, False
        if not due:
            return None
        self.counters.underruns += 1
        if self.counters.underruns == 1 or self.counters.underruns % 100 == 0:
            log.warning("buffer underrun (%d so far): playing the fallback bed", self.counters.underruns)
        return self.bed_bar(), True

    def bed_bar(self) -> BarEntry:
        """A bar of the bed (also in place of a bar that cannot be played)."""
        return BarEntry(self.bed.next_bar(), FallbackBed.TRACK_ID)

    def played(self, bar: Bar, from_bed: bool) -> None:
        """`bar` was rendered: the bed follows the composer's key and tempo; the bed's own bars are counted."""
        if from_bed:
            self.counters.fallback_bars += 1
        else:
            self.bed.follow(bar)
