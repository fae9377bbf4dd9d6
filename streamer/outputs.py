"""Where the stream goes: the stream key, the state directory, the outputs planned from the config,
and the sinks built from that plan.

- The stream key comes from $CHIPLOFI_STREAM_KEY, else `stream.key_file`, else the systemd credential
  `stream-key`; it is checked (a URL path carries it as it is) and never appears in a message.
- No outputs configured: a segmented local recording in <state_dir>/recordings, and YouTube's
  primary ingest when a key is set. Otherwise each `stream.outputs` entry is an rtmp(s):// URL,
  a video file (ffmpeg), a .wav file, `speakers` or `null`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models.checkpoint import read_regular_file
from streamer.config import Config, shown
from streamer.errors import CheckpointError, ConfigError
from streamer.logs import redact
from streamer.sinks import Sink
from streamer.video import NowPlayingFile
from streamer.video_files import VideoFiles, prepare_video_files

log = logging.getLogger(__name__)

KEY_ENV = "CHIPLOFI_STREAM_KEY"
KEY_CREDENTIAL = "stream-key"  # systemd LoadCredential= name
DEFAULT_STATE_DIR = Path("out/stream")
YOUTUBE_PRIMARY = "rtmp://a.rtmp.youtube.com/live2"
SPEAKERS, NULL = "speakers", "null"


STREAM_KEY_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
STREAM_KEY_LENGTH = (4, 256)  # characters; ffmpeg cuts log lines at 1 kB, so a key must fit well inside one


def check_stream_key(key: str, source: str) -> str:
    """`key` if it can be a stream key: the characters a URL path carries as they are (RFC 3986's
    unreserved ones), 4 to 256 of them. A line break, a space, `?`, `/`, a quote or a non-ASCII
    character would publish under another stream name (or split the key across log lines, where
    redaction cannot find it). The ConfigError names `source` and what is wrong, never the key."""
    low, high = STREAM_KEY_LENGTH
    if not low <= len(key) <= high:
        raise ConfigError(f"{source}: the stream key is {len(key)} characters long; expected {low} to {high}")
    bad = [c for c in key if c not in STREAM_KEY_CHARACTERS]
    if not bad:
        return key
    if any(c in "\r\n" for c in bad):
        problem = "more than one line (a key file holds the key alone, without comments)"
    elif any(c.isspace() for c in bad):
        problem = "a space or another blank"
    elif any(not c.isascii() for c in bad):
        problem = "a character that is not ASCII"
    else:
        problem = "punctuation that a URL does not carry as it is (such as ? # / & % + = or a quote)"
    raise ConfigError(f"{source}: the stream key holds {problem}; expected only letters, digits and - _ . ~")


MAX_KEY_FILE_BYTES = 1 << 16  # a key is at most 256 characters: past this, the file is not a key


def _read_key_file(path: Path, source: str) -> str:
    """The text of a key file: a regular file of at most 64 kB (a FIFO would block the start for
    good, /dev/zero would never end), without the blanks around it."""
    try:
        return read_regular_file(path, MAX_KEY_FILE_BYTES, "stream key file").decode("utf-8").strip()
    except CheckpointError as exc:  # its message names the path and the problem
        raise ConfigError(f"{source}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: {path} is not UTF-8 text") from exc


def read_stream_key(config: Config, environ: Mapping[str, str]) -> str:
    """The stream key: $CHIPLOFI_STREAM_KEY, else `stream.key_file`, else a systemd credential.
    Blanks around it (a file's last newline) are dropped; anything else odd is an error."""
    key = environ.get(KEY_ENV, "").strip()
    if key:
        return check_stream_key(key, KEY_ENV)
    path = config.stream.key_file
    if path:
        key = _read_key_file(Path(path), "stream.key_file")
        if not key:
            raise ConfigError(f"stream.key_file: {path} is empty")
        return check_stream_key(key, f"stream.key_file ({path})")
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / KEY_CREDENTIAL).exists():
        source = f"systemd credential {KEY_CREDENTIAL}"
        key = _read_key_file(Path(credentials) / KEY_CREDENTIAL, source)
        return check_stream_key(key, f"{source} ({Path(credentials) / KEY_CREDENTIAL})") if key else ""
    return ""


def state_directory(config: Config, environ: Mapping[str, str]) -> Path:
    if config.stream.state_dir:
        return Path(config.stream.state_dir)
    systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(systemd) if systemd else DEFAULT_STATE_DIR


def create_state_directory(path: Path) -> None:
    """Create the state directory (and its parents); a ConfigError names `stream.state_dir` if it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"stream.state_dir: cannot create {path} ({exc.strerror or exc})") from exc


def classify_output(spec: str) -> str:
    if "\0" in spec:
        raise ConfigError(f"stream.outputs: an output cannot hold a NUL character, got {shown(spec)}")
    lowered = spec.strip().lower()
    if lowered in (SPEAKERS, NULL):
        return lowered
    if lowered.startswith(("rtmp://", "rtmps://")):
        return "ffmpeg"
    if "://" in lowered:
        raise ConfigError(f"stream.outputs: {shown(spec)}: expected rtmp:// or rtmps:// URLs, file paths, "
                          "'speakers' or 'null'")
    if lowered.endswith(".wav"):
        return "wav"
    from streamer.sinks.ffmpeg import MUXERS

    if Path(lowered).suffix not in MUXERS:
        raise ConfigError(f"stream.outputs: {shown(spec)}: a file output must end in .wav (audio) or "
                          f"{', '.join(MUXERS)} (audio and video)")
    return "ffmpeg"


def check_output_directory(spec: str, kind: str) -> None:
    """A file output's directory must exist, as for `chiplofi render`: a typo in a path should stop
    the stream at once, not create directories nobody asked for."""
    if kind == "wav" or (kind == "ffmpeg" and "://" not in spec):
        directory = Path(spec).parent
        if not directory.is_dir():
            raise ConfigError(f"stream.outputs: {spec}: the directory {directory} does not exist")


@dataclass
class OutputPlan:
    ffmpeg_urls: list[str]  # rtmp(s) URLs (without the key) and video file paths
    wav_files: list[Path]
    speakers: bool
    null: bool
    record: bool  # segmented local recording in <state_dir>/recordings

    def describe(self) -> str:
        parts = [redact(u) for u in self.ffmpeg_urls] + [str(p) for p in self.wav_files]
        parts += ["speakers"] * self.speakers + ["null"] * self.null + ["local recording"] * self.record
        return ", ".join(parts)


def plan_outputs(config: Config, key: str) -> OutputPlan:
    """Which sinks to build. No outputs configured: local recording (+ YouTube when a key is set)."""
    specs = list(config.stream.outputs)
    plan = OutputPlan([], [], config.stream.monitor, False, False)
    if not specs:
        plan.record = True
        if key:
            plan.ffmpeg_urls.append(YOUTUBE_PRIMARY)
        return plan
    for spec in specs:
        kind = classify_output(spec)
        if kind == SPEAKERS:
            plan.speakers = True
        elif kind == NULL:
            plan.null = True
        elif kind == "wav":
            plan.wav_files.append(Path(spec))
        else:
            if "{key}" in spec and not key:
                raise ConfigError(f"stream.outputs: {shown(spec)} needs a stream key: set {KEY_ENV} or "
                                  "stream.key_file")
            plan.ffmpeg_urls.append(spec)
    return plan


@dataclass
class Outputs:
    """The sinks built from a plan, and what the video reads besides the audio (None: no ffmpeg)."""

    sinks: list[Sink]
    picture: VideoFiles | None = None
    now_title_file: NowPlayingFile | None = None  # the track's title, on the video
    now_playing_file: NowPlayingFile | None = None  # the details line under the title
    stems: bool = False  # the video draws one scope per voice: the renderer makes stems


def build_outputs(config: Config, key: str, state_dir: Path, live: bool) -> Outputs:
    """The sinks `config` asks for (not started). `live`: the clock paces real time (ffmpeg then
    treats its input as a live source)."""
    from streamer.sinks.file import FileSink

    sample_rate = config.render.sample_rate
    plan = plan_outputs(config, key)
    log.info("outputs: %s", plan.describe() or "none")
    built = Outputs([])
    recordings = state_dir / "recordings"
    if plan.ffmpeg_urls or plan.record:
        from streamer.sinks.ffmpeg import FfmpegSink, file_target, network_target, recording_target

        targets = []
        for url in plan.ffmpeg_urls:
            targets.append(network_target(url, key) if "://" in url else file_target(url))
        if plan.record:
            targets.append(recording_target(recordings, config.sinks.record_segment_minutes * 60))
        # The operator's files are copied and the static layer drawn once, here: a bad file
        # stops the start with an error naming its key.
        picture = built.picture = prepare_video_files(config.video, state_dir / "video", config.sinks.ffmpeg)
        title = built.now_title_file = NowPlayingFile(picture.now_title, "")
        details = built.now_playing_file = NowPlayingFile(picture.now_details)
        built.stems = "scopes" in config.video.layout
        built.sinks.append(FfmpegSink(targets, sample_rate=sample_rate, video=config.video, settings=config.sinks,
                                      # ffmpeg reads the static layer and the now-playing texts from memory:
                                      # no full or vanished state directory can stop it
                                      picture=dataclasses.replace(picture,
                                                                  static_layer=Path(f"/proc/self/fd/{picture.static_fd}"),
                                                                  now_title=title.overlay_path,
                                                                  now_details=details.overlay_path),
                                      pass_fds=(picture.static_fd, title.overlay_fd, details.overlay_fd),
                                      secrets=[key], recordings_dir=recordings if plan.record else None,
                                      live=live))
    for path in plan.wav_files:
        built.sinks.append(FileSink(path, sample_rate, config.sinks.queue_seconds,
                                    config.sinks.record_segment_minutes * 60))
    if plan.speakers:
        from streamer.sinks.speakers import SpeakersSink

        built.sinks.append(SpeakersSink(sample_rate, min(config.sinks.queue_seconds, 1.0)))
    if plan.null:
        from streamer.sinks.null import NullSink

        built.sinks.append(NullSink())
    return built
