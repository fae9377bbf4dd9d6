"""The operator's picture files (`video.background`, `video.logo`) and the picture's static layer.

Every file is checked when the config is (`chiplofi config check`, and at start): it must exist,
have a known type and decode (ffmpeg reads its first frame), else a one-line ConfigError names
the key. At start each file is copied into `<state_dir>/video/`, so ffmpeg, which re-reads the
background at every loop and at every restart, never depends on the original again: a file
deleted or replaced while streaming changes nothing until the next start.

Everything of the picture that does not move (panels, labels, the title and the free text lines)
is drawn once at start into `static.png`, so ffmpeg does not draw text at every frame.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streamer.config import VideoSettings
from streamer.errors import ConfigError
from streamer.types import VOICES
from streamer.video_layout import MAX_TEXT_LINES, Layout, layout_for

log = logging.getLogger(__name__)

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MOTION_SUFFIXES = (".gif", ".mp4", ".webm", ".mkv")
LAYERS = ("scopes", "waveform", "now_playing", "title", "text", "logo")
VOICE_LABELS = {"lead": "LEAD", "harmony": "HARMONY", "bass": "BASS", "drums": "DRUMS"}
PROBE_SECONDS = 20.0
COLOUR, IMAGE, MOTION = "colour", "image", "motion"


def background_kind(value: str) -> str:
    """colour, image or motion (GIF / video); ConfigError naming `video.background` otherwise."""
    if HEX_COLOUR.match(value):
        return COLOUR
    suffix = Path(value).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return IMAGE
    if suffix in MOTION_SUFFIXES:
        return MOTION
    raise ConfigError(f"video.background: expected a colour as #RRGGBB or a file ending in "
                      f"{', '.join(IMAGE_SUFFIXES + MOTION_SUFFIXES)}, got {value!r}")


def _decode_error(path: Path, ffmpeg: str) -> str:
    """'' if ffmpeg decodes a first video frame of `path`, else why not (its last error line)."""
    try:
        result = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0:v:0",
                                 "-frames:v", "1", "-f", "null", "-"],
                                capture_output=True, text=True, errors="replace", timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        return f"ffmpeg took over {PROBE_SECONDS:g} s to read it"
    except OSError as exc:
        return f"cannot run {ffmpeg} ({exc.strerror or exc})"
    if result.returncode == 0:
        return ""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"ffmpeg exit code {result.returncode}"


def check_picture_file(key: str, value: str, suffixes: tuple[str, ...], ffmpeg: str) -> Path:
    """`value` is a readable file of one of `suffixes` that ffmpeg decodes; ConfigError naming `key`."""
    path = Path(value)
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{key}: expected a file ending in {', '.join(suffixes)}, got {value!r}")
    if not path.is_file():
        raise ConfigError(f"{key}: {value!r} does not exist (or is not a file)")
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {value!r} ({exc.strerror or exc})") from exc
    error = _decode_error(path, ffmpeg)
    if error:
        raise ConfigError(f"{key}: {value!r} is not a readable picture ({error})")
    return path


def check_video_settings(settings: VideoSettings, ffmpeg: str = "ffmpeg") -> None:
    """Checks the generic validator cannot make (formats, files); raises ConfigError naming the key."""
    from streamer.video import parse_size

    for key in ("wave_colour", "text_colour"):
        value = getattr(settings, key)
        if not HEX_COLOUR.match(value):
            raise ConfigError(f"video.{key}: expected a colour as #RRGGBB, got {value!r}")
    if len(settings.scope_colours) != len(VOICES) or not all(HEX_COLOUR.match(c) for c in settings.scope_colours):
        raise ConfigError(f"video.scope_colours: expected {len(VOICES)} colours as #RRGGBB ({', '.join(VOICES)}), "
                          f"got {list(settings.scope_colours)!r}")
    for layer in settings.layout:
        if layer not in LAYERS:
            raise ConfigError(f"video.layout: unknown layer {layer!r}; layers are {', '.join(LAYERS)}")
    if len(settings.text) > MAX_TEXT_LINES:
        raise ConfigError(f"video.text: at most {MAX_TEXT_LINES} lines, got {len(settings.text)}")
    for key, text in [("video.title", settings.title), *[("video.text", line) for line in settings.text]]:
        if not text.isprintable():
            raise ConfigError(f"{key}: expected one line of printable text, got {text!r}")
    if settings.size:
        parse_size(settings.size)
    if not Path(settings.font).is_file():
        raise ConfigError(f"video.font: expected a font file, {settings.font!r} does not exist "
                          "(Debian: fonts-dejavu-core)")
    if background_kind(settings.background) != COLOUR:
        check_picture_file("video.background", settings.background, IMAGE_SUFFIXES + MOTION_SUFFIXES, ffmpeg)
    if settings.logo:
        check_picture_file("video.logo", settings.logo, IMAGE_SUFFIXES, ffmpeg)


@dataclass(frozen=True)
class VideoFiles:
    """What ffmpeg reads besides the audio, all in the daemon's own directory."""

    directory: Path
    static_layer: Path  # canvas-sized PNG: panels, labels, title, text (opaque over a colour background)
    background: Path | None  # the copy of video.background, if it is a file
    logo: Path | None
    now_title: Path  # the text files drawtext re-reads: the track's title, and its details
    now_details: Path
    thumbnail: Path | None  # where ffmpeg writes the status page's JPEG


def _copy(key: str, source: str, target: Path) -> Path:
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot copy {source!r} to {target} ({exc.strerror or exc})") from exc
    return target


def ffmpeg_colour(hex_colour: str, alpha: float = 1.0) -> str:
    return "0x" + hex_colour.lstrip("#") + (f"@{alpha:g}" if alpha < 1.0 else "")


def static_layer_filters(settings: VideoSettings, layout: Layout, files_dir: Path, over_picture: bool) -> str:
    """The drawbox/drawtext chain that draws the static layer onto a canvas-sized frame."""
    from streamer.video import escape_filter_value

    font = escape_filter_value(settings.font)
    text_colour = ffmpeg_colour(settings.text_colour)
    # Over a picture, panels are see-through and text has a shadow, so both read on any image.
    panel = "0x000000@0.55" if over_picture else "0x000000@0.35"
    shadow = ":shadowcolor=0x000000:shadowx=1:shadowy=1" if over_picture else ""
    filters: list[str] = []

    def text(path: Path, colour: str, size: int, x: int, y: int) -> None:
        filters.append(f"drawtext=fontfile={font}:textfile={escape_filter_value(str(path))}:expansion=none:"
                       f"fontcolor={colour}:fontsize={size}:x={x}:y={y}{shadow}")

    layers = settings.layout
    if "scopes" in layers:
        for voice, colour in zip(VOICES, settings.scope_colours):
            box = layout.scopes[voice]
            filters.append(f"drawbox=x={box.x}:y={box.y}:w={box.w}:h={box.h}:color={panel}:t=fill")
            filters.append(f"drawbox=x={box.x}:y={box.y}:w={box.w}:h={box.h}:color={ffmpeg_colour(colour)}:t=1")
            label = files_dir / f"label-{voice}.txt"
            label.write_text(VOICE_LABELS[voice], encoding="utf-8")
            text(label, ffmpeg_colour(colour), layout.label_size, box.x + 3, box.y + 2)
    elif "waveform" in layers:
        box = layout.wave
        filters.append(f"drawbox=x={box.x}:y={box.y}:w={box.w}:h={box.h}:color={panel}:t=fill")
    if "title" in layers and settings.title:
        path = files_dir / "title.txt"
        path.write_text(settings.title, encoding="utf-8")
        text(path, text_colour, layout.title_size, layout.margin, layout.title_y)
    if "text" in layers:
        for i, (line, y) in enumerate(zip(settings.text, layout.text_y)):
            path = files_dir / f"text-{i + 1}.txt"
            path.write_text(line, encoding="utf-8")
            text(path, text_colour, layout.small_size, layout.margin, y)
    return ",".join(filters) or "null"


def prepare_video_files(settings: VideoSettings, directory: Path, ffmpeg: str) -> VideoFiles:
    """Copy the operator's files and draw the static layer into `directory` (at start, once)."""
    from streamer.video import preset_of

    preset = preset_of(settings)
    layout = layout_for(preset.width, preset.height, settings.pixel_size, len(settings.text))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"stream.state_dir: cannot create {directory} ({exc.strerror or exc})") from exc
    kind = background_kind(settings.background)
    background = None
    if kind != COLOUR:
        check_picture_file("video.background", settings.background, IMAGE_SUFFIXES + MOTION_SUFFIXES, ffmpeg)
        background = _copy("video.background", settings.background,
                           directory / f"background{Path(settings.background).suffix.lower()}")
    logo = None
    if settings.logo and "logo" in settings.layout:
        check_picture_file("video.logo", settings.logo, IMAGE_SUFFIXES, ffmpeg)
        logo = _copy("video.logo", settings.logo, directory / f"logo{Path(settings.logo).suffix.lower()}")
    static = directory / "static.png"
    base = "0x000000@0" if kind != COLOUR else ffmpeg_colour(settings.background)
    chain = static_layer_filters(settings, layout, directory, over_picture=kind != COLOUR)
    command = [ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi",
               "-i", f"color=c={base}:s={layout.canvas_w}x{layout.canvas_h}:r=1,format=rgba",
               "-vf", chain, "-frames:v", "1", "-update", "1", "-y", str(static)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=PROBE_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"video: cannot draw the picture's static layer ({exc})") from exc
    if result.returncode != 0 or not static.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"video: cannot draw the picture's static layer ({last})")
    thumbnail = directory / "thumbnail.jpg" if settings.thumbnail_seconds > 0 else None
    return VideoFiles(directory, static, background, logo, directory / "nowplaying-title.txt",
                      directory / "nowplaying.txt", thumbnail)
