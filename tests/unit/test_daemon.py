"""The daemon's pipeline with stand-in composers and sinks: real FluidSynth and effects where the
sound matters, testkit's renderer and effects doubles where it does not; unpaced, so each run takes
about a second. (Its config and outputs: test_stream_config.py, test_outputs.py.)"""

import contextlib
import dataclasses
import logging
import threading
import time
from itertools import pairwise

import numpy as np
import pytest

from streamer.audio_thread import LEAD_SECONDS
from streamer.composer import RuleBasedComposer
from streamer.daemon import Daemon
from streamer.effects import LoudnessNormalizer, TapeHiss
from streamer.effects_swap import Crossfade
from streamer.errors import CheckpointError
from streamer.stream_config import CliOverrides, load_stream_config
from streamer.types import Bar
from testkit.daemon import run_to_end as _run, unpaced_config as _config, until as _until
from testkit.doubles import FlakyComposer, HangingComposer, PassThroughEffects, RecordingSink, fake_pipeline

# ----------------------------------------------------------------------------- pipeline


def test_unpaced_run_plays_exactly_the_duration_without_underruns(tmp_path):
    sink = RecordingSink()
    daemon = Daemon(_config(tmp_path), environ={}, duration=20.0, sinks=[sink],
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed))
    assert _run(daemon) == 0
    frames = sum(b.frames for b in sink.blocks)
    assert abs(frames - 20.0 * 44100) <= 1024
    starts = [b.start_frame for b in sink.blocks]
    assert starts == sorted(starts) and all(b - a == 1024 for a, b in pairwise(starts))
    audio = sink.audio()
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.05
    status = daemon.status()
    assert status["counters"]["underruns"] == 0 and status["counters"]["fallback_bars"] == 0
    assert status["counters"]["bars_played"] > 5 and status["checkpoint"]["id"].startswith("rule-based-")


def test_a_failing_composer_is_covered_by_the_fallback_bed_and_counted(tmp_path):
    sink = RecordingSink()
    composer = FlakyComposer(raise_on=range(3, 10_000), bad_on=(2,))  # one bad bar, then only failures
    daemon = Daemon(_config(tmp_path), environ={}, duration=15.0, sinks=[sink],
                    composer_loader=lambda setting, seed: composer)
    assert _run(daemon) == 0
    counters = daemon.status()["counters"]
    assert counters["composer_errors"] >= 2 and counters["underruns"] > 0 and counters["fallback_bars"] > 0
    audio = sink.audio()
    assert abs(len(audio) - 15.0 * 44100) <= 1024  # never short: the bed filled in
    # Never silent: every second has sound.
    seconds = audio[: len(audio) // 44100 * 44100].reshape(-1, 44100, 2)
    assert (np.sqrt((seconds ** 2).mean(axis=(1, 2))) > 1e-3).all()


def test_nan_audio_is_replaced_and_counted(tmp_path):
    sink = RecordingSink()

    def nan_effects(settings, sample_rate, seed):  # NaN and Inf after the effects
        inner = PassThroughEffects()

        class NanEffects:
            nonfinite_samples = 0

            def process(self, block):
                out = inner.process(block).copy()
                out[::97] = np.nan
                out[5] = np.inf
                return out
        return NanEffects()
    daemon = Daemon(_config(tmp_path), environ={}, duration=5.0, sinks=[sink],
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed),
                    **{**fake_pipeline(), "effects_factory": nan_effects})
    assert _run(daemon) == 0
    audio = sink.audio()
    assert np.isfinite(audio).all()
    assert daemon.status()["counters"]["nonfinite_samples"] > 1000


def test_a_checkpoint_that_cannot_load_at_start_falls_back_to_rule_based(tmp_path):
    def loader(setting, seed):
        raise CheckpointError("/x/vae.safetensors: truncated")
    daemon = Daemon(_config(tmp_path), environ={}, duration=2.0, sinks=[RecordingSink()], composer_loader=loader,
                    **fake_pipeline())
    assert _run(daemon) == 0
    checkpoint = daemon.status()["checkpoint"]
    assert checkpoint["id"].startswith("rule-based-") and "truncated" in checkpoint["error"]


def test_reload_with_swap_at_bar_swaps_on_the_next_bar_and_a_bad_one_keeps_the_old(tmp_path):
    sink = RecordingSink()
    loads = {"n": 0}

    def loader(setting, seed):
        loads["n"] += 1
        if loads["n"] == 3:
            raise CheckpointError("corrupt checkpoint")
        return FlakyComposer(ident=f"model-{loads['n']}", seed=seed)

    config = _config(tmp_path, speed=8.0, swap_at="bar")
    daemon = Daemon(config, environ={}, duration=60.0, sinks=[sink], composer_loader=loader)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert _until(lambda: daemon.status()["checkpoint"]["id"] == "model-1")
        assert _until(lambda: daemon.status()["buffer"]["ahead_seconds"] > 5)  # bars of model-1 queued
        daemon.reloader.start()
        assert _until(lambda: daemon.status()["checkpoint"]["id"] == "model-2", 20, poll=0.005)
        swapped_at = daemon.status()["clock"]["position_seconds"]
        # The queued bars of model-1 are dropped: model-2 is heard within a bar (plus the
        # rendered lead and the polling), in stream time, not after the whole buffer.
        assert _until(lambda: daemon.status()["now_playing"]["composer_id"] == "model-2", 20, poll=0.005)
        status = daemon.status()
        bar_seconds = 240.0 / status["now_playing"]["tempo_bpm"]
        # When model-2's first bar began to play, in stream time (the audio thread's own marker:
        # noticing it by polling lags by however long a loaded machine keeps this thread waiting).
        heard = [*daemon.audio.recent, daemon.audio.playing]
        first_new = next(marker for marker in heard if marker.entry.composer_id == "model-2")
        assert first_new.start_frame / 44100 - swapped_at <= bar_seconds + LEAD_SECONDS + 0.3
        assert status["counters"]["bars_dropped_on_swap"] > 0
        daemon.reloader.start()
        assert _until(lambda: daemon.status()["checkpoint"]["reload_failures"] == 1)
        status = daemon.status()
        assert status["checkpoint"]["id"] == "model-2" and "corrupt" in status["checkpoint"]["last_reload_error"]
        assert status["checkpoint"]["reloads"] == 1
        assert daemon.status()["now_playing"]["composer_id"] == "model-2"
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    assert not thread.is_alive()
    starts = [b.start_frame for b in sink.blocks]
    assert all(b - a == 1024 for a, b in pairwise(starts))  # no gap across the swap


def test_stop_request_ends_a_paced_run_quickly(tmp_path):
    daemon = Daemon(_config(tmp_path, speed=1.0), environ={}, sinks=[RecordingSink()],
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    assert _until(lambda: daemon.status()["clock"]["position_seconds"] > 0.5)
    health, _ = daemon.health()
    assert health
    started = time.monotonic()
    daemon.request_stop("test")
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 2.0


def test_bad_bars_from_the_composer_are_rejected():
    from streamer.composer import check_bar
    from streamer.errors import ModelError
    from streamer.types import Note

    good = Bar((Note("lead", 60, 0.0, 1.0, 90),), 80.0)
    assert check_bar(good) is good
    for bad in (dataclasses.replace(good, tempo_bpm=float("nan")), dataclasses.replace(good, beats=0.0),
                Bar((Note("kazoo", 60, 0.0, 1.0, 90),), 80.0), Bar((Note("lead", 200, 0.0, 1.0, 90),), 80.0),
                Bar((Note("lead", 60, 9.0, 1.0, 90),), 80.0), Bar((Note("lead", 60, 0.0, float("inf"), 90),), 80.0)):
        with pytest.raises(ModelError):
            check_bar(bad)


def test_fast_start_opens_with_the_intro_then_the_model_takes_over(tmp_path):
    loaded = threading.Event()

    def slow_loader(setting, seed):
        time.sleep(1.0)  # a model loading
        loaded.set()
        return FlakyComposer(ident="the-model", seed=seed)

    sink = RecordingSink()
    daemon = Daemon(_config(tmp_path, speed=10.0, buffer_seconds=20.0, checkpoint="a-model"), environ={}, sinks=[sink],
                    composer_loader=slow_loader)
    thread = threading.Thread(target=daemon.run)
    started = time.monotonic()
    thread.start()
    try:
        assert _until(lambda: sink.blocks, 5)
        assert not loaded.is_set() and time.monotonic() - started < 1.0  # audio before the model
        assert daemon.status()["checkpoint"]["id"].startswith("rule-based-")
        assert daemon.readiness() == (False, "the configured composer is still loading")
        assert _until(lambda: daemon.status()["checkpoint"]["id"] == "the-model", 10)
        assert _until(lambda: daemon.readiness()[0], 5)
        assert daemon.status()["checkpoint"]["reloads"] == 0  # not a reload
        assert _until(lambda: daemon.status()["now_playing"]["composer_id"] == "the-model", 10)
        assert _until(lambda: daemon.status()["buffer"]["ahead_seconds"] >= 19.0, 10)  # full buffer again
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    assert daemon.status()["counters"]["underruns"] == 0


def test_a_hung_composer_is_replaced_by_a_reload(tmp_path):
    hung = HangingComposer(hang_after=6, ident="hung")
    loaders = iter([hung, FlakyComposer(ident="fresh")])
    daemon = Daemon(_config(tmp_path, speed=20.0, fast_start=False), environ={}, sinks=[RecordingSink()],
                    composer_loader=lambda setting, seed: next(loaders))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert _until(lambda: daemon.status()["composer"]["busy_seconds"] > 0.5, 10)
        daemon.reloader.start()
        # After STUCK_COMPOSER_SECONDS a new composer thread swaps the fresh model in.
        assert _until(lambda: daemon.status()["checkpoint"]["id"] == "fresh", 15)
        assert _until(lambda: daemon.status()["now_playing"]["composer_id"] == "fresh", 15)
        hung.release.set()
        time.sleep(0.3)
        assert daemon.status()["checkpoint"]["id"] == "fresh"
    finally:
        hung.release.set()
        daemon.request_stop("test over")
        thread.join(10)
    assert daemon.status()["counters"]["underruns"] > 0  # the bed covered the hang


def test_systemd_notifications(tmp_path, monkeypatch):
    import socket as socketlib

    path = str(tmp_path / "notify.sock")
    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(0.2)
    messages: list[str] = []
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}  # watchdog every 0.2 s
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # sdnotify reads the process environment
    daemon = Daemon(_config(tmp_path, speed=4.0), environ=env, sinks=[RecordingSink()],
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    deadline = time.monotonic() + 6
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                messages.append(server.recv(4096).decode())
    finally:
        daemon.request_stop("test over")
        thread.join(10)
        server.close()
    assert messages[0] == "READY=1"
    assert messages.count("WATCHDOG=1") >= 10
    assert any(m.startswith("STATUS=playing ") for m in messages)


def test_sigterm_during_start_up_stops_at_once(tmp_path):
    import signal as signals

    sink = RecordingSink()
    daemon = Daemon(_config(tmp_path, speed=1.0), environ={}, sinks=[sink],
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed), **fake_pipeline())
    daemon.signals.pending.append(signals.SIGTERM)  # as if it arrived while starting
    started = time.monotonic()
    assert _run(daemon, 10) == 0
    assert time.monotonic() - started < 3.0 and not sink.blocks


def test_reload_rereads_soundfont_and_effects_settings(tmp_path):
    config_path = tmp_path / "stream.toml"
    base = f'[stream]\nspeed = 8.0\nbuffer_seconds = 8.0\nready_seconds = 0\nstate_dir = "{tmp_path}"\n' \
           '[status]\nenabled = false\n'
    config_path.write_text(base + "[effects]\nhiss_db = -60\n")
    config = load_stream_config(config_path, CliOverrides(), {})
    sink = RecordingSink()
    daemon = Daemon(config, config_path=config_path, environ={}, sinks=[sink],
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert _until(lambda: len(sink.blocks) > 20)
        loudness = next(stage for stage in daemon.audio.effects.effects if isinstance(stage, LoudnessNormalizer))
        hiss_before = next(stage for stage in daemon.audio.effects.effects if isinstance(stage, TapeHiss))
        config_path.write_text(base + "[effects]\nhiss_db = -50\n[render]\ngain = 0.4\n")
        daemon.reloader.start()
        assert _until(lambda: daemon.config.effects.hiss_db == -50.0 and daemon.config.render.gain == 0.4)
        # The chain is retuned, not rebuilt: the loudness follower goes on with its gain, the hiss fades over.
        assert loudness in daemon.audio.effects.effects
        [fade] = [stage for stage in daemon.audio.effects.effects if isinstance(stage, Crossfade)]
        assert fade.new is not hiss_before and isinstance(fade.new, TapeHiss)
        # A [render]-only change leaves the effects chain alone; an [effects]-only one the renderer.
        chain, renderer = daemon.audio.effects, daemon.audio.renderer
        config_path.write_text(base + "[effects]\nhiss_db = -50\n[render]\ngain = 0.5\n")
        daemon.reloader.start()
        assert _until(lambda: daemon.config.render.gain == 0.5 and daemon.audio.renderer is not renderer)
        assert daemon.audio.effects is chain
        renderer = daemon.audio.renderer
        config_path.write_text(base + "[effects]\nhiss_db = -55\n[render]\ngain = 0.5\n")
        daemon.reloader.start()
        assert _until(lambda: daemon.config.effects.hiss_db == -55.0)
        assert daemon.audio.renderer is renderer and loudness in daemon.audio.effects.effects
        # The sample rate is fixed for the daemon's life (clock, sinks, ffmpeg): kept, not swapped in.
        config_path.write_text(base + "[effects]\nhiss_db = -55\n[render]\ngain = 0.6\nsample_rate = 48000\n")
        daemon.reloader.start()
        assert _until(lambda: daemon.config.render.gain == 0.6)
        assert daemon.audio.renderer.sample_rate == 44100 and daemon.config.render.sample_rate == 44100
        config_path.write_text(base + '[render]\nsoundfont = "/no/such.sf2"\n')
        daemon.reloader.start()
        assert _until(lambda: daemon.status()["checkpoint"]["reload_failures"] == 1)
        assert "such.sf2" in daemon.status()["checkpoint"]["last_reload_error"]
        assert daemon.config.render.soundfont == ""  # the old SoundFont plays on
        config_path.write_text(base + "[effects]\nhiss_db = 0\n")  # not accepted
        daemon.reloader.start()
        assert _until(lambda: daemon.status()["checkpoint"]["reload_failures"] == 2)
        assert "effects.hiss_db" in daemon.status()["checkpoint"]["last_reload_error"]
        blocks_then = len(sink.blocks)
        assert _until(lambda: len(sink.blocks) > blocks_then + 20)
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    starts = [b.start_frame for b in sink.blocks]
    assert all(b - a == 1024 for a, b in pairwise(starts))
    assert np.isfinite(sink.audio()).all()


class ShortTracksComposer(FlakyComposer):
    """Rule-based bars, each a track of its own (short-0, short-1, ...)."""

    def next_bar(self):
        bar = super().next_bar()
        return dataclasses.replace(bar, track_id=f"short-{self.calls - 1}", bar_index=0)


def test_now_playing_is_logged_when_a_track_is_heard_not_when_it_is_composed(tmp_path):
    composer = ShortTracksComposer()
    daemon = Daemon(_config(tmp_path, fast_start=False), environ={}, duration=20.0, sinks=[RecordingSink()],
                    composer_loader=lambda setting, seed: composer, **fake_pipeline())
    heard: list[tuple[str, str]] = []

    class AtEmit(logging.Handler):  # what the daemon is playing at the moment the line is logged
        def emit(self, record):
            if record.getMessage().startswith("now playing: "):
                heard.append((record.getMessage(), daemon.status()["now_playing"]["track_id"]))

    handler = AtEmit(logging.INFO)
    logger = logging.getLogger("streamer.audio_thread")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert _run(daemon) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(heard) == daemon.status()["counters"]["tracks_started"] >= 5
    for number, (message, playing) in enumerate(heard):
        assert message.startswith(f"now playing: short-{number}, ") and "BPM (flaky-1)" in message
        assert playing == f"short-{number}"
    # The buffer (8 s) was composed ahead and never heard: those tracks were not announced.
    assert composer.calls >= len(heard) + 2


def test_a_reload_that_never_returns_is_given_up_on_and_the_next_one_applies(tmp_path, monkeypatch):
    import streamer.reload as reload_module

    monkeypatch.setattr(reload_module, "RELOAD_TIMEOUT_SECONDS", 0.5)
    release = threading.Event()
    loads = {"n": 0}

    def loader(setting, seed):
        loads["n"] += 1
        n = loads["n"]
        if n == 2:
            release.wait()  # a checkpoint read that hangs (a hung mount)
        return FlakyComposer(ident=f"model-{n}", seed=seed)

    daemon = Daemon(_config(tmp_path, speed=8.0), environ={}, duration=120.0, sinks=[RecordingSink()],
                    composer_loader=loader)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert _until(lambda: daemon.status()["checkpoint"]["id"] == "model-1")
        daemon.reloader.start()  # hangs in the loader
        assert _until(lambda: loads["n"] == 2)
        daemon.reloader.start()  # too early: queued behind the running one
        assert daemon.status()["checkpoint"]["reloading"] and loads["n"] == 2
        assert _until(lambda: time.monotonic() - daemon.reloader.started > 0.5)
        hung = daemon.reloader.thread
        daemon.reloader.start()  # the hung one is given up on
        assert _until(lambda: daemon.status()["checkpoint"]["id"] == "model-3", 20)
        status = daemon.status()["checkpoint"]
        assert status["reload_failures"] == 1 and status["reloads"] == 1
        release.set()  # the hung call returns at last: its composer must not be swapped in
        hung.join(10)
        assert not hung.is_alive() and daemon.composers.pending is None
        assert daemon.status()["checkpoint"]["id"] == "model-3" and daemon.status()["checkpoint"]["reloads"] == 1
    finally:
        release.set()
        daemon.request_stop("test over")
        thread.join(10)
    assert not thread.is_alive()


