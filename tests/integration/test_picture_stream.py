"""The picture viewers see, taken from real streams to nginx-rtmp and from ffmpeg's own output.

- Only the bass plays (then only the lead and the drums): only those scopes move; the title and
  the track's title are drawn; the status page's thumbnail is a JPEG of the encoded picture; the
  title is in /status, the archive and the log.
- An operator's still background and logo: their pixels where expected; the original files
  deleted while streaming and ffmpeg killed: the restarted ffmpeg draws the same picture.
- A looped video background over an accelerated hour: audio and video end together (≤ 40 ms)
  and the last frames show the background frame the timeline says.
- A bad background or logo: one line naming the key, from `config check` and at start.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamer.composer import RuleBasedComposer
from streamer.config import Config, StatusSettings, StreamSettings, VideoSettings
from streamer.daemon import Daemon
from streamer.outputs import KEY_ENV
from streamer.track_titles import track_title
from streamer.types import VOICES, Bar
from streamer.video import NowPlayingFile, build_video_graph, encoder_options, pipe_channels, pipe_layout, preset_of
from streamer.video_files import prepare_video_files
from streamer.video_layout import Layout, Rect, layout_for
from testkit.receiver import check_continuity, decode_frames, probe_packets, receiver_fixture
from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAM_KEY = "pic-key-7c21e0"
receiver = receiver_fixture(STREAM_KEY)


class OnlyVoices:
    """A rule-based composer whose bars keep only `voices` (a MIDI with only the bass, say)."""

    def __init__(self, seed: int, voices: set[str]) -> None:
        self._composer = RuleBasedComposer(seed)
        self.voices = voices
        self.seed = seed

    @property
    def id(self) -> str:
        return f"only-{'-'.join(sorted(self.voices))}"

    def next_bar(self) -> Bar:
        bar = self._composer.next_bar()
        return dataclasses.replace(bar, notes=tuple(n for n in bar.notes if n.voice in self.voices))


def _inside(rect: Rect, layout: Layout) -> tuple[slice, slice]:
    """Output-pixel rows and columns inside a canvas box's border (and below its label)."""
    s = layout.scale
    top = rect.y + 2 + layout.label_size
    return slice((top + 1) * s, (rect.y + rect.h - 2) * s), slice((rect.x + 2) * s, (rect.x + rect.w - 2) * s)


def _motion(frames: np.ndarray, rows: slice, cols: slice) -> float:
    """Mean absolute change of a region between consecutive frames (0..255)."""
    region = frames[:, rows, cols].astype(np.int16)
    return float(np.abs(np.diff(region, axis=0)).mean())


def _near(pixels: np.ndarray, colour: str, tolerance: int = 40) -> np.ndarray:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return (np.abs(pixels.astype(np.int16) - rgb) <= tolerance).all(axis=-1)


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.mark.parametrize("playing", [{"bass"}, {"lead", "drums"}], ids=["bass", "lead+drums"])
def test_only_the_scopes_of_the_voices_playing_move(receiver, tmp_path, caplog, playing):
    status_port = free_port()
    config = Config(stream=StreamSettings(outputs=(receiver.ingest_url,), state_dir=str(tmp_path / "state"),
                                          checkpoint="rule-based"),
                    status=StatusSettings(addr=f"127.0.0.1:{status_port}"),
                    video=VideoSettings(title="Bass Club Radio", thumbnail_seconds=1.0))
    daemon = Daemon(config, environ={KEY_ENV: STREAM_KEY}, composer_loader=lambda _, seed: OnlyVoices(seed, playing))
    thread = threading.Thread(target=daemon.run, name="daemon-under-test")
    with caplog.at_level(logging.INFO, logger="streamer.audio_thread"):
        thread.start()
        try:
            assert receiver.wait_for_recording(12.0, 60), "no stream at the receiver"
            now, video = status(status_port)["now_playing"], status(status_port)["video"]
            assert now["title"] == track_title(now["track_id"]) and now["title"]
            assert video["layout"] == list(config.video.layout) and 0 <= video["thumbnail_age_seconds"] < 5
            code, kind, body = _get(status_port, "/thumbnail.jpg")
            thumbnail = Image.open(io.BytesIO(body))
            assert code == 200 and kind == "image/jpeg" and thumbnail.format == "JPEG" and thumbnail.width == 480
            assert b"/thumbnail.jpg" in _get(status_port, "/")[2]
        finally:
            daemon.request_stop("test over")
            thread.join(15)
    assert not thread.is_alive() and daemon.counters.underruns == 0
    receiver.recorder.stop()
    recording = receiver.recordings()[-1]
    frames = decode_frames(recording.path, fps=5, start=4.0, seconds=6.0)
    assert len(frames) >= 25
    preset = preset_of(config.video)
    layout = layout_for(preset.width, preset.height, text_lines=0)
    motion = {voice: _motion(frames, *_inside(layout.scopes[voice], layout)) for voice in VOICES}
    moving = min(motion[voice] for voice in playing)
    # A still scope changes by about 0.01 grey levels a frame (the encoder's noise); a playing one
    # by 3 to 25, by how many notes or hits fall in these 6 s (an intro may hold few drums).
    assert moving > 1.0, motion
    assert all(motion[voice] < moving / 8 for voice in VOICES if voice not in playing), motion
    # The title and the track's title are drawn, in the text colour, where the layout puts them.
    s, last = layout.scale, frames[-1]
    title = last[layout.title_y * s:(layout.title_y + layout.title_size) * s, :preset.width // 2]
    now_title = last[layout.now_title_y * s:(layout.now_title_y + layout.now_size) * s, :preset.width // 2]
    for region in (title, now_title):
        assert 500 < _near(region, config.video.text_colour).sum() < region.shape[0] * region.shape[1] // 2
    # The title is in the log and in the archive, beside key and tempo.
    records = [json.loads(p.read_text()) for p in (tmp_path / "state" / "tracks").glob("*.json")]
    assert records and all(r["title"] == track_title(r["track_id"]) for r in records)
    assert f"now playing: {records[0]['track_id']}, {records[0]['title']!r}, {records[0]['key']}" in caplog.text


def _solid_png(path: Path, size: tuple[int, int], colour: tuple[int, ...], mode: str = "RGB") -> Path:
    Image.new(mode, size, colour).save(path)
    return path


def test_the_operators_background_and_logo_survive_their_files_and_an_ffmpeg_restart(receiver, tmp_path):
    background = _solid_png(tmp_path / "my background.png", (640, 360), (30, 160, 70))
    logo = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    logo.paste((240, 40, 40, 255), (20, 20, 80, 80))  # a red square with a see-through frame around it
    logo.save(tmp_path / "logo.png")
    status_port = free_port()
    config = tmp_path / "stream.toml"
    config.write_text(f'[stream]\ncheckpoint = "rule-based"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'outputs = ["{receiver.ingest_url}"]\n[status]\naddr = "127.0.0.1:{status_port}"\n'
                      f'[video]\nbackground = "{background}"\nlogo = "{tmp_path / "logo.png"}"\n'
                      'logo_corner = "bottom-right"\nlayout = ["now_playing", "title", "logo"]\n')
    daemon_log = tmp_path / "daemon.log"
    env = {**os.environ, KEY_ENV: STREAM_KEY, "PYTHONUNBUFFERED": "1"}
    with open(daemon_log, "wb") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "streamer.cli", "stream", "--config", str(config)], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        assert receiver.wait_for_recording(4.0, 60), daemon_log.read_text()
        background.unlink()
        (tmp_path / "logo.png").unlink()
        sink = next(s for s in status(status_port)["sinks"] if s["kind"] == "ffmpeg")
        os.kill(sink["detail"]["pid"], signal.SIGKILL)
        assert wait_for(lambda: len(receiver.recordings()) >= 2 and receiver.recordings()[-1].size > 200_000, 60), \
            daemon_log.read_text()
        assert wait_for(lambda: next(s for s in status(status_port)["sinks"] if s["kind"] == "ffmpeg")["connected"], 30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(15)
        kill_if_running(daemon)
    assert code == 0
    receiver.recorder.stop()
    preset = preset_of(VideoSettings())
    layout = layout_for(preset.width, preset.height)
    for recording in receiver.recordings()[:2]:
        frame = decode_frames(recording.path, fps=2, start=1.0, seconds=1.0)[-1]
        # The background: everywhere nothing is drawn (the middle band, without scopes here).
        band = frame[preset.height * 2 // 5:preset.height * 3 // 5, preset.width // 8:preset.width * 7 // 8]
        assert _near(band, "#1ea046", 12).mean() > 0.98
        # The logo in its corner: red inside, background around it.
        logo_h = round(preset.height * 0.16) // 2 * 2
        margin = layout.margin * layout.scale
        corner = frame[preset.height - margin - logo_h:preset.height - margin, preset.width - margin - logo_h:
                       preset.width - margin]
        assert _near(corner, "#f02828", 40).mean() > 0.25 and _near(corner, "#1ea046", 20).mean() > 0.25
    assert "restart" in daemon_log.read_text()


def test_a_looped_video_background_keeps_to_the_audio_over_an_hour(tmp_path):
    """An hour of audio through the daemon's graph, as fast as ffmpeg goes, at a tiny size; the
    background's frame k is grey level 20 + 24 k, 8 frames at the output's 5 fps (a 1.6 s loop)."""
    fps, levels = 5, [20 + 24 * k for k in range(8)]
    loop = tmp_path / "loop.mkv"
    frames = b"".join(bytes([level]) * (320 * 180) for level in levels)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "320x180", "-r", str(fps),
                    "-i", "-", "-c:v", "ffv1", "-y", str(loop)], input=frames, check=True)
    # No scopes (the pipe then carries the stereo mix alone): the picture is timed the same way,
    # by the audio, and an hour of scopes would only make the test slower.
    settings = VideoSettings(size="128x72", fps=fps, video_kbps=600, audio_kbps=64, background=str(loop),
                             thumbnail_seconds=0, layout=("now_playing", "title"))
    files = prepare_video_files(settings, tmp_path / "video", "ffmpeg")
    NowPlayingFile(files.now_title, "Mellow Harbor"), NowPlayingFile(files.now_details, "C major · 73 BPM")
    graph = build_video_graph(settings, files, 44100)
    out = tmp_path / "hour.mkv"
    command = ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
               f"sine=frequency=110:sample_rate=44100:duration=3600,pan={pipe_layout(pipe_channels(settings))}|c0=c0|c1=c0"]
    for path, options in graph.inputs:
        command += [arg for key, value in options.items() for arg in (f"-{key}", value)] + ["-i", path]
    command += ["-filter_complex", graph.graph, "-map", "[vout]", "-map", "[aout]"]
    command += [arg for key, value in encoder_options(settings, 44100).items()
                for arg in ([f"-{key}"] + ([value] if value is not None else []))]
    subprocess.run(command + ["-f", "matroska", "-y", str(out)], check=True, timeout=1800)
    report = check_continuity(out)
    assert abs(report.video_seconds - 3600.0) <= 0.040, report  # the video ends with the audio it was fed
    assert 0 <= report.audio_seconds - 3600.0 <= 2 * 1024 / 44100, report  # AAC's priming and last frame
    assert report.av_drift <= 0.040 and report.ok, report
    # The last frames show the loop frame their time says: frame N is background frame N mod 8.
    video = [p for p in probe_packets(out) if p.codec_type == "video"]
    last_pts = max(p.pts for p in video)
    frames = decode_frames(out, fps=fps, start=last_pts - 3.0)
    first_index = round((last_pts - 3.0) * fps)
    for offset, frame in enumerate(frames[:-1]):
        expected = levels[(first_index + offset) % len(levels)]
        assert abs(int(frame[36, 126].mean()) - expected) <= 8, (first_index + offset, frame[36, 126], expected)


@pytest.mark.parametrize("write,key,fragment", [
    (lambda p: p.write_bytes(b"this is not a picture"), "video.background", "not a readable picture"),
    (lambda p: None, "video.background", "does not exist"),
    (lambda p: p.write_bytes(Path("/bin/true").read_bytes()[:4096]), "video.logo", "not a readable picture"),
])
def test_a_bad_picture_file_is_one_line_naming_its_key(tmp_path, write, key, fragment):
    path = tmp_path / ("picture.png" if key == "video.logo" else "loop.mp4")
    write(path)
    config = tmp_path / "c.toml"
    config.write_text(f'[stream]\nstate_dir = "{tmp_path / "state"}"\noutputs = ["{tmp_path / "out.mkv"}"]\n'
                      f'[status]\nenabled = false\n[video]\n{key.split(".")[1]} = "{path}"\n')
    for command in (["config", "check", str(config)], ["stream", "--config", str(config), "--duration", "5"]):
        result = subprocess.run([sys.executable, "-m", "streamer.cli", *command], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and key in lines[0] and fragment in lines[0], result.stderr
    assert not (tmp_path / "out.mkv").exists()
