"""Faults that end real streams, injected into the real daemon while it streams to a real
nginx-rtmp on loopback; testkit.receiver (tests/support) records what arrives there.

Each test asserts its figure and reports what it measured: printed (`pytest -s`) and written to
FIGURES_DIR/<scenario>.json, where docs/RELIABILITY.md takes its numbers from.

Timing figures are read at the receiver (nginx's statistics page, the recorder's timestamps) or
on the stream's own clock, never from how long this code took.

The composer faults (an exception, a call that never returns, NaN in a bar) run the `Daemon`
class in this process with a composer double at its `composer_loader` boundary: the real models
cannot be made to fail on cue without a fault switch in production code, and a checkpoint that
fails on every bar is rejected before it ever plays. Everything else in those runs is real
(FluidSynth, the effects, the clock, the ffmpeg sink, nginx). Every other scenario runs
`chiplofi stream` as its own process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import statistics
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from streamer.composer import RuleBasedComposer
from streamer.daemon import Daemon
from streamer.stream_config import CliOverrides, load_stream_config
from streamer.types import Bar
from test_stream_local import start
from test_stream_rtmp import write_checkpoint
from test_watchdog import NotifySocket
from testkit.receiver import Receiver, check_continuity, detect_silence, probe_packets, receiver_fixture, require_tools
from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

KEY = "faults-key-3b9e1d"
RATE = 44100
FIGURES_DIR = Path(os.environ.get("CHIPLOFI_FAULT_FIGURES", "/tmp/chiplofi-faults"))
BACK_ON_AIR_SECONDS = 3.0
# Audio released minus wall time between two samples: the clock does not drift, but on a busy
# 2-core machine the audio thread may wake a few hundred ms late for a moment.
DRIFT_LIMIT_SECONDS = 0.5


receiver = receiver_fixture(KEY)


@pytest.fixture(autouse=True)
def tools():
    require_tools()


def report(scenario: str, **figures) -> None:
    """Print the figures of a scenario and keep them for docs/RELIABILITY.md."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    figures = {"scenario": scenario, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), **figures}
    (FIGURES_DIR / f"{scenario}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n[faults] {scenario}: {json.dumps(figures)}")


# ----------------------------------------------------------------------------- helpers


class StreamProcess:
    """`chiplofi stream ARGS` as its own process, with a status port and a log."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = tmp_path / "daemon.log"
        self.proc = start(["stream", *args, "--status-addr", f"127.0.0.1:{self.port}"], self.log,
                          env={"CHIPLOFI_STREAM_KEY": KEY, "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state"),
                               **(env or {})})

    def status(self) -> dict:
        return status(self.port)

    def sample(self) -> tuple[float, dict]:
        """(monotonic time, /status), the time taken halfway through the request."""
        before = time.monotonic()
        state = self.status()
        return (before + time.monotonic()) / 2, state

    def until(self, predicate: Callable[[dict], object], timeout: float) -> dict:
        """The first /status for which `predicate` holds; fails the test (with the log) if none does."""
        found = wait_for(lambda: (s := self.status()) and predicate(s) and s, timeout)
        assert found, f"/status never satisfied the condition; log:\n{self.text()[-4000:]}"
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        kill_if_running(self.proc)


@contextmanager
def stream_process(tmp_path: Path, args: list[str], env: dict[str, str] | None = None) -> Iterator[StreamProcess]:
    process = StreamProcess(tmp_path, args, env)
    try:
        yield process
    finally:
        process.close()


class ComposerOnCue:
    """Rule-based bars; on cue (`mode`) it raises, hangs until `release()`, or puts NaN into
    every other bar (a different field each time). Counts what it did."""

    NAN_FIELDS = ("tempo_bpm", "beats", "start", "duration", "pitch", "velocity")

    def __init__(self, seed: int = 0, track_bars: int = 48) -> None:
        self.inner = RuleBasedComposer(seed, track_bars)
        self.mode = "play"
        self._released = threading.Event()
        self.raised = self.hung = self.calls = 0
        self.nan_bars: list[str] = []  # the field poisoned in each NaN bar handed out

    @property
    def id(self) -> str:
        return "on-cue-" + self.inner.id

    def fault(self, mode: str) -> None:
        """Start a fault: "raise", "hang" or "nan"."""
        self._released.clear()
        self.mode = mode

    def release(self) -> None:
        """End the fault: play again (a hanging call returns)."""
        self.mode = "play"
        self._released.set()

    def next_bar(self) -> Bar:
        self.calls += 1
        if self.mode == "raise":
            self.raised += 1
            raise RuntimeError("the composer failed (injected)")
        if self.mode == "hang":
            self.hung += 1
            self._released.wait()
        bar = self.inner.next_bar()
        if self.mode == "nan" and self.calls % 2 == 0:
            field = self.NAN_FIELDS[len(self.nan_bars) % len(self.NAN_FIELDS)]
            self.nan_bars.append(field)
            if field in ("tempo_bpm", "beats"):
                return dataclasses.replace(bar, **{field: float("nan")})
            notes = list(bar.notes)
            notes[0] = dataclasses.replace(notes[0], **{field: float("nan")})
            return dataclasses.replace(bar, notes=tuple(notes))
        return bar


@contextmanager
def daemon_in_process(tmp_path: Path, composer: ComposerOnCue, stream_toml: str,
                      duration: float | None = None) -> Iterator[Daemon]:
    """The real `Daemon` on a thread of this process, its composer the given double."""
    config_path = tmp_path / "stream.toml"
    config_path.write_text(f'[stream]\ncheckpoint = "rule-based"\nfast_start = false\n'
                           f'state_dir = "{tmp_path / "state"}"\n{stream_toml}\n'
                           f'[status]\naddr = "127.0.0.1:{free_port()}"\n')
    environ = {"CHIPLOFI_STREAM_KEY": KEY}
    config = load_stream_config(config_path, CliOverrides(), environ)
    daemon = Daemon(config, config_path=config_path, environ=environ, duration=duration,
                    composer_loader=lambda setting, seed: composer)
    handler = logging.FileHandler(tmp_path / "daemon.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("streamer")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    thread = threading.Thread(target=daemon.run, name="daemon-under-test", daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        if duration is None:
            daemon.request_stop("test over")
        thread.join(60 if duration is not None else 15)
        composer.release()
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
        assert not thread.is_alive(), "the daemon did not stop"


def sink_of(state: dict, kind: str) -> dict:
    """The first sink of `kind` in a /status document."""
    return next(sink for sink in state["sinks"] if sink["kind"] == kind)


def until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    value = wait_for(predicate, timeout)
    assert value, f"timed out waiting for {what}"
    return value


def null_alsa(tmp_path: Path) -> dict[str, str]:
    """An ALSA default device that discards audio (no sound card here): the speakers sink plays."""
    conf = tmp_path / "asound.conf"
    conf.write_text("pcm.!default { type null }\n")
    return {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}


def wav_frames(path: Path) -> int:
    with wave.open(str(path)) as wav:
        return wav.getnframes()


def stopped_after_seconds(log_text: str) -> float:
    """Audio played, from the daemon's last line ("stopped (...) after X s of audio")."""
    return float(re.findall(r"stopped \(.*\) after ([\d.]+) s of audio", log_text)[-1])


def clock_drift(first: tuple[float, dict], last: tuple[float, dict]) -> float:
    """Audio the clock scheduled minus the wall time between two (monotonic time, /status) samples.

    Scheduled = released + how far the release is behind schedule (`lag_seconds`): a sample taken
    while the audio thread waits for the CPU (a loaded test machine) then reads the clock's own
    time, not the moment's backlog, which the next blocks catch up on. A clock that runs fast or
    slow, or re-anchors (a resync after a stop), still shows here."""
    (wall0, status0), (wall1, status1) = first, last

    def scheduled(status: dict) -> float:
        return status["clock"]["position_seconds"] + status["clock"]["lag_seconds"]

    return (scheduled(status1) - scheduled(status0)) - (wall1 - wall0)


def session_continuity(receiver: Receiver) -> list[dict]:
    """Per publish session at the receiver: codecs, audio seconds, largest audio step, faults."""
    sessions = []
    for recording in receiver.recordings():
        report_ = check_continuity(recording.path)
        sessions.append({"file": recording.path.name, "codecs": sorted(report_.codecs),
                         "audio_seconds": round(report_.audio_seconds, 2),
                         "max_audio_step_ms": round(report_.max_audio_step * 1000, 1),
                         "audio_gaps": len(report_.audio_gaps), "non_monotonic": len(report_.non_monotonic),
                         "av_drift_ms": round(report_.av_drift * 1000, 1)})
    return sessions


def assert_clean_sessions(sessions: list[dict]) -> None:
    for session in sessions:
        assert session["codecs"] == ["aac", "h264"], session
        assert session["audio_gaps"] == 0 and session["non_monotonic"] == 0, session


# ----------------------------------------------------------------------------- ffmpeg killed


def test_ffmpeg_killed_three_times_is_back_on_air_within_3_s_each_time(tmp_path, receiver):
    wav = tmp_path / "stream.wav"
    args = ["--checkpoint", "rule-based", "--output", receiver.ingest_url, "--output", str(wav),
            "--output", "speakers"]
    back_on_air = []
    with stream_process(tmp_path, args, env=null_alsa(tmp_path)) as daemon:
        daemon.until(lambda s: sink_of(s, "ffmpeg")["connected"], 30)
        until(lambda: receiver.ingest.first_media_after(0.0), 15, "the stream at nginx")
        first = daemon.sample()
        for _ in range(3):
            # Each ffmpeg is on air (encoding, connected) before it is killed.
            on = daemon.until(lambda s: sink_of(s, "ffmpeg")["connected"]
                              and sink_of(s, "ffmpeg")["detail"]["encoded_seconds"] >= 3.0, 20)
            os.kill(sink_of(on, "ffmpeg")["detail"]["pid"], signal.SIGKILL)
            killed = time.monotonic()
            on_air = wait_for(lambda: receiver.ingest.first_media_after(killed), 15, 0.02)
            assert on_air, f"not back on air 15 s after the kill; log:\n{daemon.text()[-3000:]}"
            back_on_air.append(on_air - killed)
            assert daemon.alive()
        daemon.until(lambda s: sink_of(s, "ffmpeg")["detail"]["encoded_seconds"] >= 3.0, 20)
        last = daemon.sample()
        ffmpeg, file_sink, speakers = (sink_of(last[1], kind) for kind in ("ffmpeg", "file", "speakers"))
        assert daemon.stop() == 0
    text = daemon.text()
    sessions = session_continuity(receiver)
    audio_seconds = stopped_after_seconds(text)
    silences = detect_silence(wav)
    report("ffmpeg_killed", back_on_air_seconds=[round(s, 2) for s in back_on_air],
           ffmpeg_restarts=ffmpeg["restarts"], restart_waits=re.findall(r"restarting in ([\d.]+) s", text),
           clock_drift_seconds=round(clock_drift(first, last), 3), clock_resyncs=last[1]["clock"]["resyncs"],
           file_frames=wav_frames(wav), clock_frames=round(audio_seconds * RATE),
           file_dropped=file_sink["frames_dropped"], speakers_dropped=speakers["frames_dropped"],
           speakers_state=speakers["state"], file_silences=silences, receiver_sessions=sessions)

    assert max(back_on_air) <= BACK_ON_AIR_SECONDS, back_on_air
    assert ffmpeg["restarts"] == 3 and text.count("restarting in 1.0 s") == 3, text
    # The clock never noticed: it released audio in step with the wall clock, without a resync.
    assert abs(clock_drift(first, last)) < DRIFT_LIMIT_SECONDS and last[1]["clock"]["resyncs"] == 0
    # The file and speaker sinks got every sample: nothing dropped, the file as long as the clock.
    assert file_sink["frames_dropped"] == 0 and speakers["frames_dropped"] == 0
    assert speakers["state"] == "running" and speakers["frames_written"] > 0
    assert abs(wav_frames(wav) - audio_seconds * RATE) <= 0.06 * RATE + 1024
    assert silences == []
    # One publish session per ffmpeg, each continuous with audio and video.
    assert len(sessions) == 4, sessions
    assert_clean_sessions(sessions)


# ----------------------------------------------------------------------------- ingest outages


def steady_offset(recording, packets) -> float:
    """Median of arrival time minus media time, past the recorder's start-up hold: when the
    session's media time 0 was live at the receiver."""
    audio = [p for p in packets if p.codec_type == "audio"]
    offsets = recording.live_offsets(audio)
    settled = [o for p, o in zip(audio, offsets, strict=True) if recording.arrival(p) > recording.first_arrival + 1.0]
    return statistics.median(settled or offsets)


def test_receiver_down_for_5_s_then_30_s_the_daemon_reconnects_and_never_exits(tmp_path, receiver):
    outages = []
    with stream_process(tmp_path, ["--checkpoint", "rule-based", "--output", receiver.ingest_url]) as daemon:
        daemon.until(lambda s: sink_of(s, "ffmpeg")["connected"], 30)
        until(lambda: receiver.ingest.first_media_after(0.0), 15, "the stream at nginx")
        first = daemon.sample()
        for seconds in (5.0, 30.0):
            # 8 s of stream at nginx first, to compare the stream after the outage with.
            until(lambda: (p := receiver.ingest.publishes()[-1]).first_media and p.last_seen - p.first_media >= 8,
                  30, "8 s of stream")
            receiver.stop_server()
            down = time.monotonic()
            states = set()
            while time.monotonic() - down < seconds:  # the outage; the daemon is watched all along
                assert daemon.alive(), daemon.text()[-3000:]
                states.add(sink_of(daemon.status(), "ffmpeg")["detail"]["targets"][0]["state"])
                time.sleep(0.5)
            receiver.start_server()
            up = time.monotonic()
            on_air = wait_for(lambda: receiver.ingest.first_media_after(up), 30, 0.05)
            assert on_air, f"no media at nginx 30 s after it came back; log:\n{daemon.text()[-3000:]}"
            outages.append({"outage_seconds": seconds, "target_states_seen": sorted(states),
                            "reconnect_seconds": round(on_air - up, 2)})
        until(lambda: (p := receiver.ingest.publishes()[-1]).first_media and p.last_seen - p.first_media >= 8,
              30, "8 s of stream after the last outage")
        last = daemon.sample()
        ffmpeg = sink_of(last[1], "ffmpeg")
        assert daemon.alive()
        assert daemon.stop() == 0
    recordings = receiver.recordings()
    sessions = session_continuity(receiver)
    packets = [probe_packets(recording.path) for recording in recordings]
    offsets = [steady_offset(recording, p) for recording, p in zip(recordings, packets, strict=True)]
    for index, outage in enumerate(outages):
        before = [p.pts for p in packets[index] if p.codec_type == "audio"]
        after = [p.pts for p in packets[index + 1] if p.codec_type == "audio"]
        # Same ffmpeg, same timeline: the media skipped is what played while the ingest was down,
        # and an unchanged offset means the stream is as live after the reconnect as before it.
        outage["media_skipped_seconds"] = round(after[0] - before[-1], 2)
        outage["latency_change_seconds"] = round(offsets[index + 1] - offsets[index], 3)
    report("receiver_outage", outages=outages, ffmpeg_restarts=ffmpeg["restarts"],
           target_failures=ffmpeg["detail"]["targets"][0]["failures"],
           clock_drift_seconds=round(clock_drift(first, last), 3), receiver_sessions=sessions)

    assert ffmpeg["restarts"] == 0  # the encoder ran through both outages; only its target reconnected
    assert ffmpeg["detail"]["targets"][0]["failures"] == 2
    assert all("failing" in outage["target_states_seen"] for outage in outages)
    assert all(outage["reconnect_seconds"] <= 10.0 for outage in outages), outages
    assert all(abs(outage["latency_change_seconds"]) < 1.0 for outage in outages), outages
    assert abs(clock_drift(first, last)) < DRIFT_LIMIT_SECONDS
    assert len(sessions) == 3, sessions
    assert_clean_sessions(sessions)


# ----------------------------------------------------------------------------- a slow receiver

SLOW_BYTES_PER_SECOND = 16_000  # the stream is ~140 kB/s (480p15 at 1000 + 128 kbit/s)


class SlowPeer:
    """A TCP proxy in front of nginx that reads what the daemon sends at `rate` bytes per second
    (nginx's replies pass freely): an ingest that cannot keep up."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.forwarded = 0
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        # Small kernel buffers, so that the sender feels the slow reads within seconds.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="slow-peer", daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(upstream, client, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, self.rate), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, rate: int) -> None:
        started, moved = time.monotonic(), 0
        try:
            while data := source.recv(4096):
                sink.sendall(data)
                moved += len(data)
                if rate:
                    self.forwarded += len(data)
                    ahead = moved / rate - (time.monotonic() - started)
                    if ahead > 0:
                        self._closing.wait(ahead)
        except OSError:
            pass

    def close(self) -> None:
        self._closing.set()
        for sock in [self._listener, *self._sockets]:
            with suppress(OSError):
                sock.close()


def test_a_receiver_reading_slower_than_the_bitrate_costs_drops_not_real_time(tmp_path, receiver):
    proxy = SlowPeer(receiver.port, SLOW_BYTES_PER_SECOND)
    wav = tmp_path / "stream.wav"
    lags = []
    try:
        with stream_process(tmp_path, ["--checkpoint", "rule-based", "--output", f"rtmp://127.0.0.1:{proxy.port}/live",
                                       "--output", str(wav)]) as daemon:
            daemon.until(lambda s: sink_of(s, "ffmpeg")["detail"]["encoded_seconds"] >= 1.0, 30)
            first = daemon.sample()
            # The slow peer's buffers and ffmpeg's per-target queue (1200 packets, ~20 s) fill up,
            # then packets for that target are dropped: counted in /status.
            overflowed = daemon.until(lambda s: lags.append(s["clock"]["lag_seconds"]) or
                                      sink_of(s, "ffmpeg")["detail"]["target_overflows"] >= 1, 120)
            # Ten more seconds of stream with the peer still slow.
            daemon.until(lambda s: lags.append(s["clock"]["lag_seconds"]) or
                         s["clock"]["position_seconds"] >= overflowed["clock"]["position_seconds"] + 10, 30)
            last = daemon.sample()
            ffmpeg, file_sink = sink_of(last[1], "ffmpeg"), sink_of(last[1], "file")
            assert daemon.stop() == 0
    finally:
        proxy.close()
    sent_rate = ffmpeg["detail"]["encoded_seconds"] and proxy.forwarded / ffmpeg["detail"]["encoded_seconds"]
    report("slow_receiver", peer_reads_bytes_per_second=SLOW_BYTES_PER_SECOND,
           peer_got_bytes_per_second=round(sent_rate),
           first_overflow_after_stream_seconds=round(overflowed["clock"]["position_seconds"]
                                                     - first[1]["clock"]["position_seconds"], 1),
           target_overflows=ffmpeg["detail"]["target_overflows"], target_state=ffmpeg["detail"]["targets"][0]["state"],
           clock_drift_seconds=round(clock_drift(first, last), 3), max_clock_lag_seconds=max(lags),
           clock_resyncs=last[1]["clock"]["resyncs"], ffmpeg_restarts=ffmpeg["restarts"],
           ffmpeg_input_dropped_frames=ffmpeg["frames_dropped"], file_dropped_frames=file_sink["frames_dropped"])

    # Real time throughout: the clock kept pace with the wall clock and never fell 2 s behind (a
    # resync). (Its momentary lag is CPU scheduling on a busy machine, reported, not asserted.)
    assert abs(clock_drift(first, last)) < DRIFT_LIMIT_SECONDS and last[1]["clock"]["resyncs"] == 0
    # The encoder kept reading its input and was never restarted; the slow target's drops are counted.
    assert ffmpeg["restarts"] == 0 and ffmpeg["frames_dropped"] == 0 and file_sink["frames_dropped"] == 0
    assert ffmpeg["detail"]["target_overflows"] >= 1 and ffmpeg["detail"]["targets"][0]["overflows"] >= 1


# ----------------------------------------------------------------------------- composer faults


def stream_seconds_later(daemon: Daemon, seconds: float, timeout: float) -> None:
    """Wait until the stream's clock has released `seconds` more of audio."""
    position = daemon.clock.position_seconds
    until(lambda: daemon.clock.position_seconds >= position + seconds, timeout, f"{seconds} s of stream")


def test_a_composer_that_raises_or_hangs_is_covered_by_the_fallback_bed(tmp_path, receiver):
    composer = ComposerOnCue()
    faults = {}
    settings = f'outputs = ["{receiver.ingest_url}"]\nbuffer_seconds = 4.0\nready_seconds = 2.0\n'
    with daemon_in_process(tmp_path, composer, settings) as daemon:
        until(lambda: daemon.status()["state"] == "running" and receiver.ingest.first_media_after(0.0), 30,
              "the stream at nginx")
        stream_seconds_later(daemon, 4.0, 20)
        for fault, seconds in (("raise", 15.0), ("hang", 15.0)):  # both outlast the 4 s buffer
            before = dict(daemon.status()["counters"])
            composer.fault(fault)
            fallback_seen = []
            position = daemon.clock.position_seconds
            until(lambda: fallback_seen.append(daemon.status()["now_playing"]["fallback"]) or
                  daemon.clock.position_seconds >= position + seconds, seconds + 20, f"{seconds} s of '{fault}'")
            composer.release()
            # The composer's bars play again (a failing one is retried within 5 s).
            until(lambda: (s := daemon.status())["now_playing"]["composer_id"] == composer.id
                  and not s["now_playing"]["fallback"], 30, "the composer's bars again")
            after = daemon.status()["counters"]
            faults[fault] = {"stream_seconds": seconds, "fallback_heard": any(fallback_seen),
                             **{name: after[name] - before[name]
                                for name in ("composer_errors", "underruns", "fallback_bars", "pcm_underruns")}}
            stream_seconds_later(daemon, 3.0, 20)
        code = daemon.exit_code
    receiver.close()
    [recording] = receiver.recordings()
    continuity = check_continuity(recording.path)
    silences = detect_silence(recording.path)
    report("composer_faults", faults=faults, composer_calls_raised=composer.raised, composer_calls_hung=composer.hung,
           receiver_audio_seconds=round(continuity.audio_seconds, 1),
           receiver_max_audio_step_ms=round(continuity.max_audio_step * 1000, 1),
           receiver_silences_over_200ms=silences)

    assert code == 0
    assert composer.raised >= 3 and composer.hung == 1
    for fault in ("raise", "hang"):
        assert faults[fault]["fallback_heard"] and faults[fault]["fallback_bars"] >= 1, faults
        assert faults[fault]["underruns"] >= 1 and faults[fault]["pcm_underruns"] == 0, faults
    assert faults["raise"]["composer_errors"] == composer.raised
    # At the receiver: one unbroken stream, never quiet for 200 ms.
    assert continuity.ok and continuity.codecs == {"aac", "h264"}, continuity
    assert silences == []


NAN_STREAM_SECONDS = 300.0


def test_nan_in_the_composers_bars_is_rejected_and_counted(tmp_path):
    composer = ComposerOnCue()
    composer.fault("nan")  # every other bar carries a NaN, in each field in turn
    wav = tmp_path / "stream.wav"
    settings = f'outputs = ["{wav}"]\nspeed = 0.0\nbuffer_seconds = 4.0\nready_seconds = 0.0\n'
    with daemon_in_process(tmp_path, composer, settings, duration=NAN_STREAM_SECONDS) as daemon:
        pass  # unpaced: five minutes of stream in a few seconds
    counters = daemon.status()["counters"]
    silences = detect_silence(wav)
    report("composer_nan", nan_bars_emitted=len(composer.nan_bars), fields=sorted(set(composer.nan_bars)),
           composer_errors=counters["composer_errors"], nonfinite_samples=counters["nonfinite_samples"],
           fallback_bars=counters["fallback_bars"], bars_played=counters["bars_played"],
           wav_seconds=round(wav_frames(wav) / RATE, 3), silences_over_200ms=silences)

    assert daemon.exit_code == 0
    # (How many NaN bars fit depends on the machine: unpaced, a failing composer is not waited for.)
    assert set(composer.nan_bars) == set(ComposerOnCue.NAN_FIELDS)
    # Every NaN bar was rejected before the renderer and counted; nothing non-finite reached the audio.
    assert counters["composer_errors"] == len(composer.nan_bars)
    assert counters["nonfinite_samples"] == 0
    assert abs(wav_frames(wav) - NAN_STREAM_SECONDS * RATE) <= 1024 and silences == []


# ----------------------------------------------------------------------------- bad checkpoints


class PicklePayload:
    """Unpickling this opens (creates) `marker`: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def match_card(directory: Path, kind: str = "vae") -> None:
    """Make the card's checksum and size fit the weights file, so that what follows is tested."""
    weights, card_path = directory / f"{kind}.safetensors", directory / f"{kind}.json"
    card = json.loads(card_path.read_text())
    data = weights.read_bytes()
    card.update(weights_sha256=hashlib.sha256(data).hexdigest(), weights_bytes=len(data))
    card_path.write_text(json.dumps(card))


def corrupt(directory: Path, marker: Path) -> None:
    """Bit rot: 64 bytes inverted in the middle, same size (the card's checksum catches it)."""
    path = directory / "vae.safetensors"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def truncated(directory: Path, marker: Path) -> None:
    """A copy cut short (a full disk): half the weights file, the card as it was."""
    path = directory / "vae.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def wrong_shape(directory: Path, marker: Path) -> None:
    """Valid safetensors whose first matrix lost a row, with a card that matches the file."""
    path = directory / "vae.safetensors"
    arrays = load_file(str(path))
    name = next(name for name, array in arrays.items() if array.ndim == 2)
    arrays[name] = arrays[name][:-1]
    save_file(arrays, str(path))
    match_card(directory)


def carrying_a_pickle(directory: Path, marker: Path) -> None:
    """A pickle (whose loading would create `marker`) in place of the weights, card matching."""
    payload = pickle.dumps(PicklePayload(marker), protocol=2)
    (directory / "vae.safetensors").write_bytes(payload)
    (directory / "vae.pt").write_bytes(payload)  # and where a pickle-loading reader might look
    match_card(directory)


def nan_weights(directory: Path, marker: Path) -> None:
    """A diverged training run: one tensor all NaN, card matching."""
    path = directory / "vae.safetensors"
    arrays = load_file(str(path))
    name = sorted(arrays)[0]
    arrays[name] = np.full_like(arrays[name], np.nan)
    save_file(arrays, str(path))
    match_card(directory)


# The ring holds `stream.buffer_seconds` of composed bars: a new model is heard that much after
# its swap. A short buffer lets these tests hear what plays after a reload within seconds.
BUFFER_SECONDS = 8.0
SHORT_BUFFER = {"CHIPLOFI_STREAM__BUFFER_SECONDS": str(BUFFER_SECONDS), "CHIPLOFI_STREAM__READY_SECONDS": "4"}
BAD_CHECKPOINTS = (corrupt, truncated, wrong_shape, carrying_a_pickle, nan_weights)
CHECKPOINT_FILES = ("vae.safetensors", "vae.json", "lstm.safetensors", "lstm.json")


def install(source: Path, target: Path) -> None:
    """Put a checkpoint's files in place one by one, each atomically (as a deploy would)."""
    for name in CHECKPOINT_FILES:
        shutil.copy(source / name, target / f".{name}.tmp")
        os.replace(target / f".{name}.tmp", target / name)


def test_sighup_with_bad_checkpoints_keeps_the_old_model_and_runs_nothing_from_them(tmp_path):
    good = tmp_path / "good"
    good_id = write_checkpoint(good, seed=0)
    live = tmp_path / "checkpoint"
    shutil.copytree(good, live)
    marker = tmp_path / "code-from-the-checkpoint-ran"
    wav = tmp_path / "stream.wav"
    rejected = []
    with stream_process(tmp_path, ["--checkpoint", str(live), "--output", str(wav), "--output", "null"],
                        SHORT_BUFFER) as daemon:
        daemon.until(lambda s: s["checkpoint"]["id"] == good_id and s["now_playing"]["composer_id"] == good_id, 60)
        for count, spoil in enumerate(BAD_CHECKPOINTS, start=1):
            install(good, live)
            spoil(live, marker)
            daemon.proc.send_signal(signal.SIGHUP)
            after = daemon.until(lambda s: s["checkpoint"]["reload_failures"] == count
                                 and not s["checkpoint"]["reloading"], 30)
            rejected.append({"checkpoint": spoil.__name__, "error": after["checkpoint"]["last_reload_error"],
                             "id_after": after["checkpoint"]["id"], "fallback": after["now_playing"]["fallback"],
                             "marker_exists": marker.exists()})
            (live / "vae.pt").unlink(missing_ok=True)
        # Past the buffer: what plays now was composed after the last rejection, by the old model.
        final = daemon.until(lambda s: s["clock"]["position_seconds"]
                             >= after["clock"]["position_seconds"] + BUFFER_SECONDS + 2, 30)
        assert daemon.stop() == 0
    silences = detect_silence(wav)
    report("bad_checkpoints", good_id=good_id, rejected=rejected, reloads_ok=final["checkpoint"]["reloads"],
           reloads_failed=final["checkpoint"]["reload_failures"], underruns=final["counters"]["underruns"],
           playing_at_the_end=final["now_playing"]["composer_id"], code_ran=marker.exists(),
           wav_silences_over_200ms=silences)

    for outcome in rejected:
        assert outcome["id_after"] == good_id and not outcome["fallback"], outcome
        assert "vae.safetensors" in outcome["error"] and not outcome["marker_exists"], outcome
    assert final["checkpoint"]["reloads"] == 0 and final["counters"]["underruns"] == 0
    assert final["checkpoint"]["id"] == final["now_playing"]["composer_id"] == good_id
    assert not marker.exists()
    assert silences == []


def test_ten_sighups_within_a_second_leave_one_consistent_model(tmp_path):
    a_id, b_id = write_checkpoint(tmp_path / "a", seed=0), write_checkpoint(tmp_path / "b", seed=1)
    live = tmp_path / "checkpoint"
    shutil.copytree(tmp_path / "a", live)
    seen_ids = set()
    with stream_process(tmp_path, ["--checkpoint", str(live), "--output", "null"], SHORT_BUFFER) as daemon:
        daemon.until(lambda s: s["checkpoint"]["id"] == a_id and s["now_playing"]["composer_id"] == a_id, 60)
        # The checkpoint flips between A and B under the reloads, B last: ten sets of files staged
        # next to it, each put in place (file by file) just before its SIGHUP.
        for number in range(10):
            for name in CHECKPOINT_FILES:
                shutil.copy(tmp_path / ("b" if number % 2 else "a") / name, live / f".{number}.{name}")
        watching = threading.Event()
        watcher = threading.Thread(target=lambda: [seen_ids.add(daemon.status()["checkpoint"]["id"])
                                                   for _ in iter(lambda: watching.wait(0.05), True)], daemon=True)
        watcher.start()
        started = time.monotonic()
        for number in range(10):
            time.sleep(max(0.0, started + number * 0.09 - time.monotonic()))  # one SIGHUP every 90 ms
            for name in CHECKPOINT_FILES:
                os.replace(live / f".{number}.{name}", live / name)
            daemon.proc.send_signal(signal.SIGHUP)
        spread = time.monotonic() - started
        settled = daemon.until(lambda s: not s["checkpoint"]["reloading"] and s["checkpoint"]["id"] == b_id
                               and s["now_playing"]["composer_id"] == b_id, 60)
        settle_seconds = time.monotonic() - started
        watching.set()
        watcher.join(5)
        assert daemon.alive()
        assert daemon.stop() == 0
    text = daemon.text()
    # The kernel merges a SIGHUP that arrives while another is still pending: on a busy machine
    # the daemon may see fewer than ten; one of them always comes after the last files were in place.
    report("sighup_storm", signals_sent=10, signals_received=text.count("received SIGHUP"),
           within_seconds=round(spread, 2),
           settled_after_seconds=round(settle_seconds, 1), reloads_ok=settled["checkpoint"]["reloads"],
           reloads_failed=settled["checkpoint"]["reload_failures"], ids_seen=sorted(seen_ids),
           final_id=settled["checkpoint"]["id"])

    assert 1 <= text.count("received SIGHUP") <= 10 and spread < 1.0
    assert settled["checkpoint"]["id"] == b_id and settled["now_playing"]["composer_id"] == b_id
    assert seen_ids <= {a_id, b_id}  # never half of one checkpoint and half of the other
    assert settled["checkpoint"]["reloads"] >= 1 and "Traceback" not in text
    assert settled["counters"]["underruns"] == 0


# ----------------------------------------------------------------------------- SIGSTOP

STOP_SECONDS = 12.0  # longer than ffmpeg's stall limit (10 s), which a frozen daemon must not trip
WATCHDOG_USEC = 2_000_000  # the daemon pings every second


def test_sigstop_then_sigcont_resumes_the_stream_and_the_watchdog_notices(tmp_path, receiver):
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    try:
        with stream_process(tmp_path, ["--checkpoint", "rule-based", "--output", receiver.ingest_url], env) as daemon:
            daemon.until(lambda s: sink_of(s, "ffmpeg")["connected"], 30)
            until(lambda: notify.received("READY=1") and len(notify.received("WATCHDOG=1")) >= 3, 20,
                  "READY=1 and watchdog pings")
            assert receiver.wait_for_recording(3.0, 30), "the receiver records nothing"
            first = daemon.sample()
            daemon.proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(STOP_SECONDS)  # the fault: the daemon frozen (its ffmpeg runs on, starved)
            daemon.proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            until(lambda: len(notify.received("WATCHDOG=1", since=resumed)) >= 3, 15, "pings after SIGCONT")
            daemon.until(lambda s: s["clock"]["position_seconds"] >= first[1]["clock"]["position_seconds"] + 8, 30)
            last = daemon.sample()
            ffmpeg = sink_of(last[1], "ffmpeg")
            assert daemon.stop() == 0
    finally:
        notify.close()
    pings = notify.received("WATCHDOG=1")
    gap = max(b - a for a, b in pairwise(pings))
    first_ping_after = min(t for t in pings if t > resumed) - resumed
    [recording] = receiver.recordings()
    continuity = check_continuity(recording.path)
    audio = [p for p in probe_packets(recording.path) if p.codec_type == "audio"]
    arrivals = [recording.arrival(p) for p in audio]
    arrival_gap = max(b - a for a, b in pairwise(arrivals))
    burst = [p.pts for p, at in zip(audio, arrivals, strict=True) if resumed < at <= resumed + 3.0]
    text = daemon.text()
    report("sigstop", stopped_seconds=STOP_SECONDS, watchdog_usec=WATCHDOG_USEC,
           longest_ping_gap_seconds=round(gap, 2), first_ping_after_sigcont_seconds=round(first_ping_after, 2),
           clock_resyncs=last[1]["clock"]["resyncs"], clock_behind_wall_seconds=round(-clock_drift(first, last), 2),
           ffmpeg_restarts=ffmpeg["restarts"], receiver_arrival_gap_seconds=round(arrival_gap, 2),
           media_arriving_in_3_s_after_sigcont=round(burst[-1] - burst[0], 2) if burst else 0.0,
           receiver_max_audio_step_ms=round(continuity.max_audio_step * 1000, 1),
           receiver_sessions=len(receiver.recordings()))

    # systemd would have noticed: no ping for longer than WATCHDOG_USEC while frozen ...
    assert gap >= STOP_SECONDS - 1.0 > WATCHDOG_USEC / 1e6
    assert not [t for t in pings if stopped + 0.5 < t < resumed]
    # ... and pings resume right after SIGCONT (every second, as WATCHDOG_USEC / 2 asks).
    assert first_ping_after < 2.5
    # The stream resumes where it stopped, in real time: one resync, no catch-up burst, no
    # ffmpeg restart, the receiver's timeline unbroken (the pause shows as late arrival only).
    assert last[1]["clock"]["resyncs"] == 1 and "without a catch-up burst" in text
    assert ffmpeg["restarts"] == 0
    assert continuity.ok and continuity.codecs == {"aac", "h264"}, continuity
    assert arrival_gap >= STOP_SECONDS - 1.0
    assert burst and burst[-1] - burst[0] <= 3.5, burst


# ----------------------------------------------------------------------------- the track archive


def test_an_archive_directory_that_becomes_unwritable_leaves_the_stream_alone(tmp_path, receiver):
    composer = ComposerOnCue(track_bars=2)  # a track every ~6 s, so the archive writes often
    tracks = tmp_path / "state" / "tracks"
    settings = f'outputs = ["{receiver.ingest_url}"]\n'
    with daemon_in_process(tmp_path, composer, settings) as daemon:
        until(lambda: daemon.status()["archive"].get("written", 0) >= 1 and receiver.ingest.first_media_after(0.0), 60,
              "a track archived and the stream at nginx")
        first = (time.monotonic(), daemon.status())
        # Unwritable: the directory replaced by a regular file (root ignores permission bits).
        tracks.rename(tmp_path / "tracks-away")
        tracks.write_text("not a directory")
        failed = until(lambda: (s := daemon.status())["archive"]["errors"] >= 3 and s, 60, "three failed tracks")
        tracks.unlink()
        (tmp_path / "tracks-away").rename(tracks)
        written = failed["archive"]["written"]
        until(lambda: daemon.status()["archive"]["written"] > written, 30, "archiving again")
        last = (time.monotonic(), daemon.status())
        ffmpeg = sink_of(last[1], "ffmpeg")
        code = daemon.exit_code
    receiver.close()
    [recording] = receiver.recordings()
    continuity = check_continuity(recording.path)
    silences = detect_silence(recording.path)
    log_text = (tmp_path / "daemon.log").read_text()
    report("archive_unwritable", tracks_failed=failed["archive"]["errors"],
           tracks_written=last[1]["archive"]["written"], warnings=log_text.count("track archive: cannot write"),
           underruns=last[1]["counters"]["underruns"], ffmpeg_restarts=ffmpeg["restarts"],
           clock_drift_seconds=round(clock_drift(first, last), 3),
           receiver_max_audio_step_ms=round(continuity.max_audio_step * 1000, 1),
           receiver_silences_over_200ms=silences)

    assert code == 0
    assert log_text.count("track archive: cannot write") == 1 and "writing to" in log_text
    assert last[1]["counters"]["underruns"] == 0 and ffmpeg["restarts"] == 0
    assert abs(clock_drift(first, last)) < DRIFT_LIMIT_SECONDS
    assert continuity.ok and continuity.codecs == {"aac", "h264"}, continuity
    assert silences == []
