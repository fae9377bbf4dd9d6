"""A corpus: the bars of many songs as numpy arrays, with what each song is.

Array format (bars of all songs concatenated in song order)
-----------------------------------------------------------
- ``tokens``  int16 ``(n_bars, 16, 4)``: one token per 16th-note step and voice (`models.tokens`).
- ``chords``  int16 ``(n_bars, 2)``: per bar ``(root, quality)`` (`models.theory`): root 0..11
  (C = 0) or ``NO_CHORD_ROOT`` (12) for a bar without pitched notes; quality indexes
  `CHORD_QUALITIES`.
- ``song_starts`` int64 ``(n_songs + 1,)``: song ``i`` owns bars ``song_starts[i]:song_starts[i+1]``.
- ``songs``: one `SongInfo` per song: ``name`` (path relative to its folder's parent, e.g.
  ``nes/Mega Man 2/1.mid``), ``group`` (the split unit: the game for NES, the file otherwise),
  ``style`` (index into `STYLES`), ``key_tonic`` 0..11, ``key_mode`` (0 major, 1 minor),
  ``tempo_bpm`` (estimated for NES files), ``voices_present`` (4 bools: does the voice play at
  all in the song; a voice absent from a whole song is unknown, not silent, for training).
- ``data_hash``: hash of the folders' content and of the format version (`models.data_cache`);
  ``skipped``: files left out, counted by reason (``broken``, ``empty``, ``not_4_4``, ...).

Everything is in the song's real key; `Corpus.transposed` moves songs (key normalisation).
Numpy only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.theory import normalising_shift, transpose_chords
from models.tokens import N_VOICES, STEPS_PER_BAR, transpose_tokens


@dataclass(frozen=True)
class SongInfo:
    """What one song of a corpus is; its bars are `Corpus.song_slice(i)`."""

    name: str
    group: str
    style: int
    key_tonic: int
    key_mode: int
    tempo_bpm: float
    voices_present: tuple[bool, bool, bool, bool]


@dataclass
class Corpus:
    """Bars of many songs (see the module docstring for the array format)."""

    tokens: np.ndarray  # (n_bars, 16, 4) int16
    chords: np.ndarray  # (n_bars, 2) int16: root, quality
    song_starts: np.ndarray  # (n_songs + 1,) int64
    songs: list[SongInfo]
    data_hash: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_bars(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_songs(self) -> int:
        return len(self.songs)

    def song_slice(self, index: int) -> slice:
        return slice(int(self.song_starts[index]), int(self.song_starts[index + 1]))

    def song_of_bar(self) -> np.ndarray:
        """(n_bars,) int64: the song index of every bar."""
        lengths = np.diff(self.song_starts)
        return np.repeat(np.arange(self.n_songs, dtype=np.int64), lengths)

    def subset(self, song_indices: Iterable[int]) -> Corpus:
        """A corpus of the given songs only (in that order)."""
        indices = list(song_indices)
        slices = [self.song_slice(i) for i in indices]
        lengths = [s.stop - s.start for s in slices]
        tokens = np.concatenate([self.tokens[s] for s in slices]) if slices else self.tokens[:0]
        chords = np.concatenate([self.chords[s] for s in slices]) if slices else self.chords[:0]
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return Corpus(tokens, chords, starts, [self.songs[i] for i in indices], self.data_hash, dict(self.skipped))

    def transposed(self, semitones_per_song: Sequence[int]) -> Corpus:
        """A copy with song `i` moved by `semitones_per_song[i]` (key, chords and notes)."""
        tokens = self.tokens.copy()
        chords = self.chords.copy()
        songs = []
        for i, (song, shift) in enumerate(zip(self.songs, semitones_per_song, strict=True)):
            part = self.song_slice(i)
            tokens[part] = transpose_tokens(tokens[part], int(shift))
            chords[part] = transpose_chords(chords[part], int(shift))
            songs.append(SongInfo(song.name, song.group, song.style, (song.key_tonic + shift) % 12,
                                  song.key_mode, song.tempo_bpm, song.voices_present))
        return Corpus(tokens, chords, self.song_starts.copy(), songs, self.data_hash, dict(self.skipped))

    def key_normalised(self) -> Corpus:
        """Every song moved by at most 6 semitones so that its scale is C major / A minor."""
        return self.transposed([normalising_shift(s.key_tonic, s.key_mode) for s in self.songs])


@dataclass
class SongArrays:
    """One song's bars, before they join a corpus."""

    info: SongInfo
    tokens: np.ndarray  # (n_bars, 16, 4) int16
    chords: np.ndarray  # (n_bars, 2) int16


def assemble(parsed: list[SongArrays], data_hash: str, skipped: dict[str, int]) -> Corpus:
    """One corpus of `parsed` songs, in order."""
    if parsed:
        tokens = np.concatenate([p.tokens for p in parsed]).astype(np.int16)
        chords = np.concatenate([p.chords for p in parsed]).astype(np.int16)
    else:
        tokens = np.zeros((0, STEPS_PER_BAR, N_VOICES), dtype=np.int16)
        chords = np.zeros((0, 2), dtype=np.int16)
    starts = np.concatenate([[0], np.cumsum([len(p.tokens) for p in parsed])]).astype(np.int64)
    return Corpus(tokens, chords, starts, [p.info for p in parsed], data_hash, skipped)


def concatenate(corpora: Sequence[Corpus]) -> Corpus:
    """One corpus of the songs of all `corpora`, in order; hashes combined, skips summed."""
    parsed = []
    skipped: dict[str, int] = {}
    for corpus in corpora:
        for i, song in enumerate(corpus.songs):
            part = corpus.song_slice(i)
            parsed.append(SongArrays(song, corpus.tokens[part], corpus.chords[part]))
        for reason, count in corpus.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    data_hash = hashlib.sha256("+".join(c.data_hash for c in corpora).encode()).hexdigest()[:16]
    return assemble(parsed, data_hash, skipped)
