"""Sinks: null, WAV file, speakers without a sound card, and ffmpeg supervision (with a stand-in
ffmpeg script, so these run in a second; the real ffmpeg is in tests/integration)."""

import dataclasses
import errno
import logging
import os
import re
import resource
import socket
import stat
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from streamer import wavfile
from streamer.config import SinkSettings, VideoSettings
from streamer.errors import OutputFileError
from streamer.ringbuffer import AudioBlock
from streamer.sinks import BackoffDelays, SinkState
from streamer.sinks.ffmpeg import FfmpegSink, file_target, network_target, pipe_bytes, recording_target, with_stream_key
from streamer.sinks.file import FileSink
from streamer.sinks.null import NullSink
from streamer.sinks.recordings import prune_recordings
from streamer.sinks.speakers import SpeakersSink
from streamer.video_files import VideoFiles
from streamer.wavfile import WavWriter, recover_part, to_pcm16

RATE = 44100


def _blocks(count: int, frames: int = 1024, seed: int = 0) -> list[AudioBlock]:
    rng = np.random.default_rng(seed)
    blocks = []
    for i in range(count):
        pcm = (rng.uniform(-0.5, 0.5, (frames, 2))).astype(np.float32)
        blocks.append(AudioBlock(pcm, to_pcm16(pcm), i * frames, RATE))
    return blocks


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_null_sink_counts_everything():
    sink = NullSink()
    sink.start()
    for block in _blocks(3):
        assert sink.submit(block)
    snap = sink.snapshot()
    assert snap.healthy and snap.connected and snap.frames_written == 3072 and snap.bytes_written == 3072 * 4
    sink.stop(1)
    assert sink.snapshot().state == SinkState.STOPPED


def test_file_sink_writes_the_same_samples_in_segments(tmp_path):
    path = tmp_path / "rec" / "out.wav"
    sink = FileSink(path, RATE, queue_seconds=10, segment_seconds=2048 / RATE)
    blocks = _blocks(5)
    sink.start()
    for block in blocks:
        assert sink.submit(block)
    sink.stop(5)
    files = [path, path.with_name("out-001.wav"), path.with_name("out-002.wav")]
    assert [f.exists() for f in files] == [True, True, True]
    data = b""
    for f in files:
        with wave.open(str(f)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 2, 2)
            data += w.readframes(w.getnframes())
    assert data == b"".join(b.pcm16 for b in blocks)
    assert sink.snapshot().frames_written == 5 * 1024


def test_file_sink_failure_stays_in_that_sink_and_it_writes_again_when_it_can(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink(blocker / "out.wav", RATE, retry_seconds=0.2)
    sink.start()
    assert _wait(lambda: sink.snapshot().state == SinkState.RESTARTING)
    for block in _blocks(3):
        sink.submit(block)  # never blocks
    snap = sink.snapshot()
    assert not snap.healthy and "not-a-dir" in snap.last_error
    assert _wait(lambda: sink.snapshot().frames_dropped == 3 * 1024)
    blocker.unlink()
    for block in _blocks(3):
        sink.submit(block)
        time.sleep(0.1)
    assert _wait(lambda: sink.snapshot().state == SinkState.RUNNING)
    sink.stop(2)
    with wave.open(str(blocker / "out.wav")) as wav:
        assert wav.getnframes() > 0


def test_a_part_that_cannot_be_finished_keeps_its_samples_and_lets_go_of_its_descriptor(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"
    writer = WavWriter(path, RATE)
    block = _blocks(1)[0]
    writer.write(block.pcm)
    fd = writer._fd

    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(wavfile.os, "fsync", no_space)
        with pytest.raises(OutputFileError, match="out.wav: cannot finish writing .*No space left"):
            writer.close()
    with pytest.raises(OSError) as closed:
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF
    (part,) = tmp_path.glob(".out.wav.*.part")
    assert recover_part(part, path) == pytest.approx(block.frames / RATE)
    with wave.open(str(path)) as wav:
        assert wav.readframes(wav.getnframes()) == block.pcm16


def test_speakers_without_a_device_warn_once_and_discard(caplog):
    sink = SpeakersSink(RATE, retry_seconds=0.05, device=987654)  # a device that cannot exist
    with caplog.at_level(logging.WARNING, logger="streamer.sinks.speakers"):
        sink.start()
        assert _wait(lambda: sink.snapshot().state == SinkState.UNAVAILABLE)
        time.sleep(0.2)  # a few retries
        for block in _blocks(10):
            assert sink.submit(block)  # never blocks, never counts as a drop
    sink.stop(2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "retrying" in warnings[0].getMessage()
    snap = sink.snapshot()
    assert snap.frames_dropped == 0 and not snap.healthy


SPEAKERS_SCRIPT = """
import time, numpy as np
from streamer.ringbuffer import AudioBlock
from streamer.sinks.speakers import SpeakersSink
sink = SpeakersSink(44100)
sink.start()
pcm = np.zeros((1024, 2), np.float32)
deadline = time.monotonic() + 10
while sink.snapshot().state not in ("running", "unavailable") and time.monotonic() < deadline:
    time.sleep(0.02)
for i in range(5):
    sink.submit(AudioBlock(pcm, bytes(4096), i * 1024, 44100))
while sink.snapshot().frames_written < 5 * 1024 and time.monotonic() < deadline:
    time.sleep(0.02)
sink.stop(2)
print(sink.snapshot().state, sink.snapshot().frames_written)
"""


def test_speakers_play_on_a_null_alsa_device(tmp_path):
    # PortAudio reads the ALSA configuration once per process: run in a fresh one.
    conf = tmp_path / "asound.conf"
    conf.write_text("pcm.!default { type null }\n")
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    result = subprocess.run([sys.executable, "-c", SPEAKERS_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    # The last line: pyfluidsynth prints where it found its library first when CI is set.
    assert result.stdout.strip().splitlines()[-1].split() == ["stopped", str(5 * 1024)]


def test_backoff_first_wait_is_short_then_doubles_and_resets():
    backoff = BackoffDelays(1.0, 8.0, healthy_after=60)
    assert [backoff.next(0.1) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.next(120.0) == 1.0


def test_stream_key_goes_into_the_url_and_never_into_the_label():
    assert with_stream_key("rtmp://a.rtmp.youtube.com/live2", "abcd-1234") == "rtmp://a.rtmp.youtube.com/live2/abcd-1234"
    assert with_stream_key("rtmp://b.rtmp.youtube.com/live2?backup=1", "k3y") == \
        "rtmp://b.rtmp.youtube.com/live2/k3y?backup=1"
    assert with_stream_key("rtmps://x/app/{key}/y", "k3y") == "rtmps://x/app/k3y/y"
    assert with_stream_key("rtmp://x/app/name", "") == "rtmp://x/app/name"
    target = network_target("rtmp://a.rtmp.youtube.com/live2", "secret-key-99")
    assert "secret-key-99" in target.url and "secret-key-99" not in target.label
    assert target.tee_slave().startswith("[f=flv:") and "onfail=ignore" in target.tee_slave()


def test_file_targets_and_recordings(tmp_path):
    assert file_target(tmp_path / "a.mkv").muxer == "matroska"
    assert file_target(tmp_path / "a.flv").muxer == "flv"
    with pytest.raises(ValueError):
        file_target(tmp_path / "a.xyz")
    rec = recording_target(tmp_path, 3600)
    assert rec.muxer == "segment" and rec.options["strftime"] == "1" and "%Y" in rec.url


def test_prune_recordings_deletes_oldest_first_but_never_the_newest(tmp_path):
    for i in range(4):
        f = tmp_path / f"chiplofi-2024010{i}-000000.mkv"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (1000 + i, 1000 + i))
    assert prune_recordings(tmp_path, 2500) == 2
    assert sorted(p.name[-19:-11] for p in tmp_path.iterdir()) == ["20240102", "20240103"]
    assert prune_recordings(tmp_path, 0) == 1  # the newest (being written) stays
    assert len(list(tmp_path.iterdir())) == 1


# ----------------------------------------------------------------------------- ffmpeg supervision

FAKE_FFMPEG = r'''#!{python}
import os, sys, time
mode = {mode!r}
log = open({log!r}, "a")
log.write("start %f %s\n" % (time.time(), " ".join(sys.argv[1:]).count("onfail=ignore")))
log.flush()
if mode == "exit":
    sys.stderr.write("[error] something went wrong\n")
    sys.exit(3)
if mode == "stuck":
    time.sleep(60)
if mode == "slowstart":
    time.sleep(1.5)  # loading, probing ...
    mode = "ok"
total = 0
while True:
    data = sys.stdin.buffer.read(4096)
    if not data:
        break
    total += len(data)
    if mode == "ok":
        seconds = total / (44100 * 4)
        sys.stderr.write("[info] frame=1 fps=0 q=0 size=1kB time=00:00:%05.2f bitrate=1kbits/s speed=1x\r" % seconds)
        sys.stderr.flush()
log.write("eof %d\n" % total)
sys.exit(0)
'''


def _fake_sink(tmp_path: Path, mode: str, live: bool = True, network: bool = True,
               **settings) -> tuple[FfmpegSink, Path]:
    """A sink running the fake ffmpeg above; `network=False`: a file target only (an RTMP target
    counts as connected only when a real peer acknowledges bytes, which no fake does)."""
    log_path = tmp_path / f"{mode}.log"
    script = tmp_path / f"ffmpeg-{mode}"
    script.write_text(FAKE_FFMPEG.format(python=sys.executable, mode=mode, log=str(log_path)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    sink_settings = dataclasses.replace(SinkSettings(), ffmpeg=str(script), restart_initial_seconds=0.2,
                                        **settings)
    targets = [network_target("rtmp://127.0.0.1:1/live", "topsecret")] if network else []
    targets.append(file_target(tmp_path / "out.mkv"))
    # A picture without scopes: the pipe carries the stereo mix alone, as the fake ffmpeg counts it.
    video = VideoSettings(layout=("waveform", "now_playing"))
    picture = VideoFiles(tmp_path, tmp_path / "static.png", None, None, tmp_path / "title.txt", tmp_path / "np.txt",
                         None)
    sink = FfmpegSink(targets, sample_rate=RATE, video=video, settings=sink_settings, picture=picture,
                      secrets=["topsecret"], live=live)
    return sink, log_path


def test_audio_reaches_an_ffmpeg_pipe_numbered_1024_or_more(tmp_path):
    """A daemon with many files open may get a pipe numbered 1024 or more, on which select()
    cannot wait: the block is still written whole."""
    sink, _ = _fake_sink(tmp_path, "ok")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    read_end, write_end = os.pipe()
    high = os.dup2(write_end, 1024)
    os.close(write_end)
    try:
        block = _blocks(1)[0]
        assert sink._write_all(high, block, 2.0, threading.Event()) == ""
        assert os.read(read_end, 1 << 16) == pipe_bytes(block, sink.channels)
    finally:
        os.close(high)
        os.close(read_end)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ffmpeg_command_line_has_youtube_settings_and_one_tee_slave_per_target(tmp_path):
    sink, _ = _fake_sink(tmp_path, "ok")
    args = sink.arguments()
    joined = " ".join(args)
    option = lambda name: args[args.index(name) + 1]  # noqa: E731
    assert option("-f") == "s16le" and option("-c:v") == "libx264" and option("-pix_fmt") == "yuv420p"
    assert option("-g") == option("-keyint_min") == str(2 * int(option("-r")))
    assert option("-sc_threshold") == "0" and option("-c:a") == "aac" and option("-b:a") == "128k"
    assert option("-b:v") == option("-maxrate") == option("-minrate")
    assert "tee" in args and joined.count("onfail=ignore") == 2 and "attempt_recovery=1" in joined
    assert "rtmp://127.0.0.1:1/live/topsecret" in args[-1]
    assert sink.snapshot().detail["targets"][0]["target"] == "rtmp://127.0.0.1:1/live/<redacted>"
    # Only the RTMP slave times out a hung peer and keeps a small send buffer.
    rtmp, recording = args[-1].split("|")
    assert "rw_timeout=5000000" in rtmp and "send_buffer_size=" in rtmp
    assert "rw_timeout" not in recording and "send_buffer_size" not in recording
    assert "reload=1" in option("-filter_complex") and "showwaves" in option("-filter_complex")


def test_an_rtmp_target_is_ok_only_while_a_probe_has_seen_it_deliver_lately(tmp_path):
    """A target marked "ok" by the last probe, with no probe since (a starved or stuck supervisor):
    /status and the sink's health read it as stalled once its last delivery is older than
    STALE_OK_SECONDS, while a recent delivery still reads "ok"."""
    from streamer.sinks.ffmpeg import STALE_OK_SECONDS

    sink, _ = _fake_sink(tmp_path, "ok")
    rtmp = sink.network_targets[0]
    now = time.monotonic()
    sink.state = SinkState.RUNNING
    sink._progress_seconds, sink._progress_changed = 30.0, now  # the encoder runs
    rtmp.state, rtmp.delivered_at = "ok", now - 0.5
    assert sink.connected() and sink.snapshot().detail["targets"][0]["state"] == "ok"
    rtmp.delivered_at = now - STALE_OK_SECONDS - 1.0
    snapshot = sink.snapshot()
    assert not sink.connected() and not snapshot.connected
    assert snapshot.detail["targets"][0]["state"] == "stalled"


def test_a_target_that_recovered_shows_its_last_error_with_its_age(tmp_path):
    """An RTMP target whose fifo failed once and which delivers again reads "ok" in /status; its
    last error stays, dated, so that an operator does not read an old failure as a current one."""
    sink, _ = _fake_sink(tmp_path, "ok")
    rtmp = sink.network_targets[0]
    assert sink.snapshot().detail["targets"][0]["last_error_seconds_ago"] is None  # no error yet
    line = f"[fifo @ 0x5] Recovery failed: No space left on device ({rtmp.url})"
    sink._on_fifo_line("0x5", "Recovery failed: No space left on device", line.encode())
    failed = sink.snapshot().detail["targets"][0]
    assert failed["state"] == "failing" and "No space left" in failed["last_error"]
    assert 0.0 <= failed["last_error_seconds_ago"] < 5.0
    rtmp.error_at -= 30.0  # 30 s later the peer takes bytes again
    rtmp.state, rtmp.delivered_at = "ok", time.monotonic()
    recovered = sink.snapshot().detail["targets"][0]
    assert recovered["state"] == "ok" and "No space left" in recovered["last_error"]
    assert 30.0 <= recovered["last_error_seconds_ago"] < 35.0
    assert "topsecret" not in str(recovered)


def test_ffmpeg_that_exits_is_restarted_quickly_and_the_key_is_not_logged(tmp_path, caplog):
    sink, log_path = _fake_sink(tmp_path, "exit")
    with caplog.at_level(logging.DEBUG):
        sink.start()
        assert _wait(lambda: sink.restarts >= 3, 15)
        sink.stop(3)
    starts = [float(line.split()[1]) for line in log_path.read_text().splitlines() if line.startswith("start")]
    assert starts[1] - starts[0] <= 2.0  # first retry ≤ 2 s
    assert starts[2] - starts[1] > starts[1] - starts[0]  # then backing off
    assert "exited with code 3" in sink.snapshot().last_error
    assert "topsecret" not in caplog.text and "something went wrong" in caplog.text


def test_ffmpeg_that_stops_reading_is_restarted_after_the_write_timeout(tmp_path):
    sink, log_path = _fake_sink(tmp_path, "stuck", write_timeout_seconds=0.5, queue_seconds=60)
    sink.start()
    assert _wait(lambda: sink.snapshot().state == SinkState.RUNNING)
    for block in _blocks(400):  # ≈ 1.6 MB: more than the pipe holds
        sink.submit(block)
    assert _wait(lambda: sink.restarts >= 1, 20)
    assert "stopped reading its input" in sink.restart_reasons[0]
    sink.stop(3)


def test_a_writer_waiting_on_a_closed_ffmpeg_input_never_writes_into_what_reuses_its_number(tmp_path):
    # Found in a full-disk run: ffmpeg was restarted while the writer waited on a full pipe, the
    # supervisor closed ffmpeg's stdin, the next /status connection got the freed descriptor
    # number, and the writer's PCM went into that HTTP response.
    sink, _ = _fake_sink(tmp_path, "stuck", write_timeout_seconds=30, queue_seconds=60)
    sink.start()
    assert _wait(lambda: sink.snapshot().state == SinkState.RUNNING)
    for block in _blocks(400):  # ≈ 1.6 MB: more than the pipe holds, so the writer waits
        sink.submit(block)
    assert _wait(lambda: sink.bytes_written > 0)
    time.sleep(0.3)
    proc = sink._proc
    assert proc is not None and proc.stdin is not None
    number = proc.stdin.fileno()
    mine, peer = socket.socketpair()
    try:
        sink._close_stdin(proc)  # what stopping or restarting ffmpeg does, while the writer waits
        os.dup2(mine.fileno(), number)  # the next descriptor the process opens takes the number
        peer.settimeout(1.5)
        with pytest.raises(TimeoutError):
            peer.recv(4096)
    finally:
        os.close(number)
        mine.close()
        peer.close()
        sink.stop(3)


def test_ffmpeg_without_progress_is_restarted(tmp_path):
    sink, _ = _fake_sink(tmp_path, "silent", stall_seconds=2.0)
    sink.start()
    deadline = time.monotonic() + 20
    while sink.restarts == 0 and time.monotonic() < deadline:
        for block in _blocks(10):
            sink.submit(block)
        time.sleep(0.1)
    assert sink.restarts >= 1 and "no progress" in sink.restart_reasons[0]
    sink.stop(3)


def test_ffmpeg_gets_every_byte_and_ends_cleanly_on_stop(tmp_path):
    sink, log_path = _fake_sink(tmp_path, "ok", live=False, network=False)  # unpaced: nothing may be dropped
    sink.start()
    blocks = _blocks(50)
    for block in blocks:
        assert sink.submit(block)
    assert _wait(lambda: sink.snapshot().connected)
    started = time.monotonic()
    sink.stop(4)
    assert time.monotonic() - started < 4
    assert sink.clean_exit and sink.restarts == 0
    assert re.search(r"^eof (\d+)$", log_path.read_text(), re.M).group(1) == str(sum(len(b.pcm16) for b in blocks))
    snap = sink.snapshot()
    assert snap.bytes_written == sum(len(b.pcm16) for b in blocks)
    assert [t["target"] for t in snap.detail["targets"]][0] == str(tmp_path / "out.mkv")


def test_live_ffmpeg_starts_with_current_audio_not_a_backlog(tmp_path):
    sink, log_path = _fake_sink(tmp_path, "slowstart", queue_seconds=10, network=False)
    sink.start()
    blocks = _blocks(130)  # ≈ 3 s of audio arrives while ffmpeg is still starting
    assert _wait(lambda: sink.snapshot().state == SinkState.RUNNING)
    for block in blocks:
        sink.submit(block)
    assert _wait(lambda: sink.snapshot().connected, 10)
    sink.stop(4)
    received = int(re.search(r"^eof (\d+)$", log_path.read_text(), re.M).group(1))
    total = sum(len(b.pcm16) for b in blocks)
    # What it got: the pipe's worth plus the newest 0.3 s; the rest was dropped (and counted).
    assert received <= (1 << 15) + 0.3 * RATE * 4 + 2 * 4096 + 65536
    assert sink.snapshot().frames_dropped * 4 == total - received
