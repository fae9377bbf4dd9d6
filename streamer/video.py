"""The video track: made by ffmpeg from the audio itself, plus now-playing text.

The daemon's pipe carries the stereo mix and, when the picture shows scopes, one more channel
per voice (`pipe_bytes`). The filter graph (`build_video_graph`) draws one oscilloscope per voice
from those channels (`showwaves`) on a small canvas that starts as the static layer
(streamer.video_files: panels, labels, title, text), writes the now-playing lines from small
files that `drawtext` re-reads every frame (`reload=1`), so the daemon changes them by
rewriting them (in memory, see `NowPlayingFile`), scales the canvas up nearest-neighbour
(streamer.video_layout) over the background, and adds the logo. A second output writes a JPEG
of the finished picture every few seconds for the status page.

Every video frame is timed by `showwaves`, which emits frames at the preset's rate from the
audio samples it receives: the audio drives the video timeline, so when the audio pauses the
video pauses with it and the two can never drift apart. (A looped still image, `-loop 1`,
would run ahead of a paced audio input and never end on its own.)

YouTube's ingest wants H.264 yuv420p with a keyframe every 2 s and a steady bitrate, and AAC
stereo at 44.1 or 48 kHz around 128 kbps: `encoder_options` gives exactly that.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.config import VideoSettings
from streamer.errors import ConfigError
from streamer.files import write_atomic
from streamer.logs import RateLimitedLog
from streamer.ringbuffer import AudioBlock
from streamer.types import VOICES
from streamer.video_files import COLOUR, IMAGE, VideoFiles, background_kind
from streamer.video_layout import Layout, Rect, layout_for
from streamer.wavfile import to_pcm16

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoPreset:
    width: int
    height: int
    fps: int
    video_kbps: int

    @property
    def gop(self) -> int:
        """Frames between keyframes: 2 s."""
        return 2 * self.fps


PRESETS: dict[str, VideoPreset] = {
    "720p30": VideoPreset(1280, 720, 30, 2500),
    "480p15": VideoPreset(854, 480, 15, 1000),
    "still": VideoPreset(1280, 720, 5, 800),  # the picture barely moves: low rate, low CPU
}

_SIZE = re.compile(r"([0-9]{2,4})x([0-9]{2,4})")
# x264 and yuv420p want even sides; above 4K no ingest takes it, below 128x72 the text does not fit.
SIZE_MIN, SIZE_MAX = (128, 72), (3840, 2160)


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` → (width, height), either orientation; ConfigError naming `video.size`."""
    match = _SIZE.fullmatch(text)
    accepted = (f"WIDTHxHEIGHT with even sides from {SIZE_MIN[0]}x{SIZE_MIN[1]} to "
                f"{SIZE_MAX[0]}x{SIZE_MAX[1]} (either way up), or empty for the preset's")
    if not match:
        raise ConfigError(f"video.size: expected {accepted}, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    long_side, short_side = max(width, height), min(width, height)
    if (width % 2 or height % 2 or long_side < SIZE_MIN[0] or short_side < SIZE_MIN[1]
            or long_side > SIZE_MAX[0] or short_side > SIZE_MAX[1]):
        raise ConfigError(f"video.size: expected {accepted}, got {text!r}")
    return width, height


def preset_of(settings: VideoSettings) -> VideoPreset:
    """The preset named by `video.preset`, with whatever `size`, `fps` and `video_kbps` replace."""
    preset = PRESETS[settings.preset]
    width, height = parse_size(settings.size) if settings.size else (preset.width, preset.height)
    return VideoPreset(width, height, settings.fps or preset.fps, settings.video_kbps or preset.video_kbps)


def escape_filter_value(text: str) -> str:
    """Escape a value (a path) for a filter option inside a filter graph (ffmpeg-filters,
    "Notes on filtergraph escaping"): first for the option (`\\ ' :`), then for the graph
    (`\\ ' [ ] , ;`)."""
    value = text
    for char in ("\\", "'", ":"):
        value = value.replace(char, "\\" + char)
    for char in ("\\", "'", "[", "]", ",", ";"):
        value = value.replace(char, "\\" + char)
    return value


def encoder_options(settings: VideoSettings, sample_rate: int) -> dict[str, str | None]:
    """Output options: H.264 yuv420p, keyframe every 2 s, steady (CBR-like) bitrate; AAC stereo."""
    preset = preset_of(settings)
    kbps = preset.video_kbps
    return {
        # zerolatency: no B-frames or look-ahead, so the first frames leave within a frame time
        # (and it costs ~20 % less CPU); the picture is mostly still, so quality does not suffer.
        "c:v": "libx264", "preset": settings.x264_preset, "tune": "zerolatency", "pix_fmt": "yuv420p",
        "r": str(preset.fps),
        "g": str(preset.gop), "keyint_min": str(preset.gop), "sc_threshold": "0",
        "b:v": f"{kbps}k", "minrate": f"{kbps}k", "maxrate": f"{kbps}k", "bufsize": f"{2 * kbps}k",
        "x264-params": "nal-hrd=cbr:force-cfr=1",
        "c:a": "aac", "b:a": f"{settings.audio_kbps}k", "ar": str(sample_rate), "ac": "2",
        # Every tee target gets its codec headers out of band (FLV, MP4, MKV need them).
        "flags:v": "+global_header", "flags:a": "+global_header",
    }


def ffmpeg_colour(hex_colour: str) -> str:
    """#RRGGBB as ffmpeg writes it."""
    return "0x" + hex_colour.lstrip("#")


SCOPE_SECONDS = 0.025  # audio shown across one scope


def pipe_channels(settings: VideoSettings) -> int:
    """PCM channels ffmpeg reads from the pipe: the stereo mix, then one per voice if scopes show."""
    return 2 + len(VOICES) if "scopes" in settings.layout else 2


def pipe_layout(channels: int) -> str:
    """An ffmpeg channel layout with that many channels (the names do not matter: filters pick by index)."""
    return {2: "stereo", 6: "5.1"}[channels]


def pipe_bytes(block: AudioBlock, channels: int) -> bytes:
    """What the pipe carries for `block`: its 16-bit stereo mix, or (6 channels) the mix and the
    voice stems interleaved frame by frame; a block without stems (never expected) gets silent ones."""
    if channels == 2:
        return block.pcm16
    stems = block.stems if block.stems is not None else np.zeros((block.frames, channels - 2), np.float32)
    return to_pcm16(np.concatenate([block.pcm, stems], axis=1))


@dataclass(frozen=True)
class VideoGraph:
    """What the ffmpeg command needs for the picture: extra inputs, the filter graph, and the
    thumbnail output's label."""

    inputs: list[tuple[str, dict[str, str]]]  # (path, input options), inputs 1, 2, ... after the pipe
    graph: str  # from input 0's audio to [vout] (video) and [aout] (audio to encode), and [vthumb]
    thumbnail: Path | None


def _scope_filters(settings: VideoSettings, layout: Layout, fps: int, sample_rate: int,
                   source: str) -> tuple[list[str], list[str]]:
    """Filters that turn the stems into one oscilloscope per voice; returns (filters, labels)."""
    channels = "|".join(f"c{i}=c{i + 2}" for i in range(len(VOICES)))
    split = "".join(f"[v{i}]" for i in range(len(VOICES)))
    filters = [f"{source}pan=4.0|{channels},channelsplit=channel_layout=4.0{split}"]
    labels = []
    for i, (voice, colour) in enumerate(zip(VOICES, settings.scope_colours, strict=True)):
        box = layout.scopes[voice]
        width = box.w - 2
        # A scope shows a short window (~SCOPE_SECONDS: a few cycles of each note), not all the audio
        # between two frames: showwaves draws `n` samples per column, and `fps` keeps one frame in
        # every few. p2p joins the samples like a trace; draw=full keeps every pixel at full colour.
        per_column = max(1, round(SCOPE_SECONDS * sample_rate / width))
        filters.append(f"[v{i}]showwaves=s={width}x{box.h - 2}:mode=p2p:draw=full:n={per_column}:"
                       f"colors={ffmpeg_colour(colour)},fps={fps}[scope{i}]")
        labels.append(f"[scope{i}]")
    return filters, labels


def build_video_graph(settings: VideoSettings, files: VideoFiles, sample_rate: int) -> VideoGraph:
    """The filter graph of the picture (see streamer.video_layout for where each layer sits).

    Every frame is timed by `showwaves`, which makes `fps` frames per second of audio it is fed:
    the audio drives the video timeline. A still background is decoded once and repeated (`loop`),
    a GIF or video loop is read again at each loop (`-stream_loop -1`) and retimed to frame N at
    N / fps, so each output frame takes exactly one background frame and the loop cannot drift.
    """
    preset = preset_of(settings)
    w, h, fps = preset.width, preset.height, preset.fps
    layers = settings.layout
    layout = layout_for(w, h, settings.pixel_size, len(settings.text))
    kind = background_kind(settings.background)
    inputs: list[tuple[str, dict[str, str]]] = [(str(files.static_layer), {})]  # input 1
    scopes = "scopes" in layers
    waveform = "waveform" in layers and not scopes
    # The audio goes to the encoder (the mix alone) and to what times the picture.
    graph = [f"[0:a]asplit=2[amix]{'[astems]' if scopes else '[avis]'}", "[amix]pan=stereo|c0=c0|c1=c1[aout]"]
    moving: list[tuple[str, Rect]] = []  # (label, where) of what is drawn over the canvas each frame
    if scopes:
        filters, labels = _scope_filters(settings, layout, fps, sample_rate, "[astems]")
        graph += filters
        moving += [(label, layout.scopes[voice]) for label, voice in zip(labels, VOICES, strict=True)]
    else:
        # The mix draws the waveform, or (a picture without it) a transparent 2x2 frame that only
        # carries the audio's timing.
        rect = layout.wave if waveform else Rect(0, 0, 4, 4)
        colour = ffmpeg_colour(settings.wave_colour) if waveform else "0x000000@0"
        graph.append(f"[avis]aformat=channel_layouts=mono,showwaves=s={rect.w - 2}x{rect.h - 2}:mode=cline:"
                     f"draw=full:rate={fps}:colors={colour}[wave]")
        moving.append(("[wave]", rect))

    # The canvas each frame starts from: the static layer, on the background colour or see-through.
    graph.append(f"[1:v]settb=1/{fps},loop=loop=-1:size=1,setpts=N[canvas0]")
    current = "[canvas0]"
    for i, (label, rect) in enumerate(moving):
        out = f"[canvas{i + 1}]"
        # The first overlay ends with the audio (shortest=1); the others follow it.
        graph.append(f"{current}{label}overlay=x={rect.x + 1}:y={rect.y + 1}" + (":shortest=1" if i == 0 else "")
                     + f"{out}")
        current = out
    if "now_playing" in layers:
        font = escape_filter_value(settings.font)
        shadow = "" if kind == COLOUR else ":shadowcolor=0x000000:shadowx=1:shadowy=1"
        common = f"fontfile={font}:reload=1:expansion=none:fontcolor={ffmpeg_colour(settings.text_colour)}{shadow}"
        graph.append(f"{current}drawtext={common}:textfile={escape_filter_value(str(files.now_title))}:"
                     f"fontsize={layout.now_size}:x={layout.margin}:y={layout.now_title_y},"
                     f"drawtext={common}:textfile={escape_filter_value(str(files.now_details))}:"
                     f"fontsize={layout.small_size}:x={layout.margin}:y={layout.now_details_y}[drawn]")
        current = "[drawn]"
    # Scaled up by a whole factor, nearest-neighbour, then cropped to the exact output size.
    scaled_w, scaled_h = layout.canvas_w * layout.scale, layout.canvas_h * layout.scale
    upscale = f"scale={scaled_w}:{scaled_h}:flags=neighbor,crop={w}:{h}:0:0"
    if kind == COLOUR:
        graph.append(f"{current}{upscale},format=yuv420p[picture]")
    else:
        assert files.background is not None
        index = len(inputs) + 1
        # Already at the picture's size and frame rate (streamer.video_files.convert_background).
        if kind == IMAGE:
            inputs.append((str(files.background), {}))
            graph.append(f"[{index}:v]format=yuv420p,settb=1/{fps},loop=loop=-1:size=1,setpts=N[bg]")
        else:
            inputs.append((str(files.background), {"stream_loop": "-1"}))
            graph.append(f"[{index}:v]settb=1/{fps},setpts=N[bg]")
        graph.append(f"{current}{upscale}[layer]")
        graph.append("[bg][layer]overlay=x=0:y=0:shortest=1:format=yuv420,format=yuv420p[picture]")
    current = "[picture]"
    if files.logo is not None:
        index = len(inputs) + 1
        inputs.append((str(files.logo), {}))
        logo_h = max(2, round(h * settings.logo_height) // 2 * 2)
        margin = layout.margin * layout.scale
        x = str(margin) if settings.logo_corner.endswith("left") else f"W-w-{margin}"
        y = str(margin) if settings.logo_corner.startswith("top") else f"H-h-{margin}"
        graph.append(f"[{index}:v]scale=-2:{logo_h}:flags=lanczos,format=rgba[logo]")
        graph.append(f"{current}[logo]overlay=x={x}:y={y}:eof_action=repeat:format=yuv420,format=yuv420p[logoed]")
        current = "[logoed]"
    if files.thumbnail is not None:
        every = settings.thumbnail_seconds
        thumb_w = min(w, 480) // 2 * 2
        graph.append(f"{current}split=2[vout][thumbsrc]")
        graph.append(f"[thumbsrc]fps=1/{every:g},scale={thumb_w}:-2:flags=neighbor[vthumb]")
    else:
        graph.append(f"{current}null[vout]")
    return VideoGraph(inputs, ";".join(graph), files.thumbnail)


def thumbnail_output(path: Path) -> tuple[str, dict[str, str]]:
    """The JPEG output: its own tee slave behind a fifo that ignores failures, so a thumbnail that
    cannot be written (full disk) never stops the stream."""
    return (f"[f=image2:update=1:atomic_writing=1:onfail=ignore]{path}",
            {"map": "[vthumb]", "c:v": "mjpeg", "q:v": "5", "f": "tee", "use_fifo": "1",
             "fifo_options": "drop_pkts_on_overflow=1:attempt_recovery=1:recovery_wait_time=5"})


class NowPlayingFile:
    """A text `drawtext` shows, rewritten when it changes.

    ffmpeg reads it from memory: `overlay_path` names a memfd that ffmpeg inherits (the sink
    passes `overlay_fd`). drawtext fails the whole filter graph, and so the encoder and every
    target, when its `textfile` cannot be read; a file on disk can be deleted, its directory too,
    or never written on a full disk, and a text overlay must not be able to take the stream off
    air. The text is also written to `path` (in the state directory) for people and scripts,
    best effort: the directory is recreated if it went, and failures are logged once a minute.

    The memfd always holds `OVERLAY_BYTES` (the text padded with spaces: never empty, which
    drawtext refuses), so a rewrite is one `pwrite` of the same length; a frame drawn during it may
    mix the old and the new text.
    """

    OVERLAY_BYTES = 512

    def __init__(self, path: Path, initial: str = "starting…") -> None:
        self.path = path
        self._text: str | None = None
        self.overlay_fd = os.memfd_create(f"chiplofi-{path.stem}", os.MFD_CLOEXEC)
        self.overlay_path = Path(f"/proc/self/fd/{self.overlay_fd}")  # as ffmpeg sees it: the same fd number
        self._log = RateLimitedLog(log, interval=60.0)
        self._file_failing = False
        self.write(initial)

    def write(self, text: str) -> None:
        text = text or " "  # drawtext fails on an empty file
        # Unchanged: nothing to do, unless the copy went (its directory deleted, say).
        if text == self._text and not self._file_failing and os.path.exists(self.path):
            return
        data = text.encode("utf-8")[:self.OVERLAY_BYTES].decode("utf-8", "ignore").encode("utf-8")
        if text != self._text:
            os.pwrite(self.overlay_fd, data.ljust(self.OVERLAY_BYTES, b" "), 0)
            self._text = text
        self._write_file(data)

    def _write_file(self, data: bytes) -> None:
        try:
            try:
                # The audio thread writes this at every bar: no fsync (the text is rewritten soon).
                write_atomic(self.path, data, durable=False)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, data, durable=False)
        except OSError as exc:
            self._file_failing = True
            self._log.warning("now-playing text file %s not updated (the video's text is): %s", self.path, exc)
            return
        if self._file_failing:
            self._file_failing = False
            log.info("now-playing text file %s written again", self.path)


def now_playing_details(key: str, tempo_bpm: float, section: str) -> str:
    """The line under the track's title: key, tempo and section."""
    return " · ".join(part for part in (key, f"{tempo_bpm:.0f} BPM" if tempo_bpm else "", section) if part)
