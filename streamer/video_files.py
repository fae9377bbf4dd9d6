"""The operator's picture files (`video.background`, `video.logo`) and the picture's static layer.

Every file is checked when the config is (`chiplofi config check`, and at start): it must exist,
have a known type and decode (ffmpeg reads its first frame), else a one-line ConfigError names
the key. At start each file is converted once into `<state_dir>/video/`, so ffmpeg, which re-reads
the background at every loop and at every restart, never depends on the original again: a file
deleted or replaced while streaming changes nothing until the next start.

The background is converted to exactly the picture's size (scaled to cover it, centre-cropped) and,
for a GIF or video, to the picture's frame rate: the stream then takes one background frame per
output frame, frame N at N / fps, so however long it runs the loop cannot drift from the audio,
and no background is scaled again at every frame. A video loop is read up to its first
`BACKGROUND_MAX_SECONDS`.

Everything of the picture that does not move (panels, labels, the title and the free text lines)
is drawn once at start into `static.png`, so ffmpeg does not draw text at every frame.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

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
BACKGROUND_MAX_SECONDS = 120.0
CONVERT_SECONDS = 300.0  # a long 4K loop on a small machine takes a while; beyond this it is an error
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
    try:
        ImageFont.truetype(settings.font, 12)  # what the static layer is drawn with (ffmpeg reads it too)
    except OSError as exc:
        raise ConfigError(f"video.font: {settings.font!r} is not a font FreeType can read ({exc})") from exc
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
    # The static layer in memory too (a memfd the daemon passes to ffmpeg, which reads it as
    # /proc/self/fd/N): a full or deleted state directory can never keep ffmpeg from starting.
    static_fd: int | None = None


def _copy(key: str, source: str, target: Path) -> Path:
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot copy {source!r} to {target} ({exc.strerror or exc})") from exc
    return target


def _run_ffmpeg(key: str, what: str, command: list[str], timeout: float) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"{key}: {what} took over {timeout:g} s") from exc
    except OSError as exc:
        raise ConfigError(f"{key}: cannot run {command[0]} ({exc.strerror or exc})") from exc
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise ConfigError(f"{key}: {what} failed ({last})")


def convert_background(source: Path, kind: str, width: int, height: int, fps: int, directory: Path,
                       ffmpeg: str) -> Path:
    """The background at the picture's size (and frame rate, if it moves), in `directory`."""
    cover = (f"scale={width}:{height}:force_original_aspect_ratio=increase,crop={width}:{height},setsar=1")
    started = time.monotonic()
    if kind == IMAGE:
        target = directory / "background.png"
        command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(source), "-frames:v", "1", "-vf", cover,
                   "-update", "1", "-y", str(target)]
    else:
        # Every frame a key frame, nearly lossless: the stream decodes it at every loop, cheaply,
        # and a loop restarts on a whole frame.
        target = directory / "background.mkv"
        command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(source), "-t", f"{BACKGROUND_MAX_SECONDS:g}",
                   "-map", "0:v:0", "-vf", f"fps={fps},{cover},format=yuv420p", "-c:v", "libx264",
                   "-preset", "ultrafast", "-qp", "12", "-g", "1", "-an", "-y", str(target)]
    _run_ffmpeg("video.background", f"converting {source}", command, CONVERT_SECONDS)
    log.info("video background %s converted to %dx%d in %.1f s", source, width, height, time.monotonic() - started)
    return target


def _rgba(hex_colour: str, alpha: int = 255) -> tuple[int, int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF, alpha)


def draw_static_layer(settings: VideoSettings, layout: Layout, over_picture: bool) -> Image.Image:
    """The layer that does not move, canvas-sized RGBA: scope panels and labels, title, text lines.

    Text is drawn without anti-aliasing (Pillow's fontmode "1"), so once scaled up every letter
    is made of whole blocks like an 8-bit console's. Over a colour, the canvas is that colour;
    over a picture it is see-through, the panels are darker glass and text gets a drop shadow.
    """
    base = (0, 0, 0, 0) if over_picture else _rgba(settings.background)
    image = Image.new("RGBA", (layout.canvas_w, layout.canvas_h), base)
    glass = Image.new("RGBA", image.size, (0, 0, 0, 0))  # panels, composited so they darken what is under
    draw, glass_draw = ImageDraw.Draw(image), ImageDraw.Draw(glass)
    draw.fontmode = "1"
    panel = (0, 0, 0, 150 if over_picture else 90)
    fonts: dict[int, ImageFont.FreeTypeFont] = {}

    def text(xy: tuple[int, int], line: str, colour: str, size: int, shadow: bool = over_picture) -> None:
        font = fonts.setdefault(size, ImageFont.truetype(settings.font, size))
        if shadow:
            draw.text((xy[0] + 1, xy[1] + 1), line, font=font, fill=(0, 0, 0, 255))
        draw.text(xy, line, font=font, fill=_rgba(colour))

    layers = settings.layout
    boxes = []
    if "scopes" in layers:
        boxes = [(layout.scopes[voice], colour, VOICE_LABELS[voice])
                 for voice, colour in zip(VOICES, settings.scope_colours, strict=True)]
    elif "waveform" in layers:
        boxes = [(layout.wave, "", "")]
    for box, _, _ in boxes:
        glass_draw.rectangle((box.x, box.y, box.x + box.w - 1, box.y + box.h - 1), fill=panel)
    image.alpha_composite(glass)
    for box, colour, label in boxes:
        if colour:
            draw.rectangle((box.x, box.y, box.x + box.w - 1, box.y + box.h - 1), outline=_rgba(colour))
            text((box.x + 3, box.y + 2), label, colour, layout.label_size, shadow=False)  # on its dark panel
    if "title" in layers and settings.title:
        text((layout.margin, layout.title_y), settings.title, settings.text_colour, layout.title_size)
    if "text" in layers:
        for line, y in zip(settings.text, layout.text_y, strict=False):
            text((layout.margin, y), line, settings.text_colour, layout.small_size)
    return image


def prepare_video_files(settings: VideoSettings, directory: Path, ffmpeg: str) -> VideoFiles:
    """Convert the operator's files and draw the static layer into `directory` (at start, once)."""
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
        source = check_picture_file("video.background", settings.background, IMAGE_SUFFIXES + MOTION_SUFFIXES,
                                    ffmpeg)
        background = convert_background(source, kind, preset.width, preset.height, preset.fps, directory, ffmpeg)
    logo = None
    if settings.logo and "logo" in settings.layout:
        check_picture_file("video.logo", settings.logo, IMAGE_SUFFIXES, ffmpeg)
        logo = _copy("video.logo", settings.logo, directory / f"logo{Path(settings.logo).suffix.lower()}")
    static = directory / "static.png"
    png = io.BytesIO()
    draw_static_layer(settings, layout, over_picture=kind != COLOUR).save(png, format="PNG")
    static_fd = os.memfd_create("chiplofi-static", os.MFD_CLOEXEC)
    os.write(static_fd, png.getvalue())
    try:  # a copy on disk for tools that start their own ffmpeg (bench/); the stream reads the memfd
        static.write_bytes(png.getvalue())
    except OSError as exc:
        log.warning("cannot write %s (%s): the stream reads the static layer from memory", static,
                    exc.strerror or exc)
    thumbnail = directory / "thumbnail.jpg" if settings.thumbnail_seconds > 0 else None
    try:
        (directory / "thumbnail.jpg").unlink(missing_ok=True)  # the last run's picture is not this one's
    except OSError as exc:
        log.warning("cannot delete the last run's thumbnail: %s", exc)
    return VideoFiles(directory, static, background, logo, directory / "nowplaying-title.txt",
                      directory / "nowplaying.txt", thumbnail, static_fd)
