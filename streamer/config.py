"""Configuration: typed settings with their accepted ranges, loaded from TOML.

Each setting is a dataclass field whose metadata says what it accepts (`min`/`max`, `choices`)
and what it does (`help`). One generic validator reads that metadata, so adding a key means
adding a field; every error names the full key (`effects.hiss_db`) and what is accepted.
"""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from streamer.errors import ConfigError, InputFileError

SettingsT = TypeVar("SettingsT")

# Names of the presets in soundfonts/chiplofi.sf2 that a voice can play (see soundfonts/__init__.py).
PITCHED_PRESET_NAMES = ("pulse12", "pulse25", "pulse50", "triangle", "keys", "noise_long", "noise_short")
DRUM_KIT_NAMES = ("drumkit",)


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field carrying what the validator needs to check it."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    return field(default=default, metadata=meta)


def partial_settings(cls: type) -> type:
    """A settings class with the keys of `cls`, each optional (None = left out), checked like
    `cls`'s: for a table that changes a few keys of another (a mood's [effects] changes)."""
    hints = get_type_hints(cls)
    fields = [(f.name, hints[f.name] | None, field(default=None, metadata=f.metadata))
              for f in dataclasses.fields(cls)]
    partial = dataclasses.make_dataclass(f"Partial{cls.__name__}", fields, frozen=True)
    partial.__module__ = __name__
    return partial


def given_keys(settings: Any) -> dict[str, Any]:
    """The keys of a `partial_settings` instance that were given, with their values."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
            if getattr(settings, f.name) is not None}


@dataclass(frozen=True)
class VoiceSettings:
    """How one of the four voices is played."""

    preset: str = setting("pulse25", "SoundFont preset of this voice",
                          choices=PITCHED_PRESET_NAMES + DRUM_KIT_NAMES)
    pan: float = setting(0.0, "stereo position, -1 left .. 1 right", min=-1.0, max=1.0)
    volume: float = setting(0.8, "channel volume, 0 .. 1", min=0.0, max=1.0)
    chorus: float = setting(0.0, "send to the stereo chorus (render.chorus_*), 0 .. 1; it widens the voice "
                                 "(below effects.mono_below_hz the stream stays mono whatever it sends)",
                            min=0.0, max=1.0)


@dataclass(frozen=True)
class RenderSettings:
    """FluidSynth rendering: SoundFont, sample rate, groove and the four voices."""

    sample_rate: int = setting(44100, "output sample rate in Hz", choices=(44100, 48000))
    soundfont: str = setting("", "path of an SF2 file; empty = the shipped chiplofi.sf2")
    gain: float = setting(0.5, "FluidSynth master gain", min=0.01, max=2.0)
    swing: float = setting(0.57, "share of each 8th note taken by its first 16th; 0.5 = straight",
                           min=0.5, max=0.75)
    humanize_velocity: float = setting(
        0.08, "random velocity change, as a fraction of the velocity (deterministic per seed)",
        min=0.0, max=0.5)
    chorus_level: float = setting(1.2, "output level of the stereo chorus the voices send to (their "
                                       "`chorus`); 0 = off", min=0.0, max=10.0)
    chorus_depth_ms: float = setting(6.0, "modulation depth of the stereo chorus", min=0.0, max=21.0)
    chorus_rate_hz: float = setting(0.35, "modulation rate of the stereo chorus", min=0.1, max=5.0)
    chorus_voices: int = setting(3, "delay lines of the stereo chorus", min=1, max=99)
    lead: VoiceSettings = field(default_factory=lambda: VoiceSettings("pulse12", -0.6, 0.75, 0.6),
                                metadata={"help": "lead voice (pulse 1)"})
    harmony: VoiceSettings = field(default_factory=lambda: VoiceSettings("keys", 0.6, 0.6, 0.7),
                                   metadata={"help": "harmony voice (pulse 2)"})
    bass: VoiceSettings = field(default_factory=lambda: VoiceSettings("triangle", 0.0, 0.9, 1.0),
                                metadata={"help": "bass voice (triangle)"})
    drums: VoiceSettings = field(default_factory=lambda: VoiceSettings("drumkit", 0.0, 0.7),
                                 metadata={"help": "drum voice (noise)"})


@dataclass(frozen=True)
class EffectsSettings:
    """The lo-fi finish. Levels are in dB relative to full scale unless said otherwise."""

    enabled: bool = setting(True, "apply the lo-fi chain at all")
    highpass_hz: float = setting(30.0, "rumble / DC removal corner", min=5.0, max=500.0)
    lowpass_hz: float = setting(9000.0, "tone: low-pass corner; above 0.45 × sample rate = off",
                                min=500.0, max=24000.0)
    tilt_db: float = setting(-2.0, "tone: tilt around 1 kHz; negative is darker", min=-12.0, max=12.0)
    low_cut_hz: float = setting(80.0, "tone: corner of a steep (24 dB per octave) high-pass under the bass: "
                                      "the sub-bass fundamentals that phone and laptop speakers cannot play "
                                      "are taken down, the bass above them kept; 0 = off", min=0.0, max=200.0)
    low_shelf_hz: float = setting(120.0, "tone: corner of the low shelf", min=20.0, max=500.0)
    low_shelf_db: float = setting(-3.0, "tone: gain of the low shelf; 0 = off", min=-24.0, max=12.0)
    mono_below_hz: float = setting(200.0, "below this the stereo image is mono (bass and kick centred); "
                                          "0 = off", min=0.0, max=500.0)
    wow_rate_hz: float = setting(0.5, "wow (slow pitch drift) rate", min=0.05, max=4.0)
    wow_depth_cents: float = setting(6.0, "wow depth; 0 = off", min=0.0, max=50.0)
    flutter_rate_hz: float = setting(7.0, "flutter (fast pitch wobble) rate", min=2.0, max=20.0)
    flutter_depth_cents: float = setting(2.0, "flutter depth; 0 = off", min=0.0, max=20.0)
    bitcrush_bits: int = setting(0, "bit depth of the bit-crusher; 0 = off", min=0, max=16)
    downsample_hz: float = setting(0.0, "sample-rate reduction target; 0 = off", min=0.0, max=48000.0)
    crackle_per_second: float = setting(4.0, "vinyl clicks per second", min=0.0, max=200.0)
    crackle_db: float = setting(-32.0, "peak level of the vinyl clicks", min=-90.0, max=-6.0)
    dust_per_second: float = setting(30.0, "faint dust ticks per second on the vinyl surface; 0 = off",
                                     min=0.0, max=500.0)
    surface_noise_db: float = setting(-54.0, "vinyl surface noise level (RMS); -120 = off", min=-120.0,
                                      max=-20.0)
    hiss_db: float = setting(-58.0, "tape hiss level (RMS); -120 = off", min=-120.0, max=-20.0)
    loudness_target_lufs: float = setting(-14.0, "integrated loudness target", min=-40.0, max=-6.0)
    loudness_window_s: float = setting(8.0, "time constant of the loudness follower", min=0.5,
                                       max=120.0)
    loudness_gate_lufs: float = setting(-60.0, "below this momentary loudness the follower holds its "
                                        "gain, so silence is not boosted", min=-90.0, max=-20.0)
    max_gain_db: float = setting(24.0, "largest boost the loudness follower applies", min=0.0,
                                 max=48.0)
    limiter_ceiling_dbfs: float = setting(-1.0, "soft limiter ceiling; the output never exceeds it",
                                          min=-24.0, max=-1.0)
    limiter_knee_db: float = setting(6.0, "the limiter is linear up to this many dB below the ceiling",
                                     min=0.5, max=20.0)


VIDEO_PRESETS = ("720p30", "480p15", "still")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


@dataclass(frozen=True)
class StreamSettings:
    """The 24/7 stream: where it goes, the model, how far ahead it composes (`chiplofi stream`)."""

    outputs: tuple[str, ...] = setting(
        (), "where the stream goes: rtmp:// or rtmps:// URLs (the stream key is appended, or replaces "
            "{key}), file paths (.wav = audio only; .flv/.mkv/.mp4/.ts = audio and video), 'speakers', "
            "'null'. A file is never overwritten: when the name is taken, the next free NAME-N is written. "
            "Empty = with a stream key: YouTube's primary ingest plus a local recording; "
            "without: a local recording (and the status page's live player)")
    key_file: str = setting("", "file holding the stream key (CHIPLOFI_STREAM_KEY takes precedence): one "
                                "line of letters, digits and - _ . ~; never logged or shown")
    checkpoint: str = setting("", "composer checkpoint directory; empty = the shipped one (or the "
                                  "rule-based composer when none is shipped); 'rule-based' = no model")
    seed: int | None = setting(None, "seed of the composer, humanisation and crackle; unset = picked at "
                                     "random once and kept in the state directory", min=0, max=2**32 - 1)
    swap_at: str = setting("section", "where a new checkpoint takes over from the playing one: at the next "
                                      "bar, section or track (it begins a new track in a related key)",
                           choices=("bar", "section", "track"))
    buffer_seconds: float = setting(30.0, "seconds of composed bars kept ahead of playback", min=4.0,
                                    max=600.0)
    prefill_timeout_seconds: float = setting(
        4.0, "longest wait for the buffer to fill before the outputs start anyway", min=0.5, max=300.0)
    ready_seconds: float = setting(10.0, "/readyz needs at least this much buffered (≤ buffer_seconds)",
                                   min=0.0, max=600.0)
    speed: float = setting(1.0, "clock speed: K × real time; 0 = unpaced (tests and benchmarks)",
                           min=0.0, max=1000.0)
    monitor: bool = setting(False, "also play on the local speakers")
    fast_start: bool = setting(True, "open with a few seconds of the rule-based composer while the model "
                                     "loads, so that audio starts at once")
    state_dir: str = setting("", "directory for recordings, the track archive and runtime files; empty = "
                                 "$STATE_DIRECTORY, else ./out/stream")


@dataclass(frozen=True)
class SinkSettings:
    """Behaviour of the outputs: buffering, ffmpeg supervision, local recordings."""

    queue_seconds: float = setting(3.0, "audio each output may queue before the oldest is dropped",
                                   min=0.5, max=60.0)
    ffmpeg: str = setting("ffmpeg", "ffmpeg executable")
    restart_initial_seconds: float = setting(1.0, "first wait before restarting a failed ffmpeg",
                                             min=0.1, max=2.0)
    restart_max_seconds: float = setting(30.0, "longest wait between ffmpeg restarts (doubling)",
                                         min=1.0, max=600.0)
    stall_seconds: float = setting(10.0, "ffmpeg making no progress this long is restarted",
                                   min=2.0, max=300.0)
    write_timeout_seconds: float = setting(5.0, "a write to ffmpeg blocked this long restarts it",
                                           min=0.5, max=120.0)
    target_retry_seconds: float = setting(2.0, "wait between reconnection attempts of one failed "
                                               "RTMP target (the others keep streaming)",
                                          min=0.5, max=120.0)
    target_timeout_seconds: float = setting(5.0, "an RTMP target whose peer takes nothing this long (no "
                                                 "handshake answer, a full send buffer) is disconnected "
                                                 "and retried", min=1.0, max=120.0)
    record_segment_minutes: float = setting(60.0, "length of each local recording file", min=1.0,
                                            max=1440.0)
    record_keep_mb: float = setting(2000.0, "local recordings kept, oldest deleted first", min=10.0,
                                    max=10_000_000.0)


@dataclass(frozen=True)
class VideoSettings:
    """The picture ffmpeg draws from the audio: background, one oscilloscope per voice, titles, logo."""

    preset: str = setting("480p15", "size and frame rate: 720p30, 480p15 or still (720p at 5 fps)",
                          choices=VIDEO_PRESETS)
    size: str = setting("", "picture size WIDTHxHEIGHT in even pixels, 128x72 to 3840x2160 (1080x1920 "
                            "stands upright); empty = the preset's")
    fps: int = setting(0, "frames per second; 0 = the preset's", min=0, max=60)
    video_kbps: int = setting(0, "video bitrate; 0 = the preset's", min=0, max=20000)
    audio_kbps: int = setting(128, "AAC bitrate", min=64, max=320)
    x264_preset: str = setting("veryfast", "x264 speed preset (faster = less CPU)", choices=X264_PRESETS)
    background: str = setting("#1b1530", "a colour #RRGGBB, or a file: a still image (.png, .jpg, .jpeg), an "
                                         "animated .gif or a video loop (.mp4, .webm, .mkv), scaled and "
                                         "cropped to the picture and looped forever; read once at start")
    wave_colour: str = setting("#9be7ff", "colour of the waveform layer, #RRGGBB")
    text_colour: str = setting("#f4e9d8", "colour of the title, text lines and now playing, #RRGGBB")
    scope_colours: tuple[str, ...] = setting(
        ("#fca044", "#f878f8", "#3cbcfc", "#b8f818"),
        "oscilloscope colours of lead, harmony, bass and drums, #RRGGBB each")
    font: str = setting("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf", "font of the text")
    title: str = setting("chiplofi · 8-bit lo-fi radio", "the channel's name, at the top; empty = none")
    text: tuple[str, ...] = setting((), "free lines of text under the title (at most 3)")
    logo: str = setting("", "an image (.png with alpha, or .jpg) shown in a corner; empty = none; read once "
                            "at start")
    logo_corner: str = setting("top-right", "where the logo sits",
                               choices=("top-left", "top-right", "bottom-left", "bottom-right"))
    logo_height: float = setting(0.16, "logo height as a share of the picture's height", min=0.02, max=0.5)
    layout: tuple[str, ...] = setting(
        ("scopes", "now_playing", "title", "text", "logo"),
        "the layers shown, from: scopes (one oscilloscope per voice), waveform (the mix's, where scopes "
        "are not shown), now_playing, title, text, logo; a still-image channel can drop scopes to save CPU")
    pixel_size: int = setting(0, "screen pixels per picture pixel (the 8-bit look, scaled up nearest-neighbour); "
                                 "0 = about 180 picture pixels on the short side; 1 = full resolution",
                              min=0, max=16)
    thumbnail_seconds: float = setting(5.0, "refresh of the status page's thumbnail of the encoded video; "
                                            "0 = none", min=0.0, max=600.0)


@dataclass(frozen=True)
class StatusSettings:
    """The status HTTP server: /, /status, /metrics, /healthz, /readyz, /live.wav."""

    enabled: bool = setting(True, "serve the status page at all")
    addr: str = setting("127.0.0.1:8080", "HOST:PORT to listen on")
    max_clients: int = setting(32, "concurrent connections; more get 503", min=1, max=1024)
    max_listeners: int = setting(8, "concurrent live audio listeners", min=0, max=256)


@dataclass(frozen=True)
class ArchiveSettings:
    """The track archive: every track that played, as MIDI + JSON in <state_dir>/tracks (/tracks)."""

    enabled: bool = setting(True, "keep the tracks that played")
    keep_tracks: int = setting(1000, "tracks kept; beyond, the oldest are deleted first", min=1,
                               max=1_000_000)
    keep_mb: float = setting(100.0, "megabytes kept; beyond, the oldest tracks are deleted first (the "
                                    "newest is always kept)", min=0.1, max=1_000_000.0)


EffectsChanges = partial_settings(EffectsSettings)


@dataclass(frozen=True)
class MoodSettings:
    """What a program changes while it runs; a key left out keeps its usual value."""

    tempo_min_bpm: float | None = setting(None, "slowest tempo of the tracks started during the mood",
                                          min=40.0, max=200.0)
    tempo_max_bpm: float | None = setting(None, "fastest tempo of the tracks started during the mood",
                                          min=40.0, max=200.0)
    energy: float | None = setting(None, "0 sparse and soft .. 1 busy and loud", min=0.0, max=1.0)
    temperature: float | None = setting(None, "composer temperature: 0.05 safe .. 3 adventurous",
                                        min=0.05, max=3.0)
    style_blend: float | None = setting(None, "0 lo-fi .. 1 NES (above 0.5 some tracks play without drums, "
                                        "half at 1)", min=0.0, max=1.0)
    effects: EffectsChanges = field(default_factory=EffectsChanges,  # type: ignore[valid-type]
                                    metadata={"help": "[effects] keys changed during the mood"})


@dataclass(frozen=True)
class ProgramSettings:
    """A mood played from a cron start time until a time of day (or for some minutes)."""

    name: str = setting("", "shown in /status and the log; empty = the mood's name")
    cron: str = setting("", "when it starts: minute hour day month weekday (0 or 7 = Sunday)")
    until: str = setting("", "when it ends: the next HH:MM (or HH:MM:SS) after the start")
    minutes: float = setting(0.0, "how long it lasts, instead of until", min=0.0, max=7 * 24 * 60.0)
    mood: str = setting("", "the name of its [schedule.mood.NAME] table")


MOOD_EXAMPLE = """\
[schedule.mood.night]          # slower tempo, softer drums, more crackle
tempo_min_bpm = 60.0           # tracks started during the mood draw their tempo in this range
tempo_max_bpm = 68.0           #   (set both; equal = a fixed tempo), 40 .. 200
energy = 0.3                   # 0 sparse and soft .. 1 busy and loud
temperature = 0.8              # 0.05 safe .. 3 adventurous (trained models)
style_blend = 0.2              # 0 lo-fi .. 1 NES (trained models)
[schedule.mood.night.effects]  # any [effects] key
crackle_per_second = 9.0
hiss_db = -52.0
lowpass_hz = 5000.0
"""

PROGRAM_EXAMPLE = """\
[[schedule.program]]
name = "night"                 # shown in /status and the log; default: the mood's name
cron = "0 22 * * *"            # starts: minute hour day month weekday (0 or 7 = Sunday)
until = "06:00"                # ends at the next 06:00 (HH:MM or HH:MM:SS) after the start,
# minutes = 480                #   or after this many minutes instead
mood = "night"
"""


@dataclass(frozen=True)
class ScheduleSettings:
    """Programs (moods at set times), timed checkpoint reloads and a periodic stats line."""

    timezone: str = setting("", "time zone of the cron expressions and until times, e.g. 'Europe/Berlin' "
                                "or 'UTC'; empty = the machine's local time")
    reload_cron: str = setting("", "reload the checkpoint and config (as SIGHUP does) at these times: "
                                   "minute hour day month weekday, e.g. '0 4 * * *'; empty = never")
    stats_interval_seconds: float = setting(900.0, "log one stats line this often; 0 = never",
                                            min=0.0, max=86400.0)
    mood: dict[str, MoodSettings] = field(default_factory=dict, metadata={
        "help": "moods, as tables under [schedule.mood]: what a program changes while it runs (composer "
                "and effects); it all reverts when the program ends",
        "example": MOOD_EXAMPLE})
    program: tuple[ProgramSettings, ...] = field(default=(), metadata={
        "help": "programs, as [[schedule.program]] tables: a mood at set times. When programs overlap, "
                "the one that started last plays (on the same start, the one listed later), and when it "
                "ends a program still running resumes",
        "example": PROGRAM_EXAMPLE})


@dataclass(frozen=True)
class Config:
    """Everything chiplofi reads from its TOML file."""

    render: RenderSettings = field(default_factory=RenderSettings,
                                   metadata={"help": "FluidSynth rendering"})
    effects: EffectsSettings = field(default_factory=EffectsSettings,
                                     metadata={"help": "lo-fi effects"})
    stream: StreamSettings = field(default_factory=StreamSettings,
                                   metadata={"help": "the 24/7 stream"})
    sinks: SinkSettings = field(default_factory=SinkSettings, metadata={"help": "stream outputs"})
    video: VideoSettings = field(default_factory=VideoSettings, metadata={"help": "stream video"})
    status: StatusSettings = field(default_factory=StatusSettings,
                                   metadata={"help": "status HTTP server"})
    archive: ArchiveSettings = field(default_factory=ArchiveSettings,
                                     metadata={"help": "track archive"})
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings,
                                       metadata={"help": "schedule: programs, timed reloads, stats line"})


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _optional_of(kind: Any) -> Any:
    """`X | None` → X, else None. TOML has no null: such a key is either given or left out."""
    if get_origin(kind) in (Union, types.UnionType) and type(None) in get_args(kind):
        return next(arg for arg in get_args(kind) if arg is not type(None))
    return None


def _describe(meta: Mapping[str, Any], kind: type) -> str:
    kind = _optional_of(kind) or kind
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("min"), meta.get("max")
    if get_origin(kind) is tuple:
        return "a list of strings"
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    if lo is not None and hi is not None:
        return f"{name} from {_number(lo)} to {_number(hi)}"
    return name


SHOWN_CHARACTERS = 80  # of a value echoed in an error
PATH_MAX_BYTES, NAME_MAX_BYTES = 4095, 255  # Linux: a whole path, one component


def shown(value: Any) -> str:
    """`repr(value)` for an error message, cut to a few dozen characters: a huge value (a 100 MB
    string) must not make a huge one-line error."""
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS - 20]}…({len(text)} characters)"


def check_path(key: str, value: str) -> str:
    """`value` if it is a path the system can open: no NUL, no component over 255 bytes, at most
    4095 bytes in all. Raises ConfigError naming `key` (the OS would raise ValueError or
    ENAMETOOLONG much later)."""
    if "\0" in value:
        raise ConfigError(f"{key}: a path cannot hold a NUL character, got {shown(value)}")
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) > PATH_MAX_BYTES:
        raise ConfigError(f"{key}: a path of {len(encoded)} bytes is longer than the {PATH_MAX_BYTES} "
                          f"the system accepts, got {shown(value)}")
    for part in encoded.split(b"/"):
        if len(part) > NAME_MAX_BYTES:
            raise ConfigError(f"{key}: a file or directory name of {len(part)} bytes is longer than the "
                              f"{NAME_MAX_BYTES} the system accepts, got {shown(value)}")
    return value


def _check_value(key: str, value: Any, kind: type, meta: Mapping[str, Any]) -> Any:
    accepted = _describe(meta, kind)
    kind = _optional_of(kind) or kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif get_origin(kind) is tuple:  # tuple[str, ...]: a TOML array of strings
        ok = isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
        value = tuple(value) if ok else value
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        ok = ok and value == value and value not in (float("inf"), float("-inf"))
    else:
        ok = isinstance(value, str)
    if ok and meta.get("choices") and value not in meta["choices"]:
        ok = False
    if ok and meta.get("min") is not None and value < meta["min"]:
        ok = False
    if ok and meta.get("max") is not None and value > meta["max"]:
        ok = False
    if not ok:
        raise ConfigError(f"{key}: expected {accepted}, got {shown(value)}")
    return value


def _key_label(name: object) -> str:
    """A key as an error message shows it: quoted when it holds a character that is not printable
    (a newline in a TOML key must not split the one line an error has per key)."""
    return str(name) if str(name).isprintable() else repr(name)


def settings_from_mapping(cls: type[SettingsT], mapping: Mapping[str, Any], prefix: str = "",
                          problems: list[str] | None = None) -> SettingsT:
    """Build settings class `cls` from a (TOML) mapping, validating every key against its field.

    Unknown keys are errors too: a typo must not silently fall back to a default. Every bad key
    is reported, not only the first: the ConfigError's message has one line per key (so that
    fixing a config takes one round). `problems` collects them across nested tables.
    """
    top = problems is None
    problems = [] if problems is None else problems
    if not isinstance(mapping, Mapping):
        problems.append(f"{prefix.rstrip('.') or 'config'}: expected a table, got {shown(mapping)}")
        mapping = {}
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, value in mapping.items():
        if name not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{prefix}{_key_label(name)}: unknown key; known keys here: {known}")
            continue
        kind, key = hints[name], f"{prefix}{name}"
        # tuple[Item, ...] / dict[str, Item]: the kind of the items
        item_kind = {tuple: 0, dict: 1}.get(get_origin(kind))  # type: ignore[call-overload]
        item_kind = get_args(kind)[item_kind] if item_kind is not None else None
        if value is None and _optional_of(kind) is not None:  # left out (a round trip of asdict)
            values[name] = None
        elif dataclasses.is_dataclass(kind):
            default = getattr(cls(), name)  # type: ignore[call-arg]
            given = {k: v for k, v in dataclasses.asdict(default).items() if v is not None}
            merged = {**given, **value} if isinstance(value, Mapping) else value
            values[name] = settings_from_mapping(kind, merged, f"{key}.", problems)
        elif get_origin(kind) is tuple and dataclasses.is_dataclass(item_kind):  # [[key]]: an array of tables
            if not isinstance(value, (list, tuple)):
                problems.append(f"{key}: expected an array of tables ([[{key}]]), got {shown(value)}")
                continue
            values[name] = tuple(settings_from_mapping(item_kind, item, f"{key}[{i}].", problems)
                                 for i, item in enumerate(value))
        elif get_origin(kind) is dict and dataclasses.is_dataclass(item_kind):  # [key.NAME]: named tables
            if not isinstance(value, Mapping):
                problems.append(f"{key}: expected tables [{key}.NAME], got {shown(value)}")
                continue
            values[name] = {str(item_name): settings_from_mapping(item_kind, item, f"{key}.{_key_label(item_name)}.",
                                                                  problems)
                            for item_name, item in value.items()}
        else:
            try:
                values[name] = _check_value(key, value, kind, fields[name].metadata)
            except ConfigError as error:
                problems.append(str(error))
    if top and problems:
        raise ConfigError("\n".join(problems))
    return cls(**values)


ENV_PREFIX = "CHIPLOFI_"
ENV_SEPARATOR = "__"  # CHIPLOFI_STREAM__BUFFER_SECONDS=40 → stream.buffer_seconds = 40


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Config overrides from `CHIPLOFI_<TABLE>__<KEY>` variables, as a nested table.

    Values are read as TOML values (`40`, `true`, `["null"]`); anything else is a string.
    Variables without the `__` separator (CHIPLOFI_STREAM_KEY, ...) are not config keys.
    """
    table: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX):].split(ENV_SEPARATOR)]
        if not all(parts):
            raise ConfigError(f"{name}: expected CHIPLOFI_<TABLE>__<KEY>, e.g. CHIPLOFI_STREAM__SPEED")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = table
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(parts)} is not inside a table")
            node = child
        node[parts[-1]] = value
    return table


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; None gives the defaults.

    With `environ`, `CHIPLOFI_<TABLE>__<KEY>` variables override the file (see `env_overrides`).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory; expected a TOML config file")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputFileError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if environ is not None:
        data = _merge(data, env_overrides(environ))
    return settings_from_mapping(Config, data)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def example_toml(settings: Any = None, prefix: str = "") -> str:
    """A TOML file documenting every key of `settings` (default: `Config()`) with its value, help
    and accepted values.

    `deploy/config.example.toml` is this text (a test keeps them equal), so the example can
    never fall behind the settings.
    """
    settings = Config() if settings is None else settings
    hints = get_type_hints(type(settings))
    scalars, tables = [], []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            tables.append((f, value))
            continue
        if "example" in f.metadata:  # tables of tables (none by default): a commented example
            comment = textwrap.wrap(f.metadata["help"], 98) + [""] + f.metadata["example"].splitlines()
            scalars.append("".join(f"# {line}".rstrip() + "\n" for line in comment))
            continue
        comment = textwrap.wrap(f"{f.metadata['help']} ({_describe(f.metadata, hints[f.name])})", 98)
        line = f"{f.name} = {_toml_value(value)}" if value is not None else f"# {f.name} =   (unset by default)"
        scalars.append("".join(f"# {line}\n" for line in comment) + line + "\n")
    parts = []
    if prefix:
        parts.append(f"[{prefix.rstrip('.')}]\n" + "\n".join(scalars))
    for f, value in tables:
        parts.append(f"# {f.metadata['help']}\n" + example_toml(value, f"{prefix}{f.name}."))
    return "\n".join(parts)
