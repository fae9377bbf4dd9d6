"""The SIGHUP reload (also `schedule.reload_cron`): config, checkpoint, SoundFont and effects, read
and validated on a thread of its own; only what changed is swapped in, and a failure keeps what plays.

- The config is read again as at the start (file, environment, the start's flags) and checked; the
  composer it names is loaded and made to compose a bar; a changed [render] gets a renderer that
  must render that bar, a changed [effects] a new chain.
- A new model takes over at the next `stream.swap_at` boundary (streamer.composer_thread); the
  same model plays on with its queued bars; render and effects changes apply from the next bar
  (streamer.audio_thread). Changes to [stream] (but the checkpoint), [sinks], [video], [status]
  and [archive] wait for a restart; so does render.sample_rate (the clock, sinks and ffmpeg run at
  the start's rate).
- A reload asked for while one runs follows it; one running longer than `RELOAD_TIMEOUT_SECONDS`
  (a checkpoint on a hung network mount, say) is given up on when another is asked for: the new one
  runs, and whatever the old one returns is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from streamer.audio_thread import AudioThread, RenderSwap
from streamer.composer import BarSource, check_bar
from streamer.composer_thread import ComposerThread, PendingSwap, start_track
from streamer.config import Config
from streamer.logs import redact
from streamer.position import PositionKeeper
from streamer.schedule import Schedule
from streamer.stream_config import CliOverrides, load_stream_config

log = logging.getLogger(__name__)

RELOAD_TIMEOUT_SECONDS = 120.0


class Reloader:
    """`start()` on the main loop (a signal or a scheduled reload); the work runs on the `reload` thread."""

    def __init__(self, *, config_path: str | Path | None, overrides: CliOverrides, environ: Mapping[str, str],
                 loader: Callable[[str, int], BarSource], composers: ComposerThread, audio: AudioThread,
                 schedule: Schedule, position: PositionKeeper, seed: int, stop: threading.Event) -> None:
        self.config_path, self.overrides, self.environ = config_path, overrides, environ
        self.loader, self.composers, self.audio = loader, composers, audio
        self.schedule, self.position, self.seed = schedule, position, seed
        self._stop = stop
        self.thread: threading.Thread | None = None
        self.started = 0.0  # monotonic start of the reload running
        self._again = False
        self._again_lock = threading.Lock()  # `_again` and the worker's decision to end, together
        self._ended = 0  # the generation whose worker has decided to end (a SIGHUP then starts a new one)
        self._generation = 0

    @property
    def running(self) -> bool:
        return bool(self.thread and self.thread.is_alive())

    def start(self) -> None:
        record = self.composers.record
        if self.thread is not None and self.thread.is_alive():
            busy = time.monotonic() - self.started
            if busy < RELOAD_TIMEOUT_SECONDS:
                with self._again_lock:
                    ending = self._ended == self._generation
                    self._again = not ending
                if not ending:
                    log.info("reload already running; another one follows it")
                    return
                self.thread.join()  # it has decided to end: start a new one
            else:
                record.reload_failures += 1
                record.last_reload_error = f"a reload did not finish in {busy:.0f} s; given up on"
                log.warning("reload running for %.0f s; giving up on it and reloading again", busy)
        self._generation += 1
        self.started = time.monotonic()
        generation = self._generation
        self.thread = threading.Thread(target=lambda: self._worker(generation), name="reload", daemon=True)
        self.thread.start()

    def _worker(self, generation: int) -> None:
        while generation == self._generation:
            with self._again_lock:
                self._again = False
            self._once(generation)
            with self._again_lock:
                if not self._again or self._stop.is_set():
                    self._ended = generation
                    return

    def _once(self, generation: int) -> None:
        composers, record = self.composers, self.composers.record
        sample_rate = self.audio.sample_rate
        current = composers.composer.id if composers.composer else "none"
        try:
            config = (load_stream_config(self.config_path, self.overrides, self.environ)
                      if self.config_path is not None else self.audio.config)
            setting = config.stream.checkpoint
            if config.render.sample_rate != sample_rate:
                # The clock, the sinks and ffmpeg run at the rate the daemon started with; a
                # renderer at another rate would play every bar at the wrong pitch and speed.
                log.warning("render.sample_rate = %d takes effect after a restart; %d Hz plays on",
                            config.render.sample_rate, sample_rate)
                config = dataclasses.replace(config, render=dataclasses.replace(config.render, sample_rate=sample_rate))
            log.info("reloading: %s", setting or "the default checkpoint")
            # The stream's seed: a new composer continues the track numbering (see
            # ComposerThread._swap_in), so its tracks get new numbers, hence new ids and new music.
            composer = self.loader(setting, self.seed)
            start_track(composer, self.position.current.next_track, self.position.current.after)
            first = check_bar(composer.next_bar())
            # Only what changed is built (against the running settings, so a later reload that
            # supersedes a pending swap still carries everything that differs).
            renderer = effects = None
            if config.render != self.audio.config.render:
                renderer = self.audio.build_renderer(config)
                renderer.render_bar(first)  # proves the SoundFont plays
                renderer.reset()
            if config.effects != self.audio.config.effects:
                effects = self.audio.build_effects(config)
            render_swap = RenderSwap(renderer, effects, config) if renderer is not None or effects is not None else None
            _warn_restart_needed(config, self.audio.config)
        except Exception as exc:  # whatever is wrong with the new files, the old model plays on
            if generation != self._generation:
                return  # given up on already (and counted then)
            record.reload_failures += 1
            record.last_reload_error = redact(f"{type(exc).__name__}: {exc}")
            log.warning("reload failed, keeping %s: %s", current, record.last_reload_error)
            return
        # The same model (and nothing wrong with the playing one): it plays on, with its queued
        # bars; a swap still waiting (to another model) is called off.
        unchanged = composer.id == current and not record.error and not composers.intro
        swap = None if unchanged else PendingSwap(composer, first, is_reload=True)
        offer = (lambda: self.audio.offer_render_swap(render_swap)) if render_swap is not None else None
        if not composers.hand_over(swap, lambda: generation == self._generation, offer):
            log.info("a reload that was given up on finished; its result is dropped")
            return
        record.setting = setting
        record.last_reload_error = ""
        self.schedule.update(config.schedule)
        if unchanged:
            record.reloads += 1
            log.info("reload validated: %s is the model playing; it plays on%s", composer.id,
                     " (the changed settings apply from the next bar)" if render_swap else "")
        else:
            log.info("reload validated: %s (taking over at the next %s boundary)", composer.id,
                     composers.swap_unit(True))


def _warn_restart_needed(config: Config, running: Config) -> None:
    changed = [name for name in ("stream", "sinks", "video", "status", "archive")
               if getattr(config, name) != getattr(running, name)
               and not (name == "stream" and dataclasses.replace(config.stream, checkpoint="")
                        == dataclasses.replace(running.stream, checkpoint=""))]
    if changed:
        log.warning("changes to [%s] take effect after a restart", "], [".join(changed))
