"""The composer thread: keeps the ring `stream.buffer_seconds` ahead, and swaps composers on a boundary.

- A composer exception (or a bar it must not play) is counted and retried with a growing wait;
  meanwhile the ring drains and the audio thread covers with the fallback bed.
- A new composer (a reload's, or the configured model replacing the opening bridge) is handed over
  as a `PendingSwap`; the composer thread puts it in at the first queued bar that begins a bar,
  section or track (`stream.swap_at`), dropping the old composer's bars queued after that point.
  The new model begins the next track number, in a key related to the bar before.
- A composer call that does not return while a swap waits (`STUCK_COMPOSER_SECONDS`) is given up
  on: a new composer thread takes over (the main loop checks, `check_stuck`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streamer.composer import BarSource, Bridge, RuleBasedComposer, check_bar, starts_unit, uses_model
from streamer.config import StreamSettings
from streamer.logs import RateLimitedLog, redact
from streamer.position import PositionKeeper
from streamer.ringbuffer import BarEntry, BarRing
from streamer.schedule import Schedule
from streamer.status_snapshot import Counters
from streamer.types import Bar

log = logging.getLogger(__name__)

INTRO_SECONDS = 4.0  # fast start: rule-based bars buffered while the model loads
STUCK_COMPOSER_SECONDS = 5.0  # a composer call this long blocks a pending swap: a new thread takes over


@dataclass
class PendingSwap:
    composer: BarSource
    first: Bar  # its first bar, composed when it was validated
    is_reload: bool  # False: the configured model replacing the opening bridge


@dataclass
class CheckpointRecord:
    """What /status says of the composer's checkpoint (written by the composer and reload threads,
    and `reload_failures` also by the main loop when it gives up on a reload)."""

    setting: str  # stream.checkpoint as configured ("" = the shipped models)
    error: str = ""  # why the configured composer is not playing ("" = it is)
    loaded_at: float = field(default_factory=time.time)  # wall time of the last swap
    reloads: int = 0
    reload_failures: int = 0
    last_reload_error: str = ""
    last_swap_wait_seconds: float = 0.0  # music played from the swap's decision to the new model's first bar


def start_track(composer: BarSource, number: int, after: tuple[str, float] | None) -> None:
    """Have `composer` begin track `number` after (key, tempo), if it can (test doubles may not)."""
    begin = getattr(composer, "start_track", None)
    if begin is not None:
        begin(number, after)


class ComposerThread:
    """The composer side of the daemon: `open()` once, then `start()` (again when a call is stuck)."""

    def __init__(self, settings: StreamSettings, *, ring: BarRing, schedule: Schedule, counters: Counters,
                 position: PositionKeeper, seed: int, loader: Callable[[str, int], BarSource],
                 stop: threading.Event, start_thread: Callable[[str, Callable[[], None]], None],
                 pending_seconds: Callable[[], float]) -> None:
        self.settings = settings
        self.ring, self.schedule, self.counters, self.position = ring, schedule, counters, position
        self.seed, self.loader = seed, loader
        self._stop, self._start_thread, self._pending_seconds = stop, start_thread, pending_seconds
        self.composer: BarSource | None = None
        self.record = CheckpointRecord(settings.checkpoint)
        self.pending: PendingSwap | None = None
        self.intro = False  # fast start: the rule-based intro plays while the model loads
        self.composing_since: float | None = None  # monotonic start of the composer call running
        self.failing = False
        self._lock = threading.Lock()
        self._generation = 0
        self._log = RateLimitedLog(log, 30.0)

    @property
    def composer_id(self) -> str:
        return self.composer.id if self.composer else ""

    def entry(self, bar: Bar, composer: BarSource) -> BarEntry:
        return BarEntry(bar, composer.id, getattr(composer, "seed", self.seed))

    # ------------------------------------------------------------------ start

    def open(self, paced: bool) -> None:
        """The first composer: the configured one, or (fast start) an opening bridge while it loads."""
        if self.settings.fast_start and paced and uses_model(self.record.setting):
            # Loading a checkpoint takes about half a second (more on a busy machine): open with a
            # short rule-based bridge meanwhile, in a key following the last track's.
            self.composer = Bridge(self.seed, self.position.current.starts, self.position.current.after)
            self.intro = True
            self.ring.target_seconds = min(INTRO_SECONDS, self.settings.buffer_seconds)
            threading.Thread(target=self._load_in_background, name="loader", daemon=True).start()
            log.info("opening with %s while the configured composer loads", self.composer.id)
        else:
            self.composer = self._load_initial()
            log.info("composer: %s", self.composer.id)

    def _load_initial(self) -> BarSource:
        """The configured composer, validated like a reload (its first bar goes into the ring);
        if it cannot be used, the rule-based composer plays and /status says why."""
        where = self.position.current
        try:
            composer = self.loader(self.record.setting, self.seed)
            start_track(composer, where.next_track, where.after)
            first = check_bar(composer.next_bar())
        except Exception as exc:
            self.record.error = redact(str(exc))
            log.error("cannot use the configured composer (%s); playing the rule-based composer instead",
                      self.record.error)
            composer = RuleBasedComposer(self.seed)
            start_track(composer, where.next_track, where.after)
            first = composer.next_bar()
        self.ring.put(self.entry(first, composer))
        self.counters.bars_composed += 1
        return composer

    def _load_in_background(self) -> None:
        """Fast start: load the configured composer, then hand it over like a reload does."""
        try:
            composer = self.loader(self.record.setting, self.seed)
            start_track(composer, self.position.current.next_track, self.position.current.after)
            first = check_bar(composer.next_bar())
        except Exception as exc:
            self.record.error = redact(str(exc))
            log.error("cannot use the configured composer (%s); the rule-based composer plays on", self.record.error)
            self.ring.target_seconds = self.settings.buffer_seconds
            self.intro = False
            return
        log.info("composer loaded: %s (playing from the next bar boundary)", composer.id)
        with self._lock:
            if self.pending is None:  # a SIGHUP reload that finished first wins
                self.pending = PendingSwap(composer, first, is_reload=False)

    def prefill(self, timeout: float) -> None:
        """Wait until the ring is filled to its target (or `timeout` passes): no audio goes out before."""
        started = time.monotonic()
        filled = self.ring.wait_for_seconds(self.ring.target_seconds - 1e-6, timeout)
        log.info("buffer %s: %.1f s ahead after %.2f s", "prefilled" if filled else "partly filled",
                 self.ring.ahead_seconds, time.monotonic() - started)

    def start(self) -> None:
        self._generation += 1
        generation = self._generation
        self._start_thread("composer", lambda: self._loop(generation))

    # ------------------------------------------------------------------ handing over

    def hand_over(self, swap: PendingSwap | None, still_wanted: Callable[[], bool],
                  with_it: Callable[[], None] | None = None) -> bool:
        """Reload: `swap` takes over at the next boundary (None: a waiting swap is called off), unless
        `still_wanted()` is False by then (checked under the lock). `with_it` runs under the same
        lock (the reload's render/effects swap: a reload given up on hands over neither). False:
        dropped."""
        with self._lock:
            if not still_wanted():
                return False
            self.pending = swap
            if with_it is not None:
                with_it()
            return True

    def swap_unit(self, is_reload: bool) -> str:
        """Where a composer takes over: a reload at `stream.swap_at`; the model replacing the
        opening bridge at the next bar."""
        return self.settings.swap_at if is_reload and not self.intro else "bar"

    def check_stuck(self) -> None:
        """Main loop: a swap waits on a composer call that does not return: give up on that thread."""
        since = self.composing_since
        if self.pending is None or since is None or self._stop.is_set():
            return
        if time.monotonic() - since > STUCK_COMPOSER_SECONDS:
            log.warning("composer %s has been busy %.0f s; a new composer thread takes over",
                        self.composer.id if self.composer else "?", time.monotonic() - since)
            self.composing_since = None
            self.failing = True  # a pending swap does not wait for its boundary from it
            self.start()

    # ------------------------------------------------------------------ the thread

    def _loop(self, generation: int) -> None:
        wait = 0.25
        while not self._stop.is_set() and generation == self._generation:
            with self._lock:
                swap = self.pending
            if swap is not None and self._swap_in(swap):
                continue
            # While a swap waits for its boundary the old composer composes on as usual: the
            # boundary is queued a whole buffer before it plays, in time to cut there.
            if not self.ring.wait_for_room(0.25):
                continue
            composer = self.composer
            assert composer is not None
            self.composing_since = time.monotonic()
            try:
                self.schedule.tune_composer(composer)
                bar = check_bar(composer.next_bar())
            except Exception as exc:  # the model failing must not end the stream: the bed covers
                self.failing = True
                self.counters.composer_errors += 1
                self._log.warning("composer %s failed (%s: %s); retrying in %.1f s", composer.id,
                                  type(exc).__name__, exc, wait)
                self._stop.wait(wait)
                wait = min(wait * 2, 5.0)
                continue
            finally:
                if generation == self._generation:
                    self.composing_since = None
            if generation != self._generation:
                log.info("a composer call that was given up on returned; its bar is dropped")
                return
            wait = 0.25
            self.failing = False
            self.ring.put(self.entry(bar, composer))
            self.counters.bars_composed += 1

    def _swap_in(self, swap: PendingSwap) -> bool:
        """Put `swap`'s composer in place of the playing one at the first queued bar that begins a
        bar/section/track, the new model beginning the next track number in a key related to the
        bar before. False: no boundary queued yet (or it was taken meanwhile)."""
        composer, first = swap.composer, swap.first
        unit = self.swap_unit(swap.is_reload)
        found = self.ring.find_start(lambda before, bar: starts_unit(before, bar, unit))
        if found is None:
            if not (unit == "bar" or self.failing):
                return False
            found = (None, self.ring.last_queued())  # append: nothing queued begins a unit, or the old composer fails
        cut, before = found
        if getattr(composer, "start_track", None) is not None:
            number = self.position.current.next_track
            if before is not None and before.track_number >= 0:
                number = max(number, before.track_number + 1)
            after = (before.key, before.tempo_bpm) if before is not None and before.key else self.position.current.after
            start_track(composer, number, after)
            try:
                first = check_bar(composer.next_bar())
            except Exception as exc:  # validated a moment ago; if it fails now the old one plays on
                with self._lock:
                    if self.pending is swap:
                        self.pending = None
                self.record.reload_failures += 1
                self.record.last_reload_error = redact(f"{type(exc).__name__}: {exc}")
                log.warning("new composer %s failed its first bar (%s); keeping %s", composer.id,
                            self.record.last_reload_error, self.composer.id if self.composer else "none")
                return False
        with self._lock:
            if self.pending is not swap:
                return False  # a newer reload replaced it while its first bar was composed
            cut_result = self.ring.cut_before(cut, self.entry(first, composer))
            if cut_result is None:
                return False  # the boundary bar began playing meanwhile: the next boundary then
            self.pending = None
        dropped, ahead = cut_result
        old = self.composer.id if self.composer else "none"
        self.composer = composer
        self.record.reloads += int(swap.is_reload)
        self.record.loaded_at = time.time()
        self.record.error = ""
        self.ring.target_seconds = self.settings.buffer_seconds  # the intro is over
        self.intro = False
        self.counters.bars_dropped_on_swap += dropped
        self.counters.bars_composed += 1
        self.counters.swaps += 1
        self.record.last_swap_wait_seconds = round(ahead + self._pending_seconds(), 3)
        log.info("composer swapped at the next %s boundary, %.1f s of music ahead: %s → %s, from %s "
                 "(%d queued bars of %s dropped)", unit, self.record.last_swap_wait_seconds, old, composer.id,
                 first.track_id or "its first bar", dropped, old)
        return True
