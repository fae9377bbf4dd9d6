"""models.baseline by hand, and `evaluate` / `chiplofi eval` end to end on tiny models and
small MIDI folders: held-out selection, skipped files, errors, table, JSON."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from models import baseline as B, music_features as mf
from models.corpus import concatenate
from models.data import load_folder
from models.debug import synthetic_corpus, write_debug_checkpoint
from models.errors import CheckpointError, DataError
from models.evaluate import evaluate, format_table, held_out_part, to_json
from models.music_eval import ROWS, SOURCES, STYLE_SETTINGS, evaluate_style, measure_set
from models.music_features import FEATURES
from models.overlap import set_overlaps
from models.split import split_corpus
from streamer.cli import main as cli_main

# --------------------------------------------------------------------------- baselines by hand


def arrays(tokens: np.ndarray, song_starts: list[int], mask: np.ndarray | None = None) -> B.BarArrays:
    tokens = np.asarray(tokens, dtype=np.int64)
    result = B.BarArrays(tokens, np.zeros((len(tokens), 4), dtype=np.int64),
                         np.ones((len(tokens), 4), dtype=bool) if mask is None else mask,
                         np.array(song_starts, dtype=np.int64))
    result.previous_last[1:] = tokens[:-1, -1]
    result.previous_last[result.first_bars] = 0
    return result


def test_step_bigram_predicts_the_most_frequent_next_token():
    bar = np.zeros((1, 16, 4), dtype=np.int64)
    bar[0, :, 0] = [5, 1, 1, 1] * 4  # a note on every beat, held three steps
    train = arrays(bar, [0, 1])
    predicted = B.StepBigram(train).predict(train)
    # Rest → 5 (once), 5 → hold (4), hold → hold (8) beats hold → 5 (3): the three later onsets are missed.
    assert predicted[0, :, 0].tolist() == [5, 1, 1, 1] + [1, 1, 1, 1] * 3
    assert B.accuracy_per_voice(predicted, train)[0] == 13 / 16
    assert B.accuracy(predicted, train) == (13 + 16 * 3) / 64
    unknown_drums = arrays(bar, [0, 1], np.array([[True, True, True, False]]))
    assert B.accuracy(predicted, unknown_drums) == (13 + 32) / 48
    assert math.isnan(B.accuracy_per_voice(predicted, unknown_drums)[3])


def test_step_bigram_reads_the_previous_bar_at_step_zero():
    bars = np.zeros((2, 16, 4), dtype=np.int64)
    bars[0, 15, 2] = 9
    bars[1, 0, 2] = 1  # the bass note goes on over the bar line
    train = arrays(bars, [0, 2])
    assert train.previous_last[1, 2] == 9
    assert B.StepBigram(train).predict(train)[1, 0, 2] == 1


def test_position_mode_and_copy_previous_bar():
    bars = np.zeros((3, 16, 4), dtype=np.int64)
    bars[:, 0, 0] = [5, 5, 7]
    bars[:, 4, 3] = [1, 3, 3]
    train = arrays(bars, [0, 2, 3])  # songs: bars 0–1, bar 2
    best = B.PositionMode(train).predict(train)
    assert best[:, 0, 0].tolist() == [5, 5, 5] and best[:, 4, 3].tolist() == [3, 3, 3]
    assert B.accuracy(best, train) == (192 - 2) / 192
    copied = B.copy_previous_bar(train)
    assert (copied[0] == 0).all() and (copied[2] == 0).all()  # each song's first bar: rests
    assert np.array_equal(copied[1], bars[0])
    # Misses: bar 0 and bar 2 (rests) miss their lead note and drum hit; bar 1 misses the new drum hit.
    assert B.accuracy(copied, train) == (192 - 5) / 192


def test_bar_arrays_of_a_corpus_are_key_normalised_per_song():
    corpus = synthetic_corpus(n_songs=3, bars_per_song=4)
    result = B.bar_arrays(corpus)
    assert result.tokens.shape == (12, 16, 4)
    assert (result.previous_last[[0, 4, 8]] == 0).all()
    assert np.array_equal(result.previous_last[1], result.tokens[0, -1])
    assert result.voice_mask[:, 3].tolist() == [False] * 8 + [True] * 4  # only the third song has drums
    # The synthetic songs play the same I–vi–IV–V loop in random keys: normalised, they are alike.
    assert np.array_equal(result.tokens[:4, :, :3], result.tokens[4:8, :, :3])


def test_chord_markov_by_hand():
    train = B.sequences_from([np.zeros((4, 2))], [np.array([0, 1, 0, 1])], np.array([[1.0, 0, 0]]), np.array([0]))
    held = B.sequences_from([np.zeros((2, 2))], [np.array([0, 1])], np.array([[1.0, 0, 0]]), np.array([0]))
    n = B.N_CHORDS
    expected = -(math.log(1.5 / (1 + 0.5 * n)) + math.log(2.5 / (2 + 0.5 * n))) / 2
    assert B.ChordMarkov(train).nll_per_bar(held) == pytest.approx(expected)


def test_latent_markov_learns_a_linear_gaussian_chain():
    rng = np.random.default_rng(0)

    def songs(count: int) -> B.Sequences:
        latents, chords = [], []
        for _ in range(count):
            z = np.zeros((40, 3))
            chord = rng.integers(0, 5, size=40)
            for t in range(40):
                z[t] = (0.8 * z[t - 1] if t else 0.0) + 0.3 * (chord[t] == 2) + 0.1 * rng.standard_normal(3)
            latents.append(z)
            chords.append(chord)
        return B.sequences_from(latents, chords, np.tile([0.0, 1.0, 0.0], (count, 1)), np.zeros(count))

    train, held = songs(60), songs(20)
    model = B.LatentMarkov(train, ridge=1e-3)
    truth = 3 * (0.5 * math.log(2 * math.pi * 0.01) + 0.5)  # nats per bar of the true chain
    assert model.nll_per_bar(held) == pytest.approx(truth, abs=0.1)
    figures = B.sequence_baselines(train, held)
    assert figures["nll"] == pytest.approx(figures["chord_nll"] + figures["latent_nll"])
    assert figures["chord_nll"] == pytest.approx(math.log(5), abs=0.3)  # five chords, at random


# --------------------------------------------------------------------------- evaluate end to end

def write_song(path: Path, seed: int, bars: int = 8) -> None:
    """A four-part song in C major at 100 BPM: lead line, chords, bass roots, a drum beat."""
    rng = np.random.default_rng(seed)
    midi = pretty_midi.PrettyMIDI(initial_tempo=100)
    lead = pretty_midi.Instrument(80, name="lead")
    keys = pretty_midi.Instrument(4, name="keys")
    bass = pretty_midi.Instrument(33, name="bass")
    drums = pretty_midi.Instrument(0, is_drum=True, name="drums")
    beat = 0.6
    scale = [0, 2, 4, 5, 7, 9, 11]
    for bar in range(bars):
        root = scale[int(rng.integers(0, 7))]
        start = bar * 4 * beat
        for interval in (0, 4, 7):
            keys.notes.append(pretty_midi.Note(70, 60 + (root + interval) % 12, start, start + 4 * beat))
        bass.notes.append(pretty_midi.Note(90, 36 + root, start, start + 2 * beat))
        for eighth in range(8):
            t = start + eighth * beat / 2
            lead.notes.append(pretty_midi.Note(90, 72 + scale[int(rng.integers(0, 7))], t, t + beat / 2))
        for b in range(4):
            drums.notes.append(pretty_midi.Note(90, 36 if b % 2 == 0 else 38, start + b * beat, start + b * beat + 0.1))
    midi.instruments.extend([lead, keys, bass, drums])
    midi.write(str(path))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cache = pytest.MonkeyPatch()
    cache.setenv("XDG_CACHE_HOME", str(root / "cache"))
    # Training folders named as the styles are guessed: lo-fi songs, and NES games (read by channel).
    train_dir, nes_dir, eval_dir = root / "lofi", root / "nes", root / "eval-songs"
    train_dir.mkdir()
    eval_dir.mkdir()
    for number in range(6):
        write_song(train_dir / f"song{number}.mid", seed=number)
    for game in range(3):
        (nes_dir / f"game{game}").mkdir(parents=True)
        for number in range(2):
            write_song(nes_dir / f"game{game}" / f"song{number}.mid", seed=50 + 2 * game + number)
    training, _ = split_corpus(load_folder(train_dir, progress=False, workers=1))
    seen = training.songs[0].name.split("/")[-1]
    for number in range(3):
        write_song(eval_dir / f"new{number}.mid", seed=100 + number)
    (eval_dir / "copy.mid").write_bytes((train_dir / seen).read_bytes())  # a training song: left out
    (eval_dir / "broken.mid").write_bytes(b"MThd not really")
    checkpoint = write_debug_checkpoint(root / "ckpt")
    out = root / "out" / "eval.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli_main(["eval", "--data", str(eval_dir), "--checkpoint", str(checkpoint), "--train-data",
                         str(train_dir), str(nes_dir), "--minutes", "0.5", "--seed", "3", "--json", str(out),
                         "--no-progress"])
    yield {"root": root, "train": train_dir, "nes": nes_dir, "eval": eval_dir, "checkpoint": checkpoint, "code": code,
           "stdout": stdout.getvalue(), "json": out, "seen": seen}
    cache.undo()


def test_cli_prints_the_table_and_writes_json(setup):
    assert setup["code"] == 0
    text = setup["stdout"]
    for label in ("VAE reconstruction accuracy", "LSTM NLL", "scale consistency", "consonance",
                  "pitch-class entropy", "empty-beat rate", "drums sounds", "4-bar spans repeated",
                  "2-bar spans copied", "goals met"):
        assert label in text
    assert "≥ 0.90" in text and ("pass" in text or "MISS" in text)
    result = json.loads(setup["json"].read_text())  # strict JSON: no NaN
    assert result["seed"] == 3
    assert {row["figure"] for row in result["goals"]} >= {
        "vae_accuracy", "lstm_nll", "scale_consistency", "consonance", "pitch_class_entropy", "empty_beat_rate",
        "voice_presence_lead", "voice_presence_drums", "repeated_4bar_spans", "copied_2bar_spans"}


def test_held_out_songs_and_skipped_files(setup):
    result = json.loads(setup["json"].read_text())
    data = result["data"]
    assert data["skipped"] == {"broken": 1}
    assert data["songs"] == 4 and data["songs_in_training"] == 1 and data["held_out_songs"] == 3
    assert result["training_data"]["songs"] >= 4 and result["training_data"]["matches_checkpoint"] is False


def test_model_figures_beside_baselines(setup):
    result = json.loads(setup["json"].read_text())
    vae, lstm = result["vae"], result["lstm"]
    assert 0.0 <= vae["accuracy"] <= 1.0 and vae["bars"] == result["data"]["held_out_bars"] > 0
    assert set(vae["baselines"]) == {"step_bigram", "position_mode", "copy_previous_bar"}
    assert vae["baseline"]["accuracy"] == max(vae["baselines"].values())
    assert all(0.0 <= v <= 1.0 for v in vae["baselines"].values())
    assert lstm["nll"] == pytest.approx(lstm["chord_nll"] + lstm["latent_nll"])
    assert lstm["baseline"]["nll"] == pytest.approx(lstm["baseline"]["chord_nll"] + lstm["baseline"]["latent_nll"])
    # Random debug weights know nothing: the Markov chain fitted on the songs does better.
    assert lstm["chord_nll"] > lstm["baseline"]["chord_nll"]
    row = next(r for r in result["goals"] if r["figure"] == "lstm_nll")
    assert row["pass"] == (lstm["nll"] < lstm["baseline"]["nll"])
    assert row["reference"] == pytest.approx(lstm["baseline"]["nll"])


def test_music_figures(setup):
    result = json.loads(setup["json"].read_text())
    generated, real, random = result["generated"], result["held_out_real"], result["random_notes"]
    assert generated["tracks"] >= 1 and generated["minutes"] >= 0.5
    assert random["bars"] == generated["bars"]
    for stats in (generated, real, random):
        assert 0.0 <= stats["scale_consistency"] <= 1.0 and 0.0 <= stats["pitch_class_entropy"] <= math.log2(12)
    assert real["scale_consistency"] == 1.0  # the fixture songs are all in C major
    assert random["empty_beat_rate"] == 0.0 and real["empty_beat_rate"] == 0.0
    assert generated["repeats_across_tracks"]["span_bars"] == 4
    assert generated["copied_from_training"]["span_bars"] == 2
    assert generated["model_ms_per_bar"] > 0
    row = next(r for r in result["goals"] if r["figure"] == "pitch_class_entropy")
    assert row["pass"] == (2.4 <= generated["pitch_class_entropy"] <= 3.1)


def test_music_per_style_beside_noise_latents_rules_random_and_real(setup):
    result = json.loads(setup["json"].read_text())
    music = result["music"]
    assert music["minutes_per_style"] == 0.5 and set(music["styles"]) == {"lofi", "nes", "blend"}
    references = {name: style["reference"]["songs"] for name, style in music["styles"].items()}
    assert references["lofi"] >= 1 and references["nes"] >= 2  # held out by song; by game (2 songs each)
    assert references["blend"] == references["lofi"] + references["nes"]
    for name, style in music["styles"].items():
        assert set(style["sets"]) == set(SOURCES)
        assert style["sets"]["model"]["minutes"] >= 0.5 and style["sets"]["noise_latents"]["minutes"] >= 0.5
        for measured in style["sets"].values():
            overlap = measured["overlap"]
            assert set(overlap["features"]) == set(FEATURES)
            assert 0.0 <= overlap["mean_distance"] <= 1.0 and 0.0 <= overlap["mean_value"] <= 1.0
            assert measured["figures"]["pieces"] >= 1
        # Every set also beside the style's training songs (the larger real sample); not those songs themselves.
        # The blend also beside each of its reference styles' held-out songs alone.
        apart = ("training", "lofi", "nes") if name == "blend" else ("training",)
        for source, measured in style["sets"].items():
            for part in ("training", "lofi", "nes"):
                against = [measured["overlap"].get(f"mean_{kind}_vs_{part}") for kind in ("distance", "value")]
                if source == "real_train" or part not in apart:
                    assert against == [None, None], (name, source, part)
                else:
                    assert all(0.0 <= value <= 1.0 for value in against), (name, source, part, against)
        assert style["sets"]["random"]["figures"]["bass_root_on_first_onset"] is None  # random notes: no chords
        # The fixture songs play a root bass under their chords; the rules start every bar on the root.
        assert style["sets"]["rules"]["figures"]["bass_root_on_first_onset"] == 1.0
        rows = [r for r in music["goals"] if r["style"] == name]
        blend_only = {f"mean_{kind}_vs_{part}" for kind in ("distance", "value") for part in ("lofi", "nes")}
        assert [r["figure"] for r in rows] == [key for key, _, _ in ROWS if name == "blend" or key not in blend_only]
    nes_rows = {r["figure"]: r for r in music["goals"] if r["style"] == "nes"}
    assert nes_rows["lead_mean_pitch"]["goal"] == "≥ 69"
    assert nes_rows["lead_mean_pitch"]["pass"] == (nes_rows["lead_mean_pitch"]["values"]["model"] >= 69)
    assert nes_rows["mean_value"]["goal"] == "≥ noise-z + 0.10; ≥ 0.75"
    text = setup["stdout"]
    for label in ("lo-fi (style_blend 0.0)", "NES (style_blend 1.0)", "blend (style_blend 0.3", "noise-z",
                  "mean distance-overlap", "mean value-overlap", "mean value-overlap (vs training songs)",
                  "mean value-overlap (vs held-out lo-fi loops alone)",
                  "mean value-overlap (vs held-out NES games alone)",
                  "lead repeated-note share", "drum-bar variety",
                  "self-similarity at 16 bars", "pairs of bars behind it", "music:", "eval took"):
        assert label in text
    # Each self-similarity figure beside the count of bar pairs it rests on, for every column.
    pairs = nes_rows["self_similarity_pairs_4"]["values"]
    assert all(isinstance(count, int) and count >= 0 for count in pairs.values()), pairs
    assert pairs["model"] > 0 and nes_rows["self_similarity_pairs_4"]["pass"] is None  # a count, no goal


def test_a_set_is_measured_against_each_part_of_its_reference_alone():
    rng = np.random.default_rng(5)
    pieces, part_a, part_b = ([mf.random_piece(8, rng) for _ in range(n)] for n in (4, 3, 5))
    whole = mf.feature_set(part_a + part_b)
    apart = {"a": mf.feature_set(part_a), "b": mf.feature_set(part_b)}
    overlap = measure_set(pieces, whole, 2, apart=apart)["overlap"]
    features = mf.feature_set(pieces)
    assert overlap["mean_value"] == set_overlaps(features, whole, 2)["mean_value"]
    for name, part in apart.items():
        alone = set_overlaps(features, part, 2)
        assert (overlap[f"mean_distance_vs_{name}"], overlap[f"mean_value_vs_{name}"]) == (
            alone["mean_distance"], alone["mean_value"])
    assert overlap["mean_value_vs_a"] != overlap["mean_value_vs_b"]


def test_music_evaluation_is_deterministic_for_a_seed(setup, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(setup["root"] / "cache"))
    corpus = concatenate([load_folder(folder, progress=False) for folder in (setup["train"], setup["nes"])])
    training, validation = split_corpus(corpus)
    nes = next(s for s in STYLE_SETTINGS if s.name == "nes")
    again, _ = evaluate_style(nes, setup["checkpoint"], training, validation, 0.5, 3, progress=False)
    first = json.loads(setup["json"].read_text())["music"]["styles"]["nes"]  # the CLI's run, seed 3
    assert json.loads(json.dumps(to_json(again))) == first
    sets = first["sets"]
    assert sets["model"]["figures"] != sets["model_next_seed"]["figures"]  # another seed, other music


def test_folder_without_usable_midi_is_a_one_line_data_error(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "broken.mid").write_bytes(b"garbage")
    (empty / "notes.txt").write_text("not MIDI")
    with pytest.raises(DataError, match="nothing-here") as error:
        evaluate(setup["checkpoint"], [setup["eval"], empty], 0.5, 0, train_dirs=[setup["train"]], progress=False)
    assert "\n" not in str(error.value) and "1 broken" in str(error.value)
    with pytest.raises(DataError, match="not found"):
        evaluate(setup["checkpoint"], [tmp_path / "missing"], 0.5, 0, progress=False)


def test_nothing_held_out_and_missing_checkpoint_are_errors(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    only_seen = tmp_path / "seen"
    only_seen.mkdir()
    (only_seen / "again.mid").write_bytes((setup["train"] / setup["seen"]).read_bytes())
    with pytest.raises(DataError, match="nothing is held out"):
        evaluate(setup["checkpoint"], [only_seen], 0.5, 0, train_dirs=[setup["train"]], progress=False)
    with pytest.raises(CheckpointError):
        evaluate(tmp_path / "no-checkpoint", [setup["eval"]], 0.5, 0, progress=False)
    assert cli_main(["eval", "--data", str(setup["eval"]), "--checkpoint", str(tmp_path / "no-checkpoint")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli_main(["eval", "--data", str(setup["eval"]), "--minutes", "0"])


def test_without_training_data_the_baselines_are_left_out(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = evaluate(setup["checkpoint"], [setup["eval"]], 0.2, 1, train_dirs=[tmp_path / "gone"], progress=False)
    assert result["training_data"] is None and result["vae"]["baselines"] is None
    assert result["music"] is None and "style_blend" not in format_table(result)  # nothing real to compare with
    with pytest.raises(DataError, match="--data"):  # and without --data, nothing to evaluate on
        evaluate(setup["checkpoint"], (), 0.2, 1, train_dirs=[tmp_path / "gone"], progress=False)
    assert result["data"]["held_out_songs"] == 4  # nothing known to leave out
    assert result["generated"]["copied_from_training"] is None
    rows = {r["figure"]: r for r in result["goals"]}
    assert rows["lstm_nll"]["pass"] is None and rows["copied_2bar_spans"]["pass"] is None
    table = format_table(result)
    assert "n/a" in table
    json.dumps(to_json(result), allow_nan=False)


def test_held_out_part_compares_whole_songs():
    corpus = synthetic_corpus(n_songs=4, bars_per_song=4)
    training = corpus.subset([0, 2])
    held, seen = held_out_part(corpus, training)
    assert seen == 2 and [s.name for s in held.songs] == [corpus.songs[1].name, corpus.songs[3].name]
    assert held_out_part(corpus, None) == (corpus, 0)
