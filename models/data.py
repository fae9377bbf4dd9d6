"""Training data: MIDI folders → a `Corpus` (`models.corpus`), cached on the folders' content.

Entry points: `load_corpus(folders)` (default: the shared folders; progress bar) and
`load_folder(folder)`; `models.split.split_corpus` splits the result into training and held-out
songs. A file becomes bars in `models.midi_bars` (tokens: `models.tokens`; keys and chords:
`models.theory`); the cache is `models.data_cache`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from models.corpus import Corpus, SongArrays, assemble, concatenate
from models.data_cache import cache_path, content_hash, load_cache, save_cache
from models.errors import DataError
from models.midi_bars import parse_file
from models.tokens import STYLES

log = logging.getLogger(__name__)


def _parse_job(job: tuple[str, str, str, int]) -> SongArrays | str:
    path, name, group, style = job
    return parse_file(Path(path), name, group, style)


def guess_style(folder: Path) -> int:
    """Style index of a folder from its name: 'nes' → nes, 'lakh' → lakh, 'lofi'/'lo-fi' → lofi."""
    name = folder.resolve().name.lower()
    if "nes" in name.split("-") or name.startswith("nes"):
        return STYLES.index("nes")
    if "lakh" in name:
        return STYLES.index("lakh")
    if "lofi" in name or "lo-fi" in name:
        return STYLES.index("lofi")
    return STYLES.index("lakh")


def midi_files(folder: Path) -> list[Path]:
    """MIDI files under `folder`, recursively, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".mid", ".midi"))


def load_folder(folder: str | Path, style: str | int | None = None, *, use_cache: bool = True,
                workers: int | None = None, progress: bool = True) -> Corpus:
    """Parse every MIDI file under `folder` (cached on the folder's content).

    `style` is a name in `STYLES` or its index; by default it is guessed from the folder name
    (NES files are read by channel, others through `models.voices.assign_voices`). Song groups
    for splitting: the first sub-folder (the game) for NES, the file otherwise.
    Raises DataError when the folder does not exist; files that cannot be used are counted in
    `skipped`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    style_index = (guess_style(folder) if style is None
                   else STYLES.index(style) if isinstance(style, str) else int(style))
    files = midi_files(folder)
    data_hash = content_hash(folder, files, style_index)
    cached_at = cache_path(data_hash)
    if use_cache and cached_at.exists():
        cached = load_cache(cached_at)
        if cached is not None:
            log.info("%s: %d songs, %d bars (cached %s)", folder, cached.n_songs, cached.n_bars, cached_at.name)
            return cached

    prefix = folder.resolve().name
    jobs = []
    for path in files:
        relative = path.relative_to(folder)
        name = f"{prefix}/{relative.as_posix()}"
        if STYLES[style_index] == "nes" and len(relative.parts) > 1:
            group = f"{prefix}/{relative.parts[0]}"
        else:
            group = name
        jobs.append((str(path), name, group, style_index))

    from tqdm import tqdm

    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    results: list[SongArrays | str] = []
    bar = tqdm(total=len(jobs), desc=f"reading {prefix}", unit="file", disable=not progress)
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_parse_job, jobs, chunksize=4):
                results.append(result)
                bar.update()
    else:
        for job in jobs:
            results.append(_parse_job(job))
            bar.update()
    bar.close()

    skipped: dict[str, int] = {}
    parsed = []
    for result in results:
        if isinstance(result, str):
            skipped[result] = skipped.get(result, 0) + 1
        else:
            parsed.append(result)
    corpus = assemble(parsed, data_hash, skipped)
    log.info("%s: %d songs, %d bars, skipped %s", folder, corpus.n_songs, corpus.n_bars, skipped or "none")
    if use_cache:
        save_cache(cached_at, corpus)
    return corpus


# pop909 (real melodies over real progressions) and vgmidi (game-music arrangements) train as
# the "lakh" style: full arrangements that teach every blend its leads, harmony and bass.
DEFAULT_FOLDERS: tuple[str, ...] = ("../shared/data/lofi", "../shared/data/nes", "../shared/data/lakh-lofi",
                                    "../shared/data/pop909", "../shared/data/vgmidi")


def default_folders(repo_root: Path | None = None) -> list[Path]:
    """The shared training folders, relative to the repository root."""
    root = repo_root or Path(__file__).resolve().parent.parent
    return [(root / folder).resolve() for folder in DEFAULT_FOLDERS]


def load_corpus(folders: Sequence[str | Path] | None = None, *, use_cache: bool = True,
                workers: int | None = None, progress: bool = True) -> Corpus:
    """All songs of `folders` (default: the shared lofi, nes, lakh-lofi, pop909 and vgmidi folders).

    Raises DataError when no folder holds a usable song.
    """
    paths = [Path(f) for f in folders] if folders else default_folders()
    corpus = concatenate([load_folder(p, use_cache=use_cache, workers=workers, progress=progress) for p in paths])
    if corpus.n_songs == 0:
        raise DataError(f"no usable MIDI songs in {', '.join(str(p) for p in paths)} (skipped: {corpus.skipped})")
    return corpus
