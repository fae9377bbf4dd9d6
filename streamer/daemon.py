"""`chiplofi stream`: the 24/7 daemon, and the only place where the pipeline is wired together.

    composer thread ──► BarRing (≥ buffer_seconds ahead) ──► audio thread: render → effects →
    sanitise → SampleClock (paces blocks) ──► every sink's own queue ──► ffmpeg / file / speakers /
    null / the status page's live player

Each part lives in a file named after it: the composer thread (streamer.composer_thread), the audio
thread and its never-silent fallback (streamer.audio_thread, streamer.fallback), the SIGHUP reload
(streamer.reload), the outputs and the stream key (streamer.outputs), the config it runs with
(streamer.stream_config), what /status reports (streamer.status_snapshot). This file builds them,
starts them in order (`_start`: state directory, archive, outputs, renderer, status server,
composer, prefill, audio) and stops them in reverse (`_shutdown`).

- Signals only set flags (and log one line); the main thread acts on them: SIGHUP starts a
  background reload; SIGTERM/SIGINT stop everything within 5 s with ffmpeg ending its files;
  SIGUSR1 logs every thread's stack.
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
from streamer.audio_thread import AudioThread, Effects, Renderer
from streamer.clock import SampleClock
from streamer.composer import Composer, load_composer
from streamer.composer_thread import ComposerThread
from streamer.config import Config, EffectsSettings, RenderSettings
from streamer.errors import ConfigError
from streamer.logs import install_redaction, thread_stacks
from streamer.memory import pin_mmap_threshold
from streamer.notify import Notifier, SystemdNotifier, status_line
from streamer.outputs import build_outputs, read_stream_key, state_directory
from streamer.position import POSITION_FILE, PositionKeeper
from streamer.reload import Reloader
from streamer.ringbuffer import BarRing
from streamer.schedule import RELOAD, STATS, Schedule
from streamer.sinks import Sink
from streamer.status import LiveAudioHub, StatusServer, parse_addr
from streamer.status_snapshot import Counters, StreamStatus, stats_line
from streamer.stream_config import CliOverrides, load_stream_config
from streamer.video_files import VideoFiles

log = logging.getLogger(__name__)

STOP_BUDGET_SECONDS = 4.0  # for the sinks on a signal; the whole stop stays under 5 s
DRAIN_BUDGET_SECONDS = 60.0  # for the sinks when --duration ends the run: every file is finished
STATUS_LINE_SECONDS = 10.0


def fluidsynth_renderer(settings: RenderSettings, seed: int, stems: bool) -> Renderer:
    from streamer.render import BarRenderer  # FluidSynth loads when the daemon starts, not on import

    return BarRenderer(settings, seed=seed, stems=stems)


def effects_chain(settings: EffectsSettings, sample_rate: int, seed: int) -> Effects:
    from streamer.effects import EffectsChain

    return EffectsChain.from_settings(settings, sample_rate, seed)


class _StopDuringStart(Exception):
    pass


class Daemon:
    """Build with a checked `Config`; `run()` blocks until stopped and returns the exit code.

    Tests give doubles for the boundaries: `sinks`, `notifier`, `composer_loader`, and the clock,
    renderer and effects factories (the real ones by default)."""

    def __init__(self, config: Config, *, config_path: str | Path | None = None,
                 overrides: CliOverrides | None = None, environ: Mapping[str, str] | None = None,
                 duration: float | None = None, notifier: Notifier | None = None,
                 composer_loader: Callable[[str, int], Composer] = load_composer,
                 sinks: list[Sink] | None = None,
                 clock_factory: Callable[[int, float], SampleClock] = SampleClock,
                 renderer_factory: Callable[[RenderSettings, int, bool], Renderer] = fluidsynth_renderer,
                 effects_factory: Callable[[EffectsSettings, int, int], Effects] = effects_chain) -> None:
        overrides = overrides if overrides is not None else CliOverrides()
        self.environ = dict(os.environ if environ is None else environ)
        self.notifier: Notifier = notifier if notifier is not None else SystemdNotifier(self.environ)
        self._given_sinks = sinks
        self.renderer_factory, self.effects_factory = renderer_factory, effects_factory
        self.key = read_stream_key(config, self.environ)
        install_redaction([self.key] if self.key else [])
        self.sample_rate = config.render.sample_rate
        self.state_dir = state_directory(config, self.environ)
        # The radio's musical position: continued from the state directory, or (--seed) a
        # reproducible run from track 0 that leaves the kept position alone.
        self.position = PositionKeeper(self.state_dir / POSITION_FILE, config.stream.seed, overrides.seed)
        self.seed = self.position.current.seed
        self.exit_code, self.stop_reason, self.started = 0, "", time.monotonic()
        self.ready = False
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._signals: deque[int] = deque()
        self._threads: list[threading.Thread] = []
        self._last_status_line = self._last_watchdog = 0.0

        self.schedule = Schedule(config.schedule, wake=self._wake.set)
        self.ring = BarRing(config.stream.buffer_seconds)
        self.clock = clock_factory(self.sample_rate, config.stream.speed)
        self.counters = Counters()
        self.sinks: list[Sink] = []
        self.hub: LiveAudioHub | None = None
        self.status_server: StatusServer | None = None
        self.picture: VideoFiles | None = None
        self.archive: TrackArchive | None = None
        self.audio = AudioThread(config, clock=self.clock, ring=self.ring, sinks=self.sinks, schedule=self.schedule,
                                 counters=self.counters, position=self.position, seed=self.seed, stop=self.stopping,
                                 request_stop=self.request_stop, composer_failing=lambda: self.composers.failing,
                                 duration=duration)
        loader = self.schedule.tuned_loader(composer_loader)  # the mood before the first bar
        self.composers = ComposerThread(config.stream, ring=self.ring, schedule=self.schedule,
                                        counters=self.counters, position=self.position, seed=self.seed,
                                        loader=loader, stop=self.stopping, start_thread=self._start_thread,
                                        pending_seconds=lambda: self.audio.pending_seconds)
        self.reloader = Reloader(config_path=config_path, overrides=overrides, environ=self.environ, loader=loader,
                                 composers=self.composers, audio=self.audio, build_renderer=self._build_renderer,
                                 build_effects=self._build_effects, stop=self.stopping)
        self.report = StreamStatus(self)

    @property
    def config(self) -> Config:
        """The running config: the start's, with the [render] and [effects] a reload swapped in."""
        return self.audio.config

    def _build_renderer(self, config: Config) -> Renderer:
        return self.renderer_factory(config.render, self.seed, self.audio.stems)

    def _build_effects(self, config: Config) -> Effects:
        return self.effects_factory(config.effects, self.sample_rate, self.seed)

    # ------------------------------------------------------------------ start, in order

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
        config, audio = self.config, self.audio
        log.info("chiplofi stream starting: %d Hz, seed %d, track %d, speed %s", self.sample_rate, self.seed,
                 self.position.current.next_track, f"{config.stream.speed:g}×" if self.clock.paced else "unpaced")
        self.schedule.refresh()  # the program playing now shapes the first bars
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"stream.state_dir: cannot create {self.state_dir} ({exc.strerror or exc})") from exc
        self.position.save_if_changed()  # a new random seed is kept from the first start on
        if config.archive.enabled:
            self.archive = TrackArchive(self.state_dir / "tracks", config.archive.keep_tracks,
                                        int(config.archive.keep_mb * 1_000_000))
            self.archive.start()
            audio.track_recorder = TrackRecorder(self.archive)
        if self._given_sinks is not None:
            self.sinks.extend(self._given_sinks)
        else:
            built = build_outputs(config, self.key, self.state_dir, live=self.clock.paced)
            self.sinks.extend(built.sinks)  # (the audio thread holds this list)
            self.picture, audio.stems = built.picture, built.stems
            audio.now_title_file, audio.now_playing_file = built.now_title_file, built.now_playing_file
        # ffmpeg takes a while to start: let it, while the renderer and composer load. No audio
        # goes out before the buffer is prefilled (and ffmpeg starts with what is playing then).
        ffmpeg_sinks = [sink for sink in self.sinks if sink.kind == "ffmpeg"]
        for sink in ffmpeg_sinks:
            sink.start()
        self._abort_if_stopping()
        audio.renderer, audio.effects = self._build_renderer(config), self._build_effects(config)
        if config.status.enabled:
            self._start_status_server(config)
        self._abort_if_stopping()
        self.composers.open(paced=self.clock.paced)
        self.composers.start()
        self._abort_if_stopping()
        started = time.monotonic()
        filled = self.ring.wait_for_seconds(self.ring.target_seconds - 1e-6, config.stream.prefill_timeout_seconds)
        log.info("buffer %s: %.1f s ahead after %.2f s", "prefilled" if filled else "partly filled",
                 self.ring.ahead_seconds, time.monotonic() - started)
        for sink in self.sinks:
            if sink not in ffmpeg_sinks:
                sink.start()
        self._start_thread("audio", audio.run)
        self.ready = True
        self.notifier.notify("READY=1")
        self.schedule.start()

    def _start_status_server(self, config: Config) -> None:
        self.hub = LiveAudioHub(self.sample_rate, config.status.max_listeners)
        self.sinks.append(self.hub)
        host, port = parse_addr(config.status.addr)
        try:
            self.status_server = StatusServer(
                (host, port), self.report, self.hub, config.status.max_clients, archive=self.archive,
                thumbnail=self.picture.thumbnail if self.picture is not None else None)
        except OSError as exc:
            raise ConfigError(f"status.addr: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
        self.status_server.start()
        host, port = self.status_server.address
        log.info("status page at http://%s:%d/", host, port)

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception:  # a bug: stop with an error rather than play on half-dead
                log.exception("%s thread failed; stopping", name)
                self.exit_code = 1
                self.request_stop(f"{name} thread failed")
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def request_stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()
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
        while not self.stopping.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            while self._signals:
                signum = self._signals.popleft()
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.request_stop(signal.Signals(signum).name)
                elif signum == signal.SIGHUP:
                    self.reloader.start()
                elif signum == signal.SIGUSR1:
                    log.info("thread stacks:\n%s", thread_stacks())
            for request in self.schedule.take_requests():
                if request == RELOAD:
                    log.info("scheduled reload (schedule.reload_cron)")
                    self.reloader.start()
                elif request == STATS:
                    log.info("%s", stats_line(self.report.snapshot()))
            self.composers.check_stuck()
            self.position.save_if_changed()
            self._notify_systemd()

    def _notify_systemd(self) -> None:
        now = time.monotonic()
        interval = getattr(self.notifier, "watchdog_seconds", 5.0)
        # Pinging at half the timeout, one skipped ping already lets systemd restart us: an unhealthy
        # moment (an ffmpeg restarting) only delays the ping, which is tried again on every loop.
        if now - self._last_watchdog >= interval and self.report.watchdog_ok(now):
            self._last_watchdog = now
            self.notifier.notify("WATCHDOG=1")
        if now - self._last_status_line >= STATUS_LINE_SECONDS:
            self._last_status_line = now
            self.notifier.notify(status_line(self.report.summary()))

    # ------------------------------------------------------------------ stop, in reverse

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

    # ------------------------------------------------------------------ status (see streamer.status_snapshot)

    def status(self) -> dict[str, Any]:
        return self.report.status()

    def health(self) -> tuple[bool, str]:
        return self.report.health()

    def readiness(self) -> tuple[bool, str]:
        return self.report.readiness()


def run_stream(config_path: str | Path | None, overrides: CliOverrides, *, duration: float | None = None,
               environ: Mapping[str, str] | None = None) -> int:
    """`chiplofi stream`: load and check the config, then run until stopped."""
    environ = dict(os.environ if environ is None else environ)
    config = load_stream_config(config_path, overrides, environ)
    daemon = Daemon(config, config_path=config_path, overrides=overrides, environ=environ, duration=duration)
    return daemon.run()


__all__ = ["Daemon", "run_stream"]
