"""`chiplofi stream`: the 24/7 daemon, and the only place where the pipeline is wired together.

    composer thread ──► BarRing (≥ buffer_seconds ahead) ──► audio thread: render → effects →
    sanitise → SampleClock (paces blocks) ──► every sink's own queue ──► ffmpeg / file / speakers /
    null / the status page's live player

Each part lives in a file named after it: streamer.composer_thread, streamer.audio_thread (with the
never-silent streamer.fallback), streamer.reload (SIGHUP), streamer.outputs (the sinks, the stream key),
streamer.stream_config, streamer.status_snapshot (/status), streamer.position (kept across restarts),
streamer.schedule (moods, timed reloads), streamer.signals. Here they are built, started in order
(`_start`: state directory, archive, outputs, renderer and effects, status server, composer, prefill,
audio, READY=1) and stopped in reverse (`_shutdown`: within 5 s on a signal, ffmpeg ending its files).
The main loop acts on signals and the schedule's requests, and pings systemd.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from streamer.archive import TrackArchive, TrackRecorder
from streamer.audio_thread import AudioThread, Effects, Renderer, effects_chain, fluidsynth_renderer
from streamer.clock import SampleClock
from streamer.composer import BarSource, load_composer
from streamer.composer_thread import ComposerThread
from streamer.config import Config, EffectsSettings, RenderSettings
from streamer.logs import install_redaction, thread_stacks
from streamer.memory import pin_mmap_threshold
from streamer.notify import Notifier, SystemdNotifier, SystemdReporter
from streamer.outputs import Outputs, build_outputs, create_state_directory, read_stream_key, state_directory
from streamer.position import POSITION_FILE, PositionKeeper
from streamer.reload import Reloader
from streamer.ringbuffer import BarRing
from streamer.schedule import RELOAD, STATS, Schedule
from streamer.signals import STOPS, SignalInbox
from streamer.sinks import Sink, Stoppable, stop_together
from streamer.status import LiveAudioHub, StatusServer, serve_status
from streamer.status_snapshot import Counters, StreamStatus, stats_line
from streamer.stream_config import CliOverrides
from streamer.video_files import VideoFiles

log = logging.getLogger(__name__)

STOP_BUDGET_SECONDS = 4.0  # for the sinks on a signal; the whole stop stays under 5 s
DRAIN_BUDGET_SECONDS = 60.0  # for the sinks when --duration ends the run: every file is finished


class _StopDuringStart(Exception):
    pass


class Daemon:
    """Build with a checked `Config`; `run()` blocks until stopped and returns the exit code.

    Tests give doubles for the boundaries: `sinks`, `notifier`, `composer_loader`, and the clock,
    renderer and effects factories (the real ones by default)."""

    def __init__(self, config: Config, *, config_path: str | Path | None = None,
                 overrides: CliOverrides | None = None, environ: Mapping[str, str] | None = None,
                 duration: float | None = None, notifier: Notifier | None = None,
                 composer_loader: Callable[[str, int], BarSource] = load_composer,
                 sinks: list[Sink] | None = None,
                 clock_factory: Callable[[int, float], SampleClock] = SampleClock,
                 renderer_factory: Callable[[RenderSettings, int, bool], Renderer] = fluidsynth_renderer,
                 effects_factory: Callable[[EffectsSettings, int, int], Effects] = effects_chain) -> None:
        overrides = overrides if overrides is not None else CliOverrides()
        self.environ = dict(os.environ if environ is None else environ)
        self.notifier: Notifier = notifier if notifier is not None else SystemdNotifier(self.environ)
        self._given_sinks = sinks
        self.key = read_stream_key(config, self.environ)
        install_redaction([self.key] if self.key else [])
        self.sample_rate = config.render.sample_rate
        self.state_dir = state_directory(config, self.environ)
        # continued from the state directory, or (--seed) a reproducible run that leaves it alone
        self.position = PositionKeeper(self.state_dir / POSITION_FILE, config.stream.seed, overrides.seed)
        self.seed = self.position.current.seed
        self.exit_code, self.stop_reason, self.started, self.ready = 0, "", time.monotonic(), False
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self.signals = SignalInbox()
        self._threads: list[threading.Thread] = []
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
                                 duration=duration, renderer_factory=renderer_factory, effects_factory=effects_factory)
        loader = self.schedule.tuned_loader(composer_loader)  # the mood before the first bar
        self.composers = ComposerThread(config.stream, ring=self.ring, schedule=self.schedule,
                                        counters=self.counters, position=self.position, seed=self.seed,
                                        loader=loader, stop=self.stopping, start_thread=self._start_thread,
                                        pending_seconds=lambda: self.audio.pending_seconds)
        self.reloader = Reloader(config_path=config_path, overrides=overrides, environ=self.environ, loader=loader,
                                 composers=self.composers, audio=self.audio, schedule=self.schedule,
                                 position=self.position, seed=self.seed, stop=self.stopping)
        self.report = StreamStatus(self)
        self.systemd = SystemdReporter(self.notifier, self.report.watchdog_ok, self.report.summary)

    @property
    def config(self) -> Config:
        """The running config: the start's, with the [render] and [effects] a reload swapped in."""
        return self.audio.config

    # ------------------------------------------------------------------ start, in order

    def run(self) -> int:
        self.signals.install()
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
        if self.signals.stop_asked():
            self.request_stop("signal during start-up")
            raise _StopDuringStart

    def _start(self) -> None:
        config, audio = self.config, self.audio
        log.info("chiplofi stream starting: %d Hz, seed %d, track %d, speed %s", self.sample_rate, self.seed,
                 self.position.current.next_track, f"{config.stream.speed:g}×" if self.clock.paced else "unpaced")
        self.schedule.refresh()  # the program playing now shapes the first bars
        create_state_directory(self.state_dir)
        self.position.save_if_changed()  # a new random seed is kept from the first start on
        if config.archive.enabled:
            self.archive = TrackArchive.start_in(self.state_dir / "tracks", config.archive)
            audio.track_recorder = TrackRecorder(self.archive)
        built = (build_outputs(config, self.key, self.state_dir, live=self.clock.paced) if self._given_sinks is None
                 else Outputs(list(self._given_sinks)))
        self.sinks.extend(built.sinks)  # (the audio thread holds this list)
        self.picture, audio.stems = built.picture, built.stems
        audio.now_title_file, audio.now_playing_file = built.now_title_file, built.now_playing_file
        # ffmpeg is slow to start: it starts now, while the renderer and composer load; the rest
        # after the prefill. No audio goes out before (ffmpeg starts with what plays then).
        ffmpeg_sinks = [sink for sink in self.sinks if sink.kind == "ffmpeg"]
        for sink in ffmpeg_sinks:
            sink.start()
        self._abort_if_stopping()
        audio.renderer, audio.effects = audio.build_renderer(config), audio.build_effects(config)
        if config.status.enabled:
            self.status_server, self.hub = serve_status(
                config.status, self.report, self.sample_rate, archive=self.archive,
                thumbnail=self.picture.thumbnail if self.picture is not None else None)
            self.sinks.append(self.hub)
        self._abort_if_stopping()
        self.composers.open(paced=self.clock.paced)
        self.composers.start()
        self._abort_if_stopping()
        self.composers.prefill(config.stream.prefill_timeout_seconds)
        for sink in self.sinks:
            if sink not in ffmpeg_sinks:
                sink.start()
        self._start_thread("audio", audio.run)
        self.ready = True
        self.notifier.notify("READY=1")
        self.schedule.start()

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

    # ------------------------------------------------------------------ the main loop

    def _main_loop(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            for signum in self.signals.take():
                if signum in STOPS:
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
            self.systemd.report()

    # ------------------------------------------------------------------ stop, in reverse

    def _shutdown(self) -> None:
        self.request_stop(self.stop_reason or "shutting down")
        self.schedule.stop()
        self.notifier.notify("STOPPING=1")
        started = time.monotonic()
        for thread in self._threads:
            thread.join(0.5)  # the composer may be inside a slow model call: it is a daemon thread
        if self.audio.track_recorder is not None:
            self.audio.track_recorder.finish()  # the track playing when the stream stopped
        parts: list[Stoppable] = [*self.sinks, *([self.archive] if self.archive is not None else [])]
        stop_together(parts, DRAIN_BUDGET_SECONDS if self.audio.duration_reached else STOP_BUDGET_SECONDS, started)
        if self.status_server is not None:
            self.status_server.stop()
        if self.audio.renderer is not None:
            self.audio.renderer.close()
        self.position.save_if_changed()
        log.info("stopped (%s) after %.1f s of audio, in %.2f s", self.stop_reason or "done",
                 self.clock.position_seconds, time.monotonic() - started)

    # ------------------------------------------------------------------ status (streamer.status_snapshot)

    def status(self) -> dict[str, Any]:
        return self.report.status()

    def health(self) -> tuple[bool, str]:
        return self.report.health()

    def readiness(self) -> tuple[bool, str]:
        return self.report.readiness()

