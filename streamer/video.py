"""The video track: made by ffmpeg from the audio itself, plus now-playing text.

The filter graph draws the audio's waveform (`showwaves`) over a flat background and writes the
now-playing text from a small file that `drawtext` re-reads every frame (`reload=1`), so the
daemon changes the text by replacing the file (atomically, see `NowPlayingFile`).

Every video frame comes from `showwaves`, which emits frames at the preset's rate from the
audio samples it receives: the audio drives the video timeline, so when the audio pauses the
video pauses with it and the two can never drift apart. (A looped still image, `-loop 1`,
would run ahead of a paced audio input and never end on its own.)

YouTube's ingest wants H.264 yuv420p with a keyframe every 2 s and a steady bitrate, and AAC
stereo at 44.1 or 48 kHz around 128 kbps: `encoder_options` gives exactly that.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from streamer.config import VideoSettings
from streamer.errors import ConfigError
from streamer.files import write_atomic

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

_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
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


def check_video_settings(settings: VideoSettings) -> None:
    """Checks the generic validator cannot make (formats, files); raises ConfigError naming the key."""
    for key in ("background", "wave_colour", "text_colour"):
        value = getattr(settings, key)
        if not _HEX_COLOUR.match(value):
            raise ConfigError(f"video.{key}: expected a colour as #RRGGBB, got {value!r}")
    if settings.size:
        parse_size(settings.size)
    if not Path(settings.font).is_file():
        raise ConfigError(f"video.font: expected a font file, {settings.font!r} does not exist "
                          "(Debian: fonts-dejavu-core)")


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


def _colour(hex_colour: str) -> str:
    return "0x" + hex_colour.lstrip("#")


def filter_graph(settings: VideoSettings, text_path: Path) -> str:
    """The graph from input 0's audio to `[vout]` (video) and `[aout]` (audio to encode)."""
    preset = preset_of(settings)
    w, h, fps = preset.width, preset.height, preset.fps
    wave_h = (h // 3) // 2 * 2
    wave_y = (h - wave_h - h // 8) // 2 * 2
    short_side = min(w, h)  # an upright picture keeps the text a landscape one would have
    font_size = max(12, short_side // 20)
    margin = max(8, short_side // 16)
    drawtext = ":".join([
        f"drawtext=fontfile={escape_filter_value(settings.font)}",
        f"textfile={escape_filter_value(str(text_path))}",
        "reload=1", "expansion=none",
        f"fontcolor={_colour(settings.text_colour)}", f"fontsize={font_size}",
        f"line_spacing={font_size // 2}", f"x={margin}", f"y={margin}",
    ])
    return ";".join([
        "[0:a]asplit=2[aout][avis]",
        f"[avis]showwaves=s={w}x{wave_h}:mode=cline:rate={fps}:colors={_colour(settings.wave_colour)},"
        "format=yuva420p[wave]",
        f"color=c={_colour(settings.background)}:s={w}x{h}:r={fps},format=yuv420p[bg]",
        f"[bg][wave]overlay=x=0:y={wave_y}:shortest=1:format=yuv420,{drawtext},format=yuv420p[vout]",
    ])


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


class NowPlayingFile:
    """The text `drawtext` shows; replaced atomically, and only when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._text: str | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write("chiplofi · 8-bit lo-fi radio\nstarting…")

    def write(self, text: str) -> None:
        if text == self._text:
            return
        try:
            # The audio thread writes this at every bar: no fsync there (the text is rewritten soon).
            write_atomic(self.path, text.encode("utf-8"), durable=False)
            self._text = text
        except OSError as exc:
            log.warning("now-playing text not updated: %s", exc)


def now_playing_text(track_id: str, key: str, tempo_bpm: float, section: str, chord: str) -> str:
    """What the video shows: title line, then track id, key and tempo."""
    details = " · ".join(part for part in (key, f"{tempo_bpm:.0f} BPM" if tempo_bpm else "", chord) if part)
    where = f"track {track_id}" + (f" · {section}" if section else "")
    return f"chiplofi · 8-bit lo-fi radio\n{where}\n{details}"
