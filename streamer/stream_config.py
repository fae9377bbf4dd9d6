"""The config `chiplofi stream` runs with: the file, then the environment, then the command line's
flags (`CliOverrides`), checked across keys (`check_config`); and `describe_config`, what
`chiplofi config check` prints of it. A SIGHUP reload reads it again the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.composer import uses_model
from streamer.config import Config, check_path, load_config
from streamer.errors import ConfigError
from streamer.logs import redact
from streamer.outputs import check_output_directory, classify_output, plan_outputs, read_stream_key, state_directory
from streamer.schedule import describe_schedule, parse_schedule
from streamer.status import parse_addr
from streamer.video_files import check_video_settings


@dataclass(frozen=True)
class CliOverrides:
    """What `chiplofi stream` flags override in the config (None = keep the config's)."""

    outputs: tuple[str, ...] | None = None
    status_addr: str | None = None
    checkpoint: str | None = None
    speed: float | None = None
    monitor: bool = False
    seed: int | None = None  # --seed: a reproducible run from track 0 (the kept position is neither read nor written)


def apply_overrides(config: Config, overrides: CliOverrides) -> Config:
    stream = config.stream
    if overrides.outputs is not None:
        stream = dataclasses.replace(stream, outputs=tuple(overrides.outputs))
    if overrides.checkpoint is not None:
        stream = dataclasses.replace(stream, checkpoint=overrides.checkpoint)
    if overrides.speed is not None:
        stream = dataclasses.replace(stream, speed=overrides.speed)
    if overrides.monitor:
        stream = dataclasses.replace(stream, monitor=True)
    if overrides.seed is not None:
        stream = dataclasses.replace(stream, seed=overrides.seed)
    status = config.status
    if overrides.status_addr is not None:
        status = dataclasses.replace(status, addr=overrides.status_addr)
    return dataclasses.replace(config, stream=stream, status=status)


def check_config(config: Config) -> None:
    """Checks across keys, and of formats the generic validator cannot know; raises ConfigError
    with one line per problem (every check runs)."""
    stream = config.stream
    problems: list[str] = []

    def attempt(check: Callable[..., Any], *args: Any) -> Any:
        try:
            return check(*args)
        except ConfigError as error:
            problems.extend(str(error).splitlines())
            return None

    if stream.ready_seconds > stream.buffer_seconds:
        problems.append(f"stream.ready_seconds: expected at most stream.buffer_seconds "
                        f"({stream.buffer_seconds:g}), got {stream.ready_seconds:g}")
    if config.status.enabled:
        attempt(parse_addr, config.status.addr)
    attempt(parse_schedule, config.schedule)
    for key in ("key_file", "state_dir"):
        attempt(check_path, f"stream.{key}", getattr(stream, key))
    if uses_model(stream.checkpoint):
        attempt(check_path, "stream.checkpoint", stream.checkpoint)
    attempt(check_path, "sinks.ffmpeg", config.sinks.ffmpeg)
    font_path_ok = attempt(check_path, "video.font", config.video.font) is not None
    kinds = [attempt(classify_output, spec) for spec in stream.outputs]
    for spec, kind in zip(stream.outputs, kinds, strict=True):
        is_file = kind == "wav" or (kind == "ffmpeg" and "://" not in spec)
        if is_file and attempt(check_path, "stream.outputs", spec) is not None:
            attempt(check_output_directory, spec, kind)
    if font_path_ok and ("ffmpeg" in kinds or not stream.outputs):  # (one line per key)
        attempt(check_video_settings, config.video, config.sinks.ffmpeg)
    if problems:
        raise ConfigError("\n".join(problems))


def load_stream_config(path: str | Path | None, overrides: CliOverrides,
                       environ: Mapping[str, str]) -> Config:
    """The config `chiplofi stream` runs with: file, then environment, then flags; all checked."""
    config = apply_overrides(load_config(path, environ), overrides)
    check_config(config)
    return config


def describe_config(config: Config, environ: Mapping[str, str]) -> list[str]:
    """What `chiplofi config check` prints: the plan in a few lines (no secrets)."""
    from streamer.composer import describe_checkpoint

    key = read_stream_key(config, environ)
    plan = plan_outputs(config, key)
    lines = [f"composer: {describe_checkpoint(config.stream.checkpoint)}",
             f"outputs: {redact(plan.describe(), [key]) or 'none'}",
             f"stream key: {'set' if key else 'not set'}",
             f"video: {config.video.preset}, audio {config.render.sample_rate} Hz AAC {config.video.audio_kbps} kbps",
             f"picture: background {config.video.background}; layers {', '.join(config.video.layout) or 'none'}"
             + (f"; logo {config.video.logo} ({config.video.logo_corner})" if config.video.logo else ""),
             f"buffer: {config.stream.buffer_seconds:g} s ahead; speed {config.stream.speed:g}",
             f"status: {'http://' + config.status.addr + '/' if config.status.enabled else 'off'}",
             f"state directory: {state_directory(config, environ)}"]
    lines += describe_schedule(config.schedule)
    return lines
