"""The training data (models.tokens, theory, midi_bars, corpus, data_cache, split, data): token format,
key/chord estimation, NES beat, folders with bad files, cache, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from models.corpus import Corpus, SongInfo
from models.data import load_corpus, load_folder
from models.errors import DataError
from models.midi_bars import MIN_BARS, estimate_nes_grid, parse_file
from models.split import split_corpus
from models.theory import (
    CHORD_QUALITIES,
    MAJOR,
    MINOR,
    NO_CHORD_ROOT,
    chord_name,
    estimate_chord,
    estimate_key,
    key_name,
    normalising_shift,
    parse_key,
    transpose_chords,
)
from models.tokens import (
    DRUM_VOCAB,
    FIRST_PITCH_TOKEN,
    HOLD,
    PITCH_RANGES,
    PITCHED_VOCAB,
    PITCHED_VOICES,
    STYLES,
    bar_notes,
    pitch_to_token,
    token_to_pitch,
    transpose_tokens,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_song(path: Path, program: int = 0) -> None:
    """Four bars at 100 BPM: C–Am–F–G, a bass line and a drum part."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=100)
    keys = pretty_midi.Instrument(program, name="keys")
    bass = pretty_midi.Instrument(33, name="bass")
    drums = pretty_midi.Instrument(0, is_drum=True, name="drums")
    beat = 0.6
    for bar, chord in enumerate(([60, 64, 67], [57, 60, 64], [53, 57, 60], [55, 59, 62])):
        start = bar * 4 * beat
        for pitch in chord:
            keys.notes.append(pretty_midi.Note(80, pitch, start, start + 4 * beat))
        bass.notes.append(pretty_midi.Note(90, chord[0] - 24, start, start + 2 * beat))
        for b in range(4):
            drums.notes.append(pretty_midi.Note(90, 36 if b % 2 == 0 else 38, start + b * beat, start + b * beat + 0.1))
    midi.instruments.extend([keys, bass, drums])
    midi.write(str(path))


def test_token_round_trip_through_notes():
    tokens = np.zeros((16, 4), dtype=np.int16)
    tokens[0, 0] = pitch_to_token(0, 72)
    tokens[1:4, 0] = HOLD
    tokens[8, 2] = pitch_to_token(2, 36)
    tokens[9:16, 2] = HOLD
    tokens[4, 3] = 1 | 4  # kick + closed hat
    following = np.zeros((16, 4), dtype=np.int16)
    following[0:2, 2] = HOLD
    notes = bar_notes(tokens, following)
    assert ("lead", 72, 0, 4, 92) in notes
    assert ("bass", 36, 8, 10, 96) in notes  # held two steps into the next bar
    assert {(n[1], n[2]) for n in notes if n[0] == "drums"} == {(36, 4), (42, 4)}


def test_pitches_fold_into_each_voice_range():
    for voice, name in enumerate(PITCHED_VOICES):
        low, high = PITCH_RANGES[name]
        for pitch in (0, low - 1, low, high, high + 1, 127):
            token = pitch_to_token(voice, pitch)
            assert FIRST_PITCH_TOKEN <= token < PITCHED_VOCAB
            assert token_to_pitch(voice, token) % 12 == pitch % 12


def test_transposition_moves_notes_chords_and_back():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, PITCHED_VOCAB, size=(3, 16, 4)).astype(np.int16)
    tokens[..., 3] = rng.integers(0, DRUM_VOCAB, size=(3, 16))
    up = transpose_tokens(tokens, 5)
    assert np.array_equal(up[..., 3], tokens[..., 3])  # drums do not move
    onset = tokens[..., :3] >= FIRST_PITCH_TOKEN
    moved = (up[..., :3].astype(int) - tokens[..., :3]) % 12
    assert np.all(moved[onset] == 5)
    chords = np.array([[0, 1], [NO_CHORD_ROOT, 0], [10, 3]], dtype=np.int16)
    assert transpose_chords(chords, 3).tolist() == [[3, 1], [NO_CHORD_ROOT, 0], [1, 3]]


def test_key_and_chord_estimation():
    c_major = np.zeros(12)
    c_major[[0, 2, 4, 5, 7, 9, 11]] = [5, 2, 3, 2, 4, 2, 1]
    assert estimate_key(c_major) == (0, MAJOR)
    cmaj7 = np.zeros(12)
    cmaj7[[0, 4, 7, 11]] = 1.0
    root, quality = estimate_chord(cmaj7, bass_pc=0)
    assert (root, CHORD_QUALITIES[quality]) == (0, "maj7")
    am9 = np.zeros(12)
    am9[[9, 0, 4, 7, 11]] = 1.0
    assert chord_name(*estimate_chord(am9, bass_pc=9)) == "Am9"
    assert estimate_chord(np.zeros(12), None) == (NO_CHORD_ROOT, 0)
    assert key_name(9, MINOR) == "A minor"
    assert normalising_shift(9, MINOR) == 0 and normalising_shift(2, MAJOR) == -2


def test_nes_grid_from_frame_onsets():
    # 8 frames per 16th note = 112.5 BPM, starting at frame 30, with a few gaps.
    onsets = 30 + 8 * np.array([0, 1, 2, 4, 6, 7, 8, 10, 12, 13, 14, 16, 20, 22, 24])
    sixteenth, phase = estimate_nes_grid(onsets)
    assert sixteenth == pytest.approx(8.0, abs=0.3)
    assert 900 / sixteenth == pytest.approx(112.5, rel=0.04)
    assert (phase - 30) % 8 == pytest.approx(0, abs=0.5) or (phase - 30) % 8 == pytest.approx(8, abs=0.5)


def test_folder_with_broken_and_empty_files_is_read_and_counted(tmp_path):
    folder = tmp_path / "songs"
    folder.mkdir()
    write_song(folder / "good.mid")
    (folder / "broken.mid").write_bytes(b"MThd this is not midi at all")
    pretty_midi.PrettyMIDI().write(str(folder / "empty.mid"))
    corpus = load_folder(folder, progress=False, workers=1)
    assert corpus.n_songs == 1
    assert corpus.skipped == {"broken": 1, "empty": 1}
    assert corpus.tokens.shape == (4, 16, 4) and corpus.tokens.dtype == np.int16
    song = corpus.songs[0]
    assert song.voices_present[2:] == (True, True) and any(song.voices_present[:2])
    assert (song.key_tonic, song.key_mode) in ((0, MAJOR), (9, MINOR))
    names = [chord_name(*c) for c in corpus.chords]
    assert names[0].startswith("C") and names[1].startswith("Am")
    # Drums: kick on beats 1 and 3, snare on 2 and 4.
    assert corpus.tokens[0, [0, 4, 8, 12], 3].tolist() == [1, 2, 1, 2]
    # The second read comes from the cache, keyed on the content.
    assert list((tmp_path / "cache" / "chiplofi").glob("data-*.npz"))
    again = load_folder(folder, progress=False, workers=1)
    assert np.array_equal(again.tokens, corpus.tokens) and again.data_hash == corpus.data_hash
    write_song(folder / "second.mid", program=4)
    assert load_folder(folder, progress=False, workers=1).data_hash != corpus.data_hash


def test_missing_folder_and_no_songs_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_folder(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.mid").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no usable MIDI"):
        load_corpus([tmp_path / "junk"], progress=False, workers=1)


def test_split_is_by_group_never_by_bar():
    songs = [SongInfo(f"nes/game{g}/{i}.mid", f"nes/game{g}", 1, 0, 0, 120.0, (True,) * 4)
             for g in range(8) for i in range(3)]
    n = len(songs)
    corpus = Corpus(np.zeros((2 * n, 16, 4), np.int16), np.zeros((2 * n, 2), np.int16),
                      np.arange(0, 2 * n + 1, 2, dtype=np.int64), songs)
    train, validation = split_corpus(corpus, validation_percent=20)
    assert validation.n_songs > 0 and train.n_songs > 0
    assert not {s.group for s in train.songs} & {s.group for s in validation.songs}
    assert train.n_bars + validation.n_bars == corpus.n_bars


def test_real_nes_and_lofi_files():
    nes = parse_file(SHARED / "nes" / "Super Mario Bros" / "1.mid", "nes/smb/1.mid", "nes/smb", STYLES.index("nes"))
    assert not isinstance(nes, str)
    assert 75 <= nes.info.tempo_bpm < 150  # written at 60 BPM; the real beat is estimated
    assert nes.tokens.shape[1:] == (16, 4) and nes.info.voices_present[:3] == (True, True, True)
    loop = next(p for p in sorted((SHARED / "lofi").glob("*.mid")) if "Cymatics" in p.name)
    parsed = parse_file(loop, "lofi/x.mid", "lofi/x.mid", STYLES.index("lofi"))
    assert not isinstance(parsed, str)
    assert parsed.tokens.shape[0] >= MIN_BARS
    assert (parsed.chords[:, 0] < 12).all()


@pytest.mark.parametrize("key, root, quality, name", [
    ("Bb minor", 1, "maj9", "Dbmaj9"),  # not C#maj9
    ("Eb major", 8, "maj7", "Abmaj7"),
    ("F major", 10, "maj7", "Bbmaj7"),
    ("D minor", 10, "maj7", "Bbmaj7"),
    ("E major", 1, "m7", "C#m7"),
    ("F# minor", 1, "m7", "C#m7"),
    ("B minor", 6, "m7", "F#m7"),
    ("D major", 10, "maj7", "A#maj7"),
    ("C major", 10, "maj7", "Bbmaj7"),  # no signature: the default names
])
def test_chords_are_spelled_from_the_key(key, root, quality, name):
    assert chord_name(root, CHORD_QUALITIES.index(quality), parse_key(key)) == name
    assert chord_name(NO_CHORD_ROOT, 0, parse_key(key)) == "N.C."
