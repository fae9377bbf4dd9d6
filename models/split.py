"""Training and held-out songs: split by song group (the game for NES), never by bar."""

from __future__ import annotations

import hashlib

from models.corpus import Corpus
from models.tokens import STYLES


def split_corpus(corpus: Corpus, validation_percent: float = 10.0, salt: str = "chiplofi") -> tuple[Corpus, Corpus]:
    """(training, validation) split by song group (the game for NES), never by bar.

    A group's side depends only on its name, so adding data never moves existing songs.
    If a style has several groups, at least one of them is held out.
    """
    def bucket(group: str) -> float:
        return int(hashlib.sha256(f"{salt}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 100.0

    validation = {i for i, song in enumerate(corpus.songs) if bucket(song.group) < validation_percent}
    for style in range(len(STYLES)):
        groups = sorted({s.group for s in corpus.songs if s.style == style}, key=bucket)
        held = {corpus.songs[i].group for i in validation if corpus.songs[i].style == style}
        if len(groups) >= 2 and not held:
            validation |= {i for i, s in enumerate(corpus.songs) if s.group == groups[0]}
    training = [i for i in range(corpus.n_songs) if i not in validation]
    return corpus.subset(training), corpus.subset(sorted(validation))
