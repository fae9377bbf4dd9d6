"""Schedules in the running stream, with APScheduler for real: a program whose window covers
"now" sets the mood from the first bar (tempo, effects) and reverts when its window closes; the
stats line comes at its interval; a timed reload and a SIGHUP reload go the reload path and the
latter re-reads the schedule; a bad cron expression stops `chiplofi` with exit code 2."""

from __future__ import annotations

import logging
import signal
import threading
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from streamer.composer import ComposerMood, RuleBasedComposer
from streamer.daemon import Daemon
from streamer.stream_config import CliOverrides, load_stream_config
from test_stream_local import chiplofi, start
from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

DARK = {"lowpass_hz": 1000.0, "crackle_per_second": 10.0}


def config_text(tmp_path: Path, program: str, window_seconds: float, *, lowpass_hz: float = 1000.0,
                stream: str = "") -> str:
    """A config whose program `program` (mood "dark": 50–52 BPM, a dark low-pass) opened at the
    start of this minute (UTC) and closes `window_seconds` from now."""
    now = datetime.now(UTC)
    until = (now + timedelta(seconds=window_seconds)).strftime("%H:%M:%S")
    return (f'{stream}'
            '[schedule]\ntimezone = "UTC"\nstats_interval_seconds = 1\nreload_cron = "0 4 * * *"\n'
            '[schedule.mood.dark]\ntempo_min_bpm = 50.0\ntempo_max_bpm = 52.0\nenergy = 0.2\n'
            f'[schedule.mood.dark.effects]\nlowpass_hz = {lowpass_hz}\ncrackle_per_second = 10.0\n'
            f'[[schedule.program]]\nname = "{program}"\ncron = "{now.minute} {now.hour} * * *"\n'
            f'until = "{until}"\nmood = "dark"\n')


def test_daemon_program_stats_timed_reload_and_sighup_reload(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    stream = (f'[stream]\nspeed = 4.0\nbuffer_seconds = 8.0\nready_seconds = 0\noutputs = ["null"]\n'
              f'state_dir = "{tmp_path}"\n[status]\nenabled = false\n')
    path = tmp_path / "stream.toml"
    path.write_text(config_text(tmp_path, "dusk", 12.0, stream=stream))
    daemon = Daemon(load_stream_config(path, CliOverrides(checkpoint="rule-based"), {}), config_path=path,
                    overrides=CliOverrides(checkpoint="rule-based"), environ={},
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        # The program covers "now": its mood shapes the first track and the effects from the first bar.
        assert wait_for(lambda: daemon.status()["now_playing"]["tempo_bpm"], 10)
        schedule = daemon.status()["schedule"]
        assert schedule["program"] == "dusk" and schedule["effects_applied"] == DARK, schedule
        assert 50.0 <= daemon.status()["now_playing"]["tempo_bpm"] <= 52.0
        assert daemon.composers.composer.mood == ComposerMood((50.0, 52.0), None, 0.2, None)
        # The stats line, every second (an interval job of the real scheduler).
        assert wait_for(lambda: sum(r.getMessage().startswith("stats: up ") for r in caplog.records) >= 3, 15)
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("stats: up "))
        assert "tracks 1, bars " in line and "underruns 0" in line and "null running" in line
        assert line.endswith("program dusk")
        # The timed reload: its cron job, run now, takes the SIGHUP path.
        assert daemon.status()["schedule"]["next_reload"].endswith("T04:00:00+00:00")
        daemon.schedule.scheduler.get_job("reload").modify(next_run_time=datetime.now(UTC))
        assert wait_for(lambda: daemon.status()["checkpoint"]["reloads"] == 1, 15)
        assert any(r.getMessage() == "scheduled reload (schedule.reload_cron)" for r in caplog.records)
        # The window closes (a date job at its end): the config's settings come back.
        assert wait_for(lambda: daemon.status()["schedule"]["program"] is None, 30)
        assert wait_for(lambda: daemon.status()["schedule"]["effects_applied"] == {}, 10)
        assert wait_for(lambda: daemon.composers.composer.mood == ComposerMood(), 10)
        # A SIGHUP reload re-reads the schedule: a new program, with a brighter low-pass.
        path.write_text(config_text(tmp_path, "twilight", 60.0, lowpass_hz=3000.0, stream=stream))
        daemon.signals.on_signal(signal.SIGHUP, None)
        assert wait_for(lambda: daemon.status()["schedule"]["program"] == "twilight", 15)
        assert wait_for(lambda: daemon.status()["schedule"]["effects_applied"]
                        == {**DARK, "lowpass_hz": 3000.0}, 10)
        assert daemon.status()["checkpoint"]["reloads"] == 2
        # A reload with a bad schedule fails as a whole, naming the key; the program plays on.
        path.write_text(config_text(tmp_path, "twilight", 60.0, stream=stream).replace('\ncron = "', '\ncron = "7'))
        daemon.signals.on_signal(signal.SIGHUP, None)
        assert wait_for(lambda: daemon.status()["checkpoint"]["reload_failures"] == 1, 15)
        assert "schedule.program[0].cron: " in daemon.status()["checkpoint"]["last_reload_error"]
        assert daemon.status()["schedule"]["program"] == "twilight"
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    assert not thread.is_alive()
    assert daemon.schedule.scheduler is None  # shut down with the daemon
    assert daemon.status()["counters"]["underruns"] == 0


def high_share(pcm: np.ndarray, sample_rate: int) -> float:
    """Share of the energy above 3 kHz in (frames, 2) audio."""
    mono = pcm.mean(axis=1) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(mono)) ** 2
    return float(spectrum[np.fft.rfftfreq(len(mono), 1 / sample_rate) > 3000].sum() / spectrum.sum())


def test_stream_plays_the_program_mood_then_reverts(tmp_path):
    port, log, audio = free_port(), tmp_path / "daemon.log", tmp_path / "stream.wav"
    config = tmp_path / "stream.toml"
    config.write_text(config_text(tmp_path, "late-night", 20.0))
    daemon = start(["stream", "--config", str(config), "--speed", "4", "--output", str(audio), "--output", "null",
                    "--status-addr", f"127.0.0.1:{port}"], log, env={"CHIPLOFI_STREAM__STATE_DIR": str(tmp_path)})
    try:
        first = wait_for(lambda: (s := status(port))["now_playing"]["tempo_bpm"] and s, 60)
        assert first, log.read_text()
        assert first["schedule"]["program"] == "late-night" and first["schedule"]["mood"] == "dark"
        assert first["schedule"]["effects_applied"] == DARK
        assert 50.0 <= first["now_playing"]["tempo_bpm"] <= 52.0  # the rule-based intro, in the mood
        # The shipped model takes over, tuned before its first bar: its first track is in the mood too.
        model = wait_for(lambda: (s := status(port))["now_playing"]["composer_id"].startswith("chiplofi-vae")
                         and s["now_playing"], 60)
        assert model and 50.0 <= model["tempo_bpm"] <= 52.0, log.read_text()
        assert wait_for(lambda: log.read_text().count("INFO streamer.daemon: stats: up ") >= 3, 15)
        # The window closes: back to the config's effects, then some audio with them.
        reverted = wait_for(lambda: (s := status(port))["schedule"]["effects_applied"] == {} and s, 45)
        assert reverted and reverted["schedule"]["program"] is None, log.read_text()
        position = reverted["clock"]["position_seconds"]
        assert wait_for(lambda: status(port)["clock"]["position_seconds"] > position + 8.0, 30)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        kill_if_running(daemon)
    text = log.read_text()
    assert "schedule: program late-night (mood dark) plays until" in text
    assert "schedule: program late-night ended; the config's settings are back" in text
    with wave.open(str(audio)) as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2) / 32768.0
    during, after = high_share(pcm[:4 * rate], rate), high_share(pcm[-4 * rate:], rate)
    assert after > 10 * during, (during, after)  # the 1 kHz low-pass of the mood, then the config's 9 kHz


def test_a_bad_cron_expression_is_a_config_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[schedule.mood.night]\nenergy = 0.3\n'
                      '[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "06:00"\nmood = "night"\n'
                      '[[schedule.program]]\nname = "b"\ncron = "0 23 * * *"\nminutes = 30\nmood = "night"\n'
                      '[[schedule.program]]\nname = "c"\ncron = "x y z"\nuntil = "06:00"\nmood = "night"\n')
    expected = ["chiplofi: config error: schedule.program[2].cron: 'x y z' is not a cron expression "
                "(minute hour day month weekday): expected 5 fields, got 3"]
    result = chiplofi("config", "check", str(config))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == expected
    result = chiplofi("stream", "--config", str(config), "--output", "null", "--checkpoint", "rule-based")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == expected[0]
