"""The cache of parsed folders: one ``data-<hash>.npz`` per folder in `cache_dir()`, keyed on the
folder's file names and bytes, its style and `FORMAT_VERSION`; read without pickle."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from models.corpus import Corpus, SongInfo

log = logging.getLogger(__name__)

# Bump when the arrays or their meaning change (models.tokens, models.theory, models.midi_bars,
# models.corpus): every data hash changes with it, which invalidates the caches.
FORMAT_VERSION = 4


def content_hash(folder: Path, files: list[Path], style: int) -> str:
    """The data hash of a folder's `files` read as `style` (16 hex digits)."""
    digest = hashlib.sha256(f"chiplofi-data-v{FORMAT_VERSION}-style{style}".encode())
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/chiplofi`, else `~/.cache/chiplofi`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chiplofi"


def cache_path(data_hash: str) -> Path:
    """Where the corpus of `data_hash` is cached."""
    return cache_dir() / f"data-{data_hash}.npz"


def save_cache(path: Path, corpus: Corpus) -> None:
    """Write `corpus` to `path` (atomically: a partly written cache is never read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"songs": [asdict(s) for s in corpus.songs], "skipped": corpus.skipped, "data_hash": corpus.data_hash}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, tokens=corpus.tokens, chords=corpus.chords, song_starts=corpus.song_starts,
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, path)


def load_cache(path: Path) -> Corpus | None:
    """The corpus cached at `path`, or None (logged) when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(bytes(stored["meta"]).decode())
            songs = [SongInfo(**{**s, "voices_present": tuple(s["voices_present"])}) for s in meta["songs"]]
            return Corpus(stored["tokens"], stored["chords"], stored["song_starts"], songs,
                          meta["data_hash"], dict(meta["skipped"]))
    except Exception as error:  # an unreadable cache is rebuilt
        log.warning("ignoring unreadable data cache %s: %s", path, error)
        return None
