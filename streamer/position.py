"""The radio's musical position, kept in the state directory so that a restart continues it.

`<state_dir>/position.json` holds the seed (picked at random on a fresh install without
`stream.seed`, then kept), the number of the next track, the key and tempo of the last track
that began playing, the controls (mood) it played with, and how many times the stream started.
A restart begins with a new track number in a key related to the last one, so two restarts in
a row never replay music; the count of starts varies the opening bridge.

It is rewritten (atomically) when a new track begins to play, a few times an hour.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.files import write_atomic
from streamer.logs import RateLimitedLog

log = logging.getLogger(__name__)

POSITION_FILE = "position.json"
VERSION = 1
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class StreamPosition:
    seed: int
    next_track: int = 0  # the number the next track the stream begins gets
    key: str = ""  # of the last track that began playing ("" = none yet)
    tempo_bpm: float = 0.0
    starts: int = 0  # how many times the stream has started with this position
    controls: dict[str, Any] = field(default_factory=dict)  # the mood the last track began with

    @property
    def after(self) -> tuple[str, float] | None:
        """(key, tempo) the next track follows, if a track has played."""
        return (self.key, self.tempo_bpm) if self.key and self.tempo_bpm > 0 else None

    def track_began(self, number: int, key: str, tempo_bpm: float, controls: dict[str, Any]) -> StreamPosition:
        """The position once track `number` has begun playing."""
        return dataclasses.replace(self, next_track=max(self.next_track, number + 1), key=key,
                                   tempo_bpm=float(tempo_bpm), controls=dict(controls))

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **dataclasses.asdict(self)}, indent=1, sort_keys=True) + "\n"


def random_seed() -> int:
    return secrets.randbelow(SEED_LIMIT)


def read_position(path: Path) -> StreamPosition | None:
    """The position kept in `path`; None if there is none, or it cannot be read (logged: a
    position that cannot be read must not stop the radio, which then starts afresh)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s: cannot read the stream's position (%s); starting a new one", path, exc)
        return None
    try:
        position = StreamPosition(seed=int(data["seed"]), next_track=int(data.get("next_track", 0)),
                                  key=str(data.get("key", "")), tempo_bpm=float(data.get("tempo_bpm", 0.0)),
                                  starts=int(data.get("starts", 0)), controls=dict(data.get("controls", {})))
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        log.warning("%s: not a stream position (%s: %s); starting a new one", path, type(exc).__name__, exc)
        return None
    if not (0 <= position.seed < SEED_LIMIT and position.next_track >= 0 and position.starts >= 0):
        log.warning("%s: seed, track number or start count out of range; starting a new one", path)
        return None
    return position


def write_position(path: Path, position: StreamPosition) -> None:
    """Replace `path` with `position` atomically; raises OSError."""
    write_atomic(path, position.to_json().encode("utf-8"))


def starting_position(path: Path, configured_seed: int | None) -> StreamPosition:
    """Where a (non-deterministic) start continues from: the kept position, one start later.

    The seed is `stream.seed` when set, else the kept one, else a new random one (kept from
    then on).
    """
    kept = read_position(path)
    if kept is None:
        seed = configured_seed if configured_seed is not None else random_seed()
        return StreamPosition(seed=seed, starts=1)
    seed = configured_seed if configured_seed is not None else kept.seed
    return dataclasses.replace(kept, seed=seed, starts=kept.starts + 1)


class PositionKeeper:
    """The position of a running stream: moved on as tracks begin to play (audio thread), written
    back by the main loop. With `seed_override` (--seed) a reproducible run from track 0 that leaves
    the kept position alone."""

    def __init__(self, path: Path, configured_seed: int | None, seed_override: int | None = None) -> None:
        self.path = path
        self.keeps = seed_override is None
        self.current = (starting_position(path, configured_seed) if self.keeps
                        else StreamPosition(seed=seed_override))
        self.changed = self.keeps  # written once the state directory exists (a new random seed is kept)
        self._log = RateLimitedLog(log, 300.0)

    def track_began(self, number: int, key: str, tempo_bpm: float, controls: dict[str, Any]) -> None:
        """Audio thread: track `number` began playing (a track number already passed is ignored)."""
        if number >= self.current.next_track:
            self.current = self.current.track_began(number, key, tempo_bpm, controls)
            self.changed = True

    def save_if_changed(self) -> None:
        """Main loop: keep the position (a failing disk is logged; the music plays on)."""
        if not (self.changed and self.keeps):
            return
        self.changed = False
        try:
            write_position(self.path, self.current)
        except OSError as exc:
            self._log.warning("cannot keep the stream's position in %s (%s)", self.path, exc.strerror or exc)
