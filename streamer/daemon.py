"""`chiplofi stream`: the 24/7 daemon, and the only place where the pipeline is wired together.

    composer thread ──► BarRing (≥ buffer_seconds ahead) ──► audio thread: render → effects →
    sanitise → SampleClock (paces blocks) ──► every sink's own queue ──► ffmpeg / file / speakers /
    null / the status page's live player

- The composer thread keeps the ring `stream.buffer_seconds` ahead. A composer exception (or
  a bar it must not play) is counted and retried with a growing wait; meanwhile the ring drains.
- The audio thread renders a little ahead of the clock. When the ring has no bar in time, it
  plays a bar of the fallback bed (rule-based, in the last key and tempo) — an underrun,
  counted — so the stream is never silent. NaN/Inf samples are replaced and counted.
- Sinks never block the clock (see streamer.sinks); the status server reads snapshots.
- Signals only set flags (and log one line); the main thread acts on them: SIGHUP starts a
  background reload (config, checkpoint, SoundFont, effects), validated by generating and
  rendering a bar; only what changed is swapped in: a new model at the next `stream.swap_at`
  boundary (bar, section or track), beginning its own track; the same model plays on with its
  queued bars; render and effects changes from the next bar — a failure keeps what plays; SIGTERM/SIGINT
  stop everything within 5 s with ffmpeg ending its files; SIGUSR1 logs every thread's stack.
- systemd: READY=1 after the prefill, WATCHDOG=1 only while healthy (with RTMP outputs, only while
  one of them delivers), STATUS= a summary.
- The musical position (streamer.position) is kept in the state directory, so a restart
  continues the radio: a new track number, in a key related to the last one, after a short
  bridge that is not a track. `--seed` runs reproducibly from track 0 instead.
- The schedule (streamer.schedule) picks the program playing; the composer thread takes its mood
  before each bar, the audio thread its effects; its jobs only post requests (a timed reload, the
  stats line) that the main loop carries out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from streamer.archive import TrackArchive, TrackRecorder
from streamer.audio_thread import BLOCK_FRAMES, UNPACED_BAR_WAIT_SECONDS, AudioThread, RenderSwap
from streamer.clock import SampleClock
from streamer.composer import (
    Bridge,
    Composer,
    RuleBasedComposer,
    check_bar,
    load_composer,
    starts_unit,
    uses_model,
)
from streamer.config import Config
from streamer.errors import ConfigError
from streamer.logs import RateLimitedLog, install_redaction, redact, thread_stacks
from streamer.memory import pin_mmap_threshold
from streamer.notify import Notifier, SystemdNotifier, status_line
from streamer.outputs import build_outputs, read_stream_key, state_directory
from streamer.position import POSITION_FILE, PositionKeeper
from streamer.ringbuffer import BarEntry, BarRing
from streamer.schedule import RELOAD, STATS, Schedule, stats_line
from streamer.sinks import Sink, SinkSnapshot
from streamer.status import LiveAudioHub, StatusServer, parse_addr
from streamer.status_snapshot import Counters
from streamer.stream_config import CliOverrides, load_stream_config
from streamer.track_titles import track_title
from streamer.types import Bar
from streamer.video_files import VideoFiles

log = logging.getLogger(__name__)

STOP_BUDGET_SECONDS = 4.0  # for the sinks on a signal; the whole stop stays under 5 s
DRAIN_BUDGET_SECONDS = 60.0  # for the sinks when --duration ends the run: every file is finished
INTRO_SECONDS = 4.0  # fast start: rule-based bars buffered while the model loads
STUCK_COMPOSER_SECONDS = 5.0  # a composer call this long blocks a pending swap: a new thread takes over
# A reload running this long is given up on when another is asked for (a checkpoint on a hung
# network mount, say): the new one runs, and whatever the old one returns is dropped.
RELOAD_TIMEOUT_SECONDS = 120.0
UPCOMING_BARS = 4
STATUS_LINE_SECONDS = 10.0


# ----------------------------------------------------------------------------- the daemon


class _StopDuringStart(Exception):
    pass


class Daemon:
    """Build with a checked `Config`; `run()` blocks until stopped and returns the exit code."""

    def __init__(self, config: Config, *, config_path: str | Path | None = None,
                 overrides: CliOverrides | None = None, environ: Mapping[str, str] | None = None,
                 duration: float | None = None, notifier: Notifier | None = None,
                 composer_loader: Callable[[str, int], Composer] = load_composer,
                 sinks: list[Sink] | None = None) -> None:
        self.config_path = config_path
        self.overrides = overrides = overrides if overrides is not None else CliOverrides()
        self.environ = dict(os.environ if environ is None else environ)
        self.duration = duration
        self.notifier: Notifier = notifier if notifier is not None else SystemdNotifier(self.environ)
        self.composer_loader = composer_loader
        self._given_sinks = sinks
        self.key = read_stream_key(config, self.environ)
        install_redaction([self.key] if self.key else [])
        self.sample_rate = config.render.sample_rate
        self.state_dir = state_directory(config, self.environ)
        # The radio's musical position: continued from the state directory, or (--seed) a
        # reproducible run from track 0 that leaves the kept position alone.
        self.position = PositionKeeper(self.state_dir / POSITION_FILE, config.stream.seed, overrides.seed)
        self.seed = self.position.current.seed

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._signals: deque[int] = deque()
        self.schedule = Schedule(config.schedule, wake=self._wake.set)
        self.composer_loader = self.schedule.tuned_loader(composer_loader)  # the mood before the first bar
        self.exit_code = 0
        self.stop_reason = ""
        self.started = time.monotonic()

        self.ring = BarRing(config.stream.buffer_seconds)
        self.clock = SampleClock(self.sample_rate, config.stream.speed)
        self.sinks: list[Sink] = []
        self.hub: LiveAudioHub | None = None
        self.status_server: StatusServer | None = None
        self.picture: VideoFiles | None = None
        self.archive: TrackArchive | None = None
        self.counters = Counters()

        # composer side (composer thread)
        self.composer: Composer | None = None
        self.checkpoint_setting = config.stream.checkpoint
        self.checkpoint_error = ""
        self._next_composer: tuple[Composer, Bar, bool] | None = None  # (composer, first bar, a reload?)
        self._composer_generation = 0
        self._composer_lock = threading.Lock()
        self._composing_since: float | None = None
        self._composer_failing = False
        self._composer_log = RateLimitedLog(log, 30.0)

        self.audio = AudioThread(config, clock=self.clock, ring=self.ring, sinks=self.sinks, schedule=self.schedule,
                                 counters=self.counters, position=self.position, seed=self.seed, stop=self._stop,
                                 request_stop=self.request_stop, composer_failing=lambda: self._composer_failing,
                                 duration=duration)

        # reload (SIGHUP)
        self._reload_thread: threading.Thread | None = None
        self._reload_again = False
        self._reload_generation = 0
        self._reload_started = 0.0
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_error = ""
        self.loaded_at = time.time()

        self.last_swap_wait_seconds = 0.0  # music played from the swap's decision to the new model's first bar
        self._threads: list[threading.Thread] = []
        self._ready = False
        self._intro = False  # fast start: the rule-based intro plays while the model loads
        self._last_status_line = 0.0
        self._last_watchdog = 0.0

    @property
    def config(self) -> Config:
        """The running config: the start's, with the [render] and [effects] a reload swapped in."""
        return self.audio.config

    # ------------------------------------------------------------------ building

    def _build_render(self, config: Config) -> tuple[Any, Any]:
        renderer = self._build_renderer(config)
        return renderer, self._build_effects(config)

    def _build_renderer(self, config: Config) -> Any:
        from streamer.render import BarRenderer

        return BarRenderer(config.render, seed=self.seed, stems=self.audio.stems)

    def _build_effects(self, config: Config) -> Any:
        from streamer.effects import EffectsChain

        return EffectsChain.from_settings(config.effects, self.sample_rate, self.seed)

    def _load_initial_composer(self) -> Composer:
        """The configured composer, validated like a reload (its first bar goes into the ring);
        if it cannot be used, the rule-based composer plays and /status says why."""
        try:
            composer = self.composer_loader(self.checkpoint_setting, self.seed)
            self._start_track(composer, self.position.current.next_track, self.position.current.after)
            first = check_bar(composer.next_bar())
        except Exception as exc:
            self.checkpoint_error = redact(str(exc))
            log.error("cannot use the configured composer (%s); playing the rule-based composer instead",
                      self.checkpoint_error)
            composer = RuleBasedComposer(self.seed)
            self._start_track(composer, self.position.current.next_track, self.position.current.after)
            first = composer.next_bar()
        self.ring.put(self._entry(first, composer))
        self.counters.bars_composed += 1
        return composer

    def _load_in_background(self) -> None:
        """Fast start: load the configured composer, then hand it over like a reload does."""
        try:
            composer = self.composer_loader(self.checkpoint_setting, self.seed)
            self._start_track(composer, self.position.current.next_track, self.position.current.after)
            first = check_bar(composer.next_bar())
        except Exception as exc:
            self.checkpoint_error = redact(str(exc))
            log.error("cannot use the configured composer (%s); the rule-based composer plays on",
                      self.checkpoint_error)
            self.ring.target_seconds = self.config.stream.buffer_seconds
            self._intro = False
            return
        log.info("composer loaded: %s (playing from the next bar boundary)", composer.id)
        with self._composer_lock:
            if self._next_composer is None:  # a SIGHUP reload that finished first wins
                self._next_composer = (composer, first, False)

    @staticmethod
    def _start_track(composer: Composer, number: int, after: tuple[str, float] | None) -> None:
        """Have `composer` begin track `number` after (key, tempo), if it can (test doubles may not)."""
        start_track = getattr(composer, "start_track", None)
        if start_track is not None:
            start_track(number, after)

    def _start_composer_thread(self) -> None:
        self._composer_generation += 1
        generation = self._composer_generation
        self._start_thread("composer", lambda: self._composer_loop(generation))

    def _build_sinks(self) -> list[Sink]:
        if self._given_sinks is not None:
            return list(self._given_sinks)
        built = build_outputs(self.config, self.key, self.state_dir, live=self.clock.paced)
        self.picture, self.audio.stems = built.picture, built.stems
        self.audio.now_title_file, self.audio.now_playing_file = built.now_title_file, built.now_playing_file
        return built.sinks

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        self._install_signals()
        if not pin_mmap_threshold():  # per-bar buffers would otherwise grow the heap track by track
            log.info("the C allocator keeps its own mmap threshold (no glibc mallopt)")
        try:
            self._start()
            self._main_loop()
        except _StopDuringStart:
            pass
        finally:
            self._shutdown()
        return self.exit_code

    def _abort_if_stopping(self) -> None:
        """SIGTERM/SIGINT while starting: stop now rather than after the start-up."""
        if any(signum in (signal.SIGTERM, signal.SIGINT) for signum in list(self._signals)):
            self.request_stop("signal during start-up")
            raise _StopDuringStart

    def _start(self) -> None:
        speed = f"{self.config.stream.speed:g}×" if self.clock.paced else "unpaced"
        log.info("chiplofi stream starting: %d Hz, seed %d, track %d, speed %s", self.sample_rate, self.seed,
                 self.position.current.next_track, speed)
        self.schedule.refresh()  # the program playing now shapes the first bars
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"stream.state_dir: cannot create {self.state_dir} ({exc.strerror or exc})") from exc
        self.position.save_if_changed()  # a new random seed is kept from the first start on
        if self.config.archive.enabled:
            archive = self.config.archive
            self.archive = TrackArchive(self.state_dir / "tracks", archive.keep_tracks,
                                        int(archive.keep_mb * 1_000_000))
            self.archive.start()
            self.audio.track_recorder = TrackRecorder(self.archive)
        self.sinks.extend(self._build_sinks())  # (the audio thread holds this list)
        # ffmpeg takes a while to start: let it, while the renderer and composer load. No audio
        # goes out before the buffer is prefilled (and ffmpeg starts with what is playing then).
        ffmpeg_sinks = [sink for sink in self.sinks if sink.kind == "ffmpeg"]
        for sink in ffmpeg_sinks:
            sink.start()
        self._abort_if_stopping()
        self.audio.renderer, self.audio.effects = self._build_render(self.config)
        if self.config.status.enabled:
            self.hub = LiveAudioHub(self.sample_rate, self.config.status.max_listeners)
            self.sinks.append(self.hub)
            host, port = parse_addr(self.config.status.addr)
            try:
                self.status_server = StatusServer(
                    (host, port), self, self.hub, self.config.status.max_clients, archive=self.archive,
                    thumbnail=self.picture.thumbnail if self.picture is not None else None)
            except OSError as exc:
                raise ConfigError(f"status.addr: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
            self.status_server.start()
            host, port = self.status_server.address
            log.info("status page at http://%s:%d/", host, port)
        self._abort_if_stopping()
        if self.config.stream.fast_start and self.clock.paced and uses_model(self.checkpoint_setting):
            # Loading a checkpoint takes about half a second (more on a busy machine): open with a
            # short rule-based bridge meanwhile, in a key following the last track's.
            self.composer = Bridge(self.seed, self.position.current.starts, self.position.current.after)
            self._intro = True
            self.ring.target_seconds = min(INTRO_SECONDS, self.config.stream.buffer_seconds)
            threading.Thread(target=self._load_in_background, name="loader", daemon=True).start()
            log.info("opening with %s while the configured composer loads", self.composer.id)
        else:
            self.composer = self._load_initial_composer()
            log.info("composer: %s", self.composer.id)
        self._start_composer_thread()
        self._abort_if_stopping()
        started = time.monotonic()
        target = self.ring.target_seconds
        filled = self.ring.wait_for_seconds(target - 1e-6, self.config.stream.prefill_timeout_seconds)
        log.info("buffer %s: %.1f s ahead after %.2f s", "prefilled" if filled else "partly filled",
                 self.ring.ahead_seconds, time.monotonic() - started)
        for sink in self.sinks:
            if sink not in ffmpeg_sinks:
                sink.start()
        self._start_thread("audio", self.audio.run)
        self._ready = True
        self.notifier.notify("READY=1")
        self.schedule.start()

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:  # a bug: stop with an error rather than play on half-dead
                log.exception("%s thread failed; stopping", name)
                self.exit_code = 1
                self.request_stop(f"{name} thread failed")
        return run

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ signals and main loop

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)
        self._wake.set()
        log.info("received %s", signal.Signals(signum).name)

    def _main_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            while self._signals:
                signum = self._signals.popleft()
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.request_stop(signal.Signals(signum).name)
                elif signum == signal.SIGHUP:
                    self._start_reload()
                elif signum == signal.SIGUSR1:
                    log.info("thread stacks:\n%s", thread_stacks())
            for request in self.schedule.take_requests():
                if request == RELOAD:
                    log.info("scheduled reload (schedule.reload_cron)")
                    self._start_reload()
                elif request == STATS:
                    log.info("%s", stats_line(self.status()))
            self._check_stuck_composer()
            self.position.save_if_changed()
            self._notify_systemd()

    def _notify_systemd(self) -> None:
        now = time.monotonic()
        interval = getattr(self.notifier, "watchdog_seconds", 5.0)
        # Pinging at half the timeout, one skipped ping already lets systemd restart us: an unhealthy
        # moment (an ffmpeg restarting) only delays the ping, which is tried again on every loop.
        if now - self._last_watchdog >= interval and self._watchdog_ok(now):
            self._last_watchdog = now
            self.notifier.notify("WATCHDOG=1")
        if now - self._last_status_line >= STATUS_LINE_SECONDS:
            self._last_status_line = now
            self.notifier.notify(status_line(self.summary()))

    def _watchdog_ok(self, now: float) -> bool:
        """Healthy, no composer call outlasting the buffer, and at least one output working."""
        healthy, _ = self.health()
        composing = self._composing_since
        # The buffer drains at the clock's speed (unpaced, it is counted as if in real time).
        buffer_lasts = self.config.stream.buffer_seconds / (self.clock.speed if self.clock.paced else 1.0)
        stalled = composing is not None and now - composing > buffer_lasts
        return healthy and not stalled and any(s.healthy for s in self._vital_outputs())

    def summary(self) -> str:
        playing = self.audio.playing
        bar = playing.entry.bar if playing else None
        what = f"{track_title(bar.track_id)!r} {bar.key} {bar.tempo_bpm:.0f} BPM" if bar else "starting"
        outputs = [s.snapshot() for s in self._output_sinks()]
        ok = sum(1 for s in outputs if s.healthy)
        return (f"playing {what}; buffer {self.ring.ahead_seconds:.0f} s; outputs {ok}/{len(outputs)} ok; "
                f"underruns {self.counters.underruns}")

    def _output_sinks(self) -> list[Sink]:
        return [s for s in self.sinks if s is not self.hub] or list(self.sinks)

    def _vital_outputs(self) -> list[SinkSnapshot]:
        """The outputs health is judged by: the RTMP ones if there are any (a recording that still
        works must not make a dead ingest look healthy), else every output."""
        outputs = [s.snapshot() for s in self._output_sinks()]
        return [s for s in outputs if s.network] or outputs

    def _shutdown(self) -> None:
        self.request_stop(self.stop_reason or "shutting down")
        self.schedule.stop()
        self.notifier.notify("STOPPING=1")
        started = time.monotonic()
        for thread in self._threads:
            thread.join(0.5)  # the composer may be inside a slow model call: it is a daemon thread
        budget = DRAIN_BUDGET_SECONDS if self.audio.duration_reached else STOP_BUDGET_SECONDS
        stoppers = [threading.Thread(target=sink.stop, args=(budget - 0.5,), daemon=True) for sink in self.sinks]
        if self.archive is not None:
            if self.audio.track_recorder is not None:
                self.audio.track_recorder.finish()  # the track playing when the stream stopped
            stoppers.append(threading.Thread(target=self.archive.stop, args=(budget - 0.5,), daemon=True))
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(max(0.1, budget - (time.monotonic() - started)))
        if self.status_server is not None:
            self.status_server.stop()
        if self.audio.renderer is not None:
            self.audio.renderer.close()
        self.position.save_if_changed()
        log.info("stopped (%s) after %.1f s of audio, in %.2f s", self.stop_reason or "done",
                 self.clock.position_seconds, time.monotonic() - started)

    # ------------------------------------------------------------------ composer thread

    def _composer_loop(self, generation: int) -> None:
        wait = 0.25
        while not self._stop.is_set() and generation == self._composer_generation:
            with self._composer_lock:
                swap = self._next_composer
            if swap is not None and self._swap_in(swap):
                continue
            # While a swap waits for its boundary the old composer composes on as usual: the
            # boundary is queued a whole buffer before it plays, in time to cut there.
            if not self.ring.wait_for_room(0.25):
                continue
            composer = self.composer
            assert composer is not None
            self._composing_since = time.monotonic()
            try:
                self.schedule.tune_composer(composer)
                bar = check_bar(composer.next_bar())
            except Exception as exc:  # the model failing must not end the stream: the bed covers
                self._composer_failing = True
                self.counters.composer_errors += 1
                self._composer_log.warning("composer %s failed (%s: %s); retrying in %.1f s", composer.id,
                                           type(exc).__name__, exc, wait)
                self._stop.wait(wait)
                wait = min(wait * 2, 5.0)
                continue
            finally:
                if generation == self._composer_generation:
                    self._composing_since = None
            if generation != self._composer_generation:
                log.info("a composer call that was given up on returned; its bar is dropped")
                return
            wait = 0.25
            self._composer_failing = False
            self.ring.put(self._entry(bar, composer))
            self.counters.bars_composed += 1

    def _entry(self, bar: Bar, composer: Composer) -> BarEntry:
        return BarEntry(bar, composer.id, getattr(composer, "seed", self.seed))

    def _check_stuck_composer(self) -> None:
        """A swap waits on a composer call that does not return: give up on that thread."""
        since = self._composing_since
        if self._next_composer is None or since is None or self._stop.is_set():
            return
        if time.monotonic() - since > STUCK_COMPOSER_SECONDS:
            log.warning("composer %s has been busy %.0f s; a new composer thread takes over",
                        self.composer.id if self.composer else "?", time.monotonic() - since)
            self._composing_since = None
            self._composer_failing = True  # a pending swap does not wait for its boundary from it
            self._start_composer_thread()

    def _swap_unit(self, is_reload: bool) -> str:
        """Where a composer takes over: a reload at `stream.swap_at`; the model replacing the
        opening bridge at the next bar."""
        return self.config.stream.swap_at if is_reload and not self._intro else "bar"

    def _swap_in(self, swap: tuple[Composer, Bar, bool]) -> bool:
        """Composer thread: put `swap`'s composer in place of the playing one at the first queued
        bar that begins a bar/section/track, the new model beginning the next track number in a
        key related to the bar before. False: no boundary queued yet (or it was taken meanwhile)."""
        composer, first, is_reload = swap
        unit = self._swap_unit(is_reload)
        found = self.ring.find_start(lambda before, bar: starts_unit(before, bar, unit))
        if found is None:
            if not (unit == "bar" or self._composer_failing):
                return False
            found = (None, self.ring.last_queued())  # append: nothing queued begins a unit, or the old composer fails
        cut, before = found
        if getattr(composer, "start_track", None) is not None:
            number = self.position.current.next_track
            if before is not None and before.track_number >= 0:
                number = max(number, before.track_number + 1)
            after = (before.key, before.tempo_bpm) if before is not None and before.key else self.position.current.after
            self._start_track(composer, number, after)
            try:
                first = check_bar(composer.next_bar())
            except Exception as exc:  # validated a moment ago; if it fails now the old one plays on
                with self._composer_lock:
                    if self._next_composer is swap:
                        self._next_composer = None
                self.reload_failures += 1
                self.last_reload_error = redact(f"{type(exc).__name__}: {exc}")
                log.warning("new composer %s failed its first bar (%s); keeping %s", composer.id,
                            self.last_reload_error, self.composer.id if self.composer else "none")
                return False
        with self._composer_lock:
            if self._next_composer is not swap:
                return False  # a newer reload replaced it while its first bar was composed
            cut_result = self.ring.cut_before(cut, self._entry(first, composer))
            if cut_result is None:
                return False  # the boundary bar began playing meanwhile: the next boundary then
            self._next_composer = None
        dropped, ahead = cut_result
        old = self.composer.id if self.composer else "none"
        self.composer = composer
        self.reloads += int(is_reload)
        self.loaded_at = time.time()
        self.checkpoint_error = ""
        self.ring.target_seconds = self.config.stream.buffer_seconds  # the intro is over
        self._intro = False
        self.counters.bars_dropped_on_swap += dropped
        self.counters.bars_composed += 1
        self.counters.swaps += 1
        self.last_swap_wait_seconds = round(ahead + self.audio.pending_seconds, 3)
        log.info("composer swapped at the next %s boundary, %.1f s of music ahead: %s → %s, from %s "
                 "(%d queued bars of %s dropped)", unit, self.last_swap_wait_seconds, old, composer.id,
                 first.track_id or "its first bar", dropped, old)
        return True

    # ------------------------------------------------------------------ reload (SIGHUP)

    def _start_reload(self) -> None:
        if self._reload_thread is not None and self._reload_thread.is_alive():
            busy = time.monotonic() - self._reload_started
            if busy < RELOAD_TIMEOUT_SECONDS:
                self._reload_again = True
                log.info("reload already running; another one follows it")
                return
            self.reload_failures += 1
            self.last_reload_error = f"a reload did not finish in {busy:.0f} s; given up on"
            log.warning("reload running for %.0f s; giving up on it and reloading again", busy)
        self._reload_generation += 1
        self._reload_started = time.monotonic()
        generation = self._reload_generation
        self._reload_thread = threading.Thread(target=lambda: self._reload_worker(generation), name="reload",
                                               daemon=True)
        self._reload_thread.start()

    def _reload_worker(self, generation: int) -> None:
        while generation == self._reload_generation:
            self._reload_again = False
            self._reload_once(generation)
            if not self._reload_again or self._stop.is_set():
                return

    def _reload_once(self, generation: int) -> None:
        current = self.composer.id if self.composer else "none"
        try:
            if self.config_path is not None:
                config = load_stream_config(self.config_path, self.overrides, self.environ)
            else:
                config = self.config
            setting = config.stream.checkpoint
            if config.render.sample_rate != self.sample_rate:
                # The clock, the sinks and ffmpeg run at the rate the daemon started with; a
                # renderer at another rate would play every bar at the wrong pitch and speed.
                log.warning("render.sample_rate = %d takes effect after a restart; %d Hz plays on",
                            config.render.sample_rate, self.sample_rate)
                config = dataclasses.replace(config, render=dataclasses.replace(config.render,
                                                                                  sample_rate=self.sample_rate))
            log.info("reloading: %s", setting or "the default checkpoint")
            # The stream's seed: a new composer continues the track numbering (see _swap_in), so
            # its tracks get new numbers, hence new ids and new music.
            composer = self.composer_loader(setting, self.seed)
            self._start_track(composer, self.position.current.next_track, self.position.current.after)
            first = check_bar(composer.next_bar())
            # Only what changed is built (against the running settings, so a later reload that
            # supersedes a pending swap still carries everything that differs).
            renderer = effects = None
            if config.render != self.config.render:
                renderer = self._build_renderer(config)
                renderer.render_bar(first)  # proves the SoundFont plays
                renderer.reset()
            if config.effects != self.config.effects:
                effects = self._build_effects(config)
            render_swap = RenderSwap(renderer, effects, config) if renderer is not None or effects is not None else None
            self._warn_restart_needed(config)
        except Exception as exc:  # whatever is wrong with the new files, the old model plays on
            if generation != self._reload_generation:
                return  # given up on already (and counted then)
            self.reload_failures += 1
            self.last_reload_error = redact(f"{type(exc).__name__}: {exc}")
            log.warning("reload failed, keeping %s: %s", current, self.last_reload_error)
            return
        # The same model (and nothing wrong with the playing one): it plays on, with its queued
        # bars; a swap still waiting (to another model) is called off.
        unchanged = composer.id == current and not self.checkpoint_error and not self._intro
        with self._composer_lock:
            if generation != self._reload_generation:
                log.info("a reload that was given up on finished; its result is dropped")
                return
            if unchanged:
                self._next_composer = None
            else:
                self._next_composer = (composer, first, True)
        if render_swap is not None:
            self.audio.offer_render_swap(render_swap)
        self.checkpoint_setting = setting
        self.last_reload_error = ""
        self.schedule.update(config.schedule)
        if unchanged:
            self.reloads += 1
            log.info("reload validated: %s is the model playing; it plays on%s", composer.id,
                     " (the changed settings apply from the next bar)" if render_swap else "")
        else:
            log.info("reload validated: %s (taking over at the next %s boundary)", composer.id,
                     self._swap_unit(True))

    def _warn_restart_needed(self, config: Config) -> None:
        changed = [name for name in ("stream", "sinks", "video", "status", "archive")
                   if getattr(config, name) != getattr(self.config, name)
                   and not (name == "stream" and dataclasses.replace(config.stream, checkpoint="")
                            == dataclasses.replace(self.config.stream, checkpoint=""))]
        if changed:
            log.warning("changes to [%s] take effect after a restart", "], [".join(changed))

    # ------------------------------------------------------------------ status (StatusProvider)

    def _bar_dict(self, entry: BarEntry, playing: bool = False) -> dict[str, Any]:
        bar = entry.bar
        return {"track_id": bar.track_id, "title": track_title(bar.track_id), "bar": bar.bar_index,
                "beats": bar.beats, "tempo_bpm": bar.tempo_bpm, "key": bar.key, "chord": bar.chord,
                "section": bar.section, "composer_id": entry.composer_id, "playing": playing,
                "notes": [{"voice": n.voice, "pitch": n.pitch, "start": n.start, "duration": n.duration,
                           "velocity": n.velocity} for n in bar.notes]}

    def recent_bars(self) -> list[dict[str, Any]]:
        bars = [self._bar_dict(marker.entry) for marker in list(self.audio.recent)]
        playing = self.audio.playing
        if playing is not None:
            bars.append(self._bar_dict(playing.entry, playing=True))
        upcoming = [m.entry for m in list(self.audio.markers)[:UPCOMING_BARS]]
        upcoming += self.ring.peek_all()[:max(0, UPCOMING_BARS - len(upcoming))]
        bars += [self._bar_dict(entry) for entry in upcoming]
        return bars

    def status(self) -> dict[str, Any]:
        playing = self.audio.playing
        now_playing: dict[str, Any] = {"track_id": "", "title": "", "bar": 0, "section": "", "key": "",
                                       "chord": "", "tempo_bpm": 0.0, "composer_id": "", "fallback": False}
        if playing is not None:
            bar = playing.entry.bar
            now_playing = {"track_id": bar.track_id, "title": track_title(bar.track_id), "bar": bar.bar_index,
                           "section": bar.section, "key": bar.key, "chord": bar.chord, "tempo_bpm": bar.tempo_bpm,
                           "composer_id": playing.entry.composer_id, "fallback": playing.fallback}
        pending = self.audio.pending_seconds
        composing = self._composing_since
        counters = dataclasses.asdict(self.counters)
        counters["archive_errors"] = self.archive.errors if self.archive is not None else 0
        counters["nonfinite_samples"] += int(getattr(self.audio.effects, "nonfinite_samples", 0) or 0)
        return {
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "state": "stopping" if self._stop.is_set() else ("running" if self._ready else "starting"),
            "sample_rate": self.sample_rate,
            "now_playing": now_playing,
            "buffer": {"ahead_seconds": round(self.ring.ahead_seconds + pending, 3),
                       "target_seconds": self.ring.target_seconds, "bars": len(self.ring)},
            "clock": {"position_seconds": round(self.clock.position_seconds, 3),
                      "speed": self.clock.speed, "advancing": self._clock_advancing(),
                      "lag_seconds": round(self.clock.lag_seconds(), 3), "resyncs": self.clock.resyncs},
            "checkpoint": {"id": self.composer.id if self.composer else "", "setting": self.checkpoint_setting,
                           "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                           "reloads": self.reloads, "reload_failures": self.reload_failures,
                           "last_reload_error": self.last_reload_error, "error": self.checkpoint_error,
                           "reloading": bool(self._reload_thread and self._reload_thread.is_alive()),
                           "swap_at": self.config.stream.swap_at, "swap_pending": self._next_composer is not None,
                           "last_swap_wait_seconds": self.last_swap_wait_seconds},
            "position": {"seed": self.position.current.seed, "next_track": self.position.current.next_track,
                         "starts": self.position.current.starts, "kept": self.position.keeps},
            "composer": {"busy_seconds": round(time.monotonic() - composing, 3) if composing else 0.0},
            "sinks": [dataclasses.asdict(sink.snapshot()) for sink in self.sinks],
            "archive": self.archive.snapshot() if self.archive is not None else {"enabled": False},
            "schedule": self.schedule.status(),
            "video": self._video_status(),
            "counters": counters,
        }

    def _video_status(self) -> dict[str, Any]:
        """The picture's look, and how old the thumbnail of the encoded video is (None: none yet)."""
        if self.picture is None:
            return {"enabled": False}
        age = None
        if self.picture.thumbnail is not None:
            with contextlib.suppress(OSError):
                age = round(max(0.0, time.time() - os.stat(self.picture.thumbnail).st_mtime), 1)
        video = self.config.video
        return {"enabled": True, "background": video.background, "layout": list(video.layout),
                "thumbnail_age_seconds": age}

    def _clock_advancing(self) -> bool:
        window = max(2.0, 4 * BLOCK_FRAMES / self.sample_rate / max(self.clock.speed, 1e-9)) if self.clock.paced \
            else UNPACED_BAR_WAIT_SECONDS + 1.0
        return self.clock.advancing(window)

    def health(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "starting"
        if self._stop.is_set():
            return False, "stopping"
        if not self._clock_advancing():
            return False, "clock not advancing"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        healthy, reason = self.health()
        if not healthy:
            return False, reason
        if self._intro:
            return False, "the configured composer is still loading"
        ahead = self.ring.ahead_seconds + self.audio.pending_seconds
        if ahead < self.config.stream.ready_seconds:
            return False, f"buffer {ahead:.1f} s ahead, below {self.config.stream.ready_seconds:g} s"
        connected = [s.name for s in self._vital_outputs() if s.connected]
        if not connected:
            return False, "no output connected"
        return True, "ready: " + ", ".join(redact(name) for name in connected)


def run_stream(config_path: str | Path | None, overrides: CliOverrides, *, duration: float | None = None,
               environ: Mapping[str, str] | None = None) -> int:
    """`chiplofi stream`: load and check the config, then run until stopped."""
    environ = dict(os.environ if environ is None else environ)
    config = load_stream_config(config_path, overrides, environ)
    daemon = Daemon(config, config_path=config_path, overrides=overrides, environ=environ, duration=duration)
    return daemon.run()


__all__ = ["Daemon", "run_stream"]
