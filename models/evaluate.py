"""`chiplofi eval`: the models' held-out figures beside baselines, and their music beside real music.

    chiplofi eval [--data DIR ...] [--checkpoint DIR] [--minutes 60] [--seed 0] [--json eval.json]

`evaluate()` does, in order:
1. reads the models' training data: the folders of the checkpoint's `train_config.json` or
   else the shared defaults, split as training splits them (by song, by game for NES), and the
   evaluation folders (`--data`; default: the training folders, whose held-out part is then the
   validation split; broken files skipped and counted; a folder without a usable song is a
   `DataError`). Evaluation songs whose bars are identical to a training song's are left out:
   what remains is held out.
2. VAE: per-step reconstruction accuracy on the held-out bars, teacher-forced (the posterior
   mean decoded with the true previous tokens; known voices only), beside the reconstruction
   baselines of `models.baseline` fitted on the training songs.
3. LSTM: held-out NLL in nats per bar, next chord plus next latent (the VAE's posterior means),
   beside the chord and linear-Gaussian latent Markov chains of `models.baseline`.
4. Per style (lo-fi, NES, blend; `models.music_eval`): composes `minutes` of whole tracks with
   the model and with N(0, 1) latents instead of the LSTM's, makes as many bars of rule-based
   parts and of random notes, and measures them, the training split and the validation split
   of the style's real songs with `models.music_features`: distance and value overlap with the
   held-out songs (`models.overlap`) and the figures of issue 12, each beside its goal.
5. On the blend tracks (default controls, `seed`): the statistics of `models.metrics`, beside
   the held-out real songs of `--data` and random notes; 4-bar spans repeated across generated
   tracks and 2-bar spans copied from the training songs.
The result is a dict (written by `--json`); `format_table` prints it with the goals of the
project beside each figure, and pass or miss. Data are read through `models.data_cache`, so
only the first run parses the MIDI files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import baseline as base, metrics
from models.corpus import Corpus, concatenate
from models.data import default_folders, load_folder
from models.errors import DataError, ModelError
from models.split import split_corpus
from models.tokens import STEPS_PER_BAR, STEPS_PER_BEAT
from models.voices import VOICES

log = logging.getLogger(__name__)

# Per style and composer: 60 minutes is about 22 tracks. Figures that depend on each track's
# chords (chromatic share, resolutions, track-to-track cosine) move by up to 0.15 between seeds at
# 20 minutes (8 tracks); more tracks narrow that, and the music part still takes about a minute.
DEFAULT_MINUTES = 60.0
DEFAULT_VALIDATION_PERCENT = 10.0  # as models.config.TrainConfig, when the checkpoint does not say

# The project's goals: figure → (text, test). Real held-out music is shown beside them.
GOALS: dict[str, tuple[str, Any]] = {
    "vae_accuracy": ("≥ 0.90", lambda v, ref: v >= 0.90),
    "lstm_nll": ("< baseline", lambda v, ref: v < ref),
    "lstm_chord_nll": ("< baseline", lambda v, ref: v < ref),
    "lstm_latent_nll": ("< baseline", lambda v, ref: v < ref),
    "scale_consistency": ("≥ 0.90", lambda v, ref: v >= 0.90),
    "consonance": ("≥ 0.80", lambda v, ref: v >= 0.80),
    "pitch_class_entropy": ("2.4–3.1", lambda v, ref: 2.4 <= v <= 3.1),
    "empty_beat_rate": ("≤ 0.12", lambda v, ref: v <= 0.12),
    "voice_presence": ("≥ 0.85", lambda v, ref: v >= 0.85),
    "repeated_4bar_spans": ("0", lambda v, ref: v == 0),
    "copied_2bar_spans": ("0", lambda v, ref: v == 0),
}


# --------------------------------------------------------------------------- data

def _song_key(corpus: Corpus, index: int) -> str:
    return hashlib.sha1(np.ascontiguousarray(corpus.tokens[corpus.song_slice(index)]).tobytes()).hexdigest()


def load_evaluation_data(data_dirs: Sequence[str | Path], progress: bool = True) -> Corpus:
    """All songs of `data_dirs`; a folder without one usable song raises DataError naming it."""
    if not data_dirs:
        raise DataError("no evaluation data: give at least one MIDI folder (--data DIR)")
    corpora = []
    for folder in data_dirs:
        corpus = load_folder(folder, progress=progress)
        if corpus.n_songs == 0:
            skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(corpus.skipped.items())) or "no MIDI files"
            raise DataError(f"no usable MIDI in {folder} ({skipped})")
        corpora.append(corpus)
    return concatenate(corpora)


def _training_setup(checkpoint_dir: Path, train_dirs: Sequence[str | Path] | None) -> tuple[list[Path], float]:
    """(training folders, validation percent) of a checkpoint: explicit folders, else its
    train_config.json, else the shared defaults."""
    percent = DEFAULT_VALIDATION_PERCENT
    folders: list[Path] = [Path(f) for f in train_dirs] if train_dirs else []
    config_path = checkpoint_dir / "train_config.json"
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
            percent = float(config.get("train", {}).get("validation_percent", percent))
            if not folders:
                folders = [Path(f) for f in config.get("folders") or []]
        except (OSError, ValueError, TypeError, AttributeError) as error:
            log.warning("ignoring unreadable %s: %s", config_path, error)
    return folders or default_folders(), percent


def load_training_data(checkpoint_dir: Path, train_dirs: Sequence[str | Path] | None,
                       progress: bool = True) -> tuple[Corpus | None, Corpus | None, list[Path]]:
    """(whole training corpus, its training split, folders), or (None, None, folders) when a
    folder is missing (the baselines and the copy check are then left out)."""
    folders, percent = _training_setup(checkpoint_dir, train_dirs)
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        log.warning("training data not found (%s): no baselines, no copy check", ", ".join(missing))
        return None, None, folders
    corpus = concatenate([load_folder(f, progress=progress) for f in folders])
    if corpus.n_songs == 0:
        log.warning("no usable songs in the training data (%s)", ", ".join(map(str, folders)))
        return None, None, folders
    training, _ = split_corpus(corpus, percent)
    return corpus, training, folders


def held_out_part(corpus: Corpus, training: Corpus | None) -> tuple[Corpus, int]:
    """(the songs of `corpus` not among `training`'s songs (same bars), number left out)."""
    if training is None:
        return corpus, 0
    seen = {_song_key(training, i) for i in range(training.n_songs)}
    keep = [i for i in range(corpus.n_songs) if _song_key(corpus, i) not in seen]
    return corpus.subset(keep), corpus.n_songs - len(keep)


# --------------------------------------------------------------------------- models

def evaluate_models(vae: Any, lstm: Any, held_out: Corpus, training: Corpus | None) -> dict[str, Any]:
    """VAE reconstruction and LSTM NLL on `held_out`, each with baselines fitted on `training`."""
    from models.held_out import evaluate_lstm, evaluate_vae
    from models.tensors import bar_tensors, encode_means, song_sequences

    held_tensors = bar_tensors(held_out)
    vae_figures = evaluate_vae(vae, held_tensors)
    result: dict[str, Any] = {"vae": {
        "accuracy": vae_figures["accuracy"],
        "accuracy_per_voice": {v: vae_figures.get(f"accuracy_{v}", math.nan) for v in VOICES},
        "cross_entropy_per_bar": vae_figures.get("cross_entropy_per_bar"),
        "kl_per_bar": vae_figures.get("kl_per_bar"),
        "active_units": vae_figures.get("active_units"),
        "bars": int(len(held_tensors)),
        "definition": "share of correctly predicted tokens over all steps of the voices a song has, "
                      "decoding the posterior mean with the true previous tokens (teacher forcing)",
    }}
    held_seqs = song_sequences(held_tensors, encode_means(vae, held_tensors))
    lstm_figures = evaluate_lstm(lstm, None, held_seqs)
    result["lstm"] = {
        "chord_nll": lstm_figures["chord_nll"],
        "latent_nll": lstm_figures["latent_nll"],
        "nll": lstm_figures["chord_nll"] + lstm_figures["latent_nll"],
        "bars": int(lstm_figures["bars"]),
        "units": "nats per bar: -log p(chord) - log density(latent), the latent being the VAE's "
                 "posterior mean, given the song's previous bars",
    }
    if training is None:
        result["vae"]["baselines"] = None
        result["lstm"]["baseline"] = None
        return result

    held_arrays = base.bar_arrays(held_out)
    baselines = base.reconstruction_baselines(base.bar_arrays(training), held_arrays)
    best = max(baselines, key=lambda name: baselines[name])
    result["vae"]["baselines"] = baselines
    result["vae"]["baseline"] = {"name": best, "accuracy": baselines[best]}

    train_tensors = bar_tensors(training)
    train_seqs = song_sequences(train_tensors, encode_means(vae, train_tensors))

    def numpy_sequences(seqs: Any) -> base.Sequences:
        return base.sequences_from([z.numpy() for z in seqs.latents], [c.numpy() for c in seqs.chords],
                                   seqs.style.numpy(), seqs.mode.numpy())

    result["lstm"]["baseline"] = {
        **base.sequence_baselines(numpy_sequences(train_seqs), numpy_sequences(held_seqs)),
        "name": "chord Markov chain + linear-Gaussian latent Markov chain",
    }
    return result


# --------------------------------------------------------------------------- generated music

def music_figures(tracks: list[list[Any]], training: Corpus | None, held_out: Corpus, seed: int,
                  composer_seconds: float, model_seconds: float) -> dict[str, Any]:
    """Statistics of generated tracks, of the held-out real songs and of random notes; repeats
    across tracks; copies from the training songs."""
    generated = [metrics.track_from_bars([bar.notes for bar in track]) for track in tracks]
    generated_tokens = [metrics.tokens_from_track(track) for track in generated]
    real = metrics.corpus_tracks(held_out)
    rng = np.random.default_rng([seed, 0x5EED])
    random_tracks = [metrics.random_track(track.n_bars, rng) for track in generated]
    n_bars = sum(t.n_bars for t in generated)
    seconds = sum(len(track) * STEPS_PER_BAR / STEPS_PER_BEAT * 60.0 / track[0].tempo_bpm for track in tracks)
    result: dict[str, Any] = {
        "generated": {
            **metrics.summarize(generated),
            "minutes": seconds / 60.0,
            "repeats_across_tracks": metrics.cross_track_repeats(generated_tokens, span_bars=4),
            "compose_ms_per_bar": 1000.0 * composer_seconds / max(n_bars, 1),
            "model_ms_per_bar": 1000.0 * model_seconds / max(n_bars, 1),
        },
        "held_out_real": metrics.summarize(real),
        "random_notes": metrics.summarize(random_tracks),
    }
    if training is not None:
        index = metrics.SpanIndex(training, span_bars=2)
        result["generated"]["copied_from_training"] = index.copies(generated_tokens)
        result["held_out_real"]["copied_from_training"] = index.copies([held_out.tokens[held_out.song_slice(i)]
                                                                         for i in range(held_out.n_songs)])
    else:
        result["generated"]["copied_from_training"] = None
    return result


# --------------------------------------------------------------------------- all together

def evaluate(checkpoint_dir: str | Path | None = None, data_dirs: Sequence[str | Path] = (),
             minutes: float = DEFAULT_MINUTES, seed: int = 0, *, train_dirs: Sequence[str | Path] | None = None,
             progress: bool = True, threads: int = 1) -> dict[str, Any]:
    """All figures of `chiplofi eval` (see the module docstring) as a JSON-ready dict.

    `checkpoint_dir` None means the shipped checkpoints; `train_dirs` None means the folders the
    checkpoint was trained on (its train_config.json) or the shared defaults."""
    if not minutes > 0:
        raise ModelError(f"minutes must be positive, not {minutes}")
    import torch

    from models import checkpoint as ckpt
    from models.music_eval import STYLE_SETTINGS, Composed, compose, evaluate_music

    if threads > 0:
        torch.set_num_threads(threads)
    began = time.monotonic()
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else ckpt.shipped_directory()
    vae, lstm, infos = ckpt.load_models(directory)
    data = load_evaluation_data(data_dirs, progress) if data_dirs else None  # its errors before the long reads
    whole_training, training, train_folders = load_training_data(directory, train_dirs, progress)
    if data is None and whole_training is not None:
        data, data_dirs = whole_training, train_folders  # its held-out part: the validation split
    elif data is None:
        raise DataError("no evaluation data: the models' training folders are missing "
                        f"({', '.join(map(str, train_folders))}); give MIDI folders with --data DIR")
    held_out, seen = held_out_part(data, training)
    if held_out.n_songs == 0:
        raise DataError(f"every song in {', '.join(map(str, data_dirs))} is in the models' training data: "
                        "nothing is held out")

    result: dict[str, Any] = {
        "checkpoint": {"directory": str(directory), "vae": infos["vae"].model_id, "lstm": infos["lstm"].model_id,
                       "data_hash": infos["vae"].data_hash},
        "data": {"folders": [str(f) for f in data_dirs], "songs": data.n_songs, "skipped": data.skipped,
                 "songs_in_training": seen, "held_out_songs": held_out.n_songs, "held_out_bars": held_out.n_bars},
        "training_data": None if whole_training is None else {
            "folders": [str(f) for f in train_folders], "songs": training.n_songs, "bars": training.n_bars,
            "data_hash": whole_training.data_hash,
            "matches_checkpoint": whole_training.data_hash == infos["vae"].data_hash},
        "seed": seed,
        "minutes": minutes,
    }
    if whole_training is not None and whole_training.data_hash != infos["vae"].data_hash:
        log.warning("the training data found (hash %s) are not those of the checkpoint (hash %s): "
                    "baselines are fitted on what was found", whole_training.data_hash, infos["vae"].data_hash)
    result.update(evaluate_models(vae, lstm, held_out, training))

    # Per style, the model beside noise latents, rules, random notes and real music, against the
    # validation split of the training folders (split by song / game). Its blend tracks are the
    # "generated" music of the statistics below (default controls).
    blend: Composed
    if whole_training is not None and training is not None:
        validation, _ = held_out_part(whole_training, training)
        result["music"], tracks = evaluate_music(directory, training, validation, minutes, seed, progress)
        blend = tracks["blend"]
    else:
        log.warning("no training data: no per-style comparison with real music")
        result["music"] = None
        blend = compose(directory, STYLE_SETTINGS[-1].style_blend, "lstm", minutes, seed, progress)
    result.update(music_figures(blend.tracks, training, held_out, seed, blend.seconds, blend.model_seconds))
    result["goals"] = goal_rows(result)
    result["all_goals_met"] = all(row["pass"] for row in result["goals"] if row["pass"] is not None)
    music_rows = result["music"]["goals"] if result["music"] else []
    result["all_music_goals_met"] = all(row["pass"] for row in music_rows if row["pass"] is not None)
    result["seconds"] = time.monotonic() - began
    return result


# --------------------------------------------------------------------------- goals, table, JSON

def goal_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per judged figure: name, label, value, reference (baseline or real music),
    random notes, goal text, pass (None when it cannot be judged)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, goal: str, label: str, value: Any, reference: Any = None, reference_label: str = "",
            random: Any = None) -> None:
        text, test = GOALS[goal]
        unknown = value is None or (isinstance(value, float) and math.isnan(value))
        if "baseline" in text and reference is None:
            unknown = True  # nothing to compare with
        judged = None if unknown else bool(test(value, reference))
        rows.append({"figure": name, "label": label, "value": value, "reference": reference,
                     "reference_label": reference_label, "random": random, "goal": text, "pass": judged})

    vae, lstm = result["vae"], result["lstm"]
    vae_base = (vae.get("baseline") or {})
    add("vae_accuracy", "vae_accuracy", "VAE reconstruction accuracy, held-out", vae["accuracy"],
        vae_base.get("accuracy"), f"baseline ({vae_base['name'].replace('_', ' ')})" if vae_base else "")
    lstm_base = lstm.get("baseline") or {}
    for key, label in (("nll", "LSTM NLL, nats/bar (chord + latent)"), ("chord_nll", "  chord part"),
                       ("latent_nll", "  latent part")):
        add(f"lstm_{key}", f"lstm_{key}", label, lstm[key], lstm_base.get(key),
            "baseline (Markov)" if lstm_base else "")
    generated, real, random = result["generated"], result["held_out_real"], result["random_notes"]
    for key, label in (("scale_consistency", "scale consistency"), ("consonance", "consonance"),
                       ("pitch_class_entropy", "pitch-class entropy, bits"), ("empty_beat_rate", "empty-beat rate")):
        add(key, key, label, generated[key], real[key], "real held-out", random[key])
    for voice in VOICES:
        add(f"voice_presence_{voice}", "voice_presence", f"{voice} sounds, share of bars",
            generated["voice_presence"][voice], real["voice_presence"][voice], "real held-out",
            random["voice_presence"][voice])
    minutes = generated["minutes"]
    repeats = generated["repeats_across_tracks"]
    add("repeated_4bar_spans", "repeated_4bar_spans",
        f"4-bar spans repeated across tracks ({minutes:.0f} min, {repeats['spans']} spans)", repeats["repeated"])
    copies = generated.get("copied_from_training")
    real_copies = real.get("copied_from_training")
    add("copied_2bar_spans", "copied_2bar_spans",
        "2-bar spans copied from training data" + ("" if copies is None else f" ({copies['spans']} spans)"),
        None if copies is None else copies["copied"], None if real_copies is None else real_copies["copied"],
        "" if real_copies is None else f"real held-out ({real_copies['spans']} spans)")
    return rows


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.3f}"


def format_table(result: dict[str, Any]) -> str:
    """The result as a plain-text table, goals beside the figures, and a short header."""
    data, checkpoint = result["data"], result["checkpoint"]
    lines = [
        f"checkpoint {checkpoint['vae']} + {checkpoint['lstm']} ({checkpoint['directory']})",
        f"held-out: {data['held_out_songs']} songs, {data['held_out_bars']} bars of {', '.join(data['folders'])} "
        f"({data['songs_in_training']} songs left out as training data; skipped files: "
        f"{', '.join(f'{n} {r}' for r, n in sorted(data['skipped'].items())) or 'none'})",
        f"generated: {result['generated']['tracks']} tracks, {result['generated']['bars']} bars, "
        f"{result['generated']['minutes']:.1f} min, seed {result['seed']}",
        "",
    ]
    header = ("figure", "chiplofi", "reference", "", "random", "goal", "")
    table = [header]
    for row in result["goals"]:
        verdict = "n/a" if row["pass"] is None else ("pass" if row["pass"] else "MISS")
        table.append((row["label"], _number(row["value"]), _number(row["reference"]) if row["reference"] is not None
                      else "", row["reference_label"], _number(row["random"]) if row["random"] is not None else "",
                      row["goal"], verdict))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for number, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in (1, 2)] + \
                [row[3].ljust(widths[3])] + [row[i].rjust(widths[i]) for i in (4, 5)] + [row[6]]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("-" * len(lines[-1]))
    met = sum(1 for r in result["goals"] if r["pass"])
    judged = sum(1 for r in result["goals"] if r["pass"] is not None)
    lines.append("")
    lines.append(f"{met} of {judged} goals met")
    if result.get("music"):
        from models.music_eval import format_music_table

        lines.append(format_music_table(result["music"]))
    return "\n".join(lines)


def to_json(value: Any) -> Any:
    """`value` with NaN/inf as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --------------------------------------------------------------------------- command

EVAL_DESCRIPTION = """\
Judge the models on held-out music: the VAE's reconstruction accuracy (per step, teacher-forced)
and the LSTM's NLL (nats per bar), each beside a baseline fitted on the same training songs.
Then, per style (lo-fi, NES, blend), compose --minutes of music with the model and with N(0,1)
latents instead of the LSTM's, and measure them beside the rule-based parts, random notes and the
training split (the real-vs-real ceiling) against the held-out songs of that style: distribution
overlap per 4-bar segment (Yang & Lerch 2020: distance- and value-overlap of pitch count,
pitch-class histogram and transitions, pitch range, lead interval, inter-onset interval, note
length, notes per bar, drum onsets, rhythm entropy) and the figures of a listener (repeated lead
notes, distinct lead pitches, bass on the chord root, grooves and fills, track-to-track
similarity, non-diatonic chords, register order, density, self-similarity at 4/8/16 bars); the
mean overlaps also against the style's training songs, a larger sample than the few held out. The
held-out songs are the validation split of the training folders (by song, by game for NES);
songs of --data that were training data are left out. Prints tables with the project's goals;
--json writes every figure."""


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"minutes must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"minutes must be positive, got {value}")
    return value


def run_eval(args: argparse.Namespace) -> int:
    """Handler of `eval`: prints the table, writes --json."""
    import sys

    result = evaluate(args.checkpoint, args.data or (), args.minutes, args.seed, train_dirs=args.train_data,
                      progress=not args.no_progress, threads=args.threads)
    sys.stdout.write(format_table(result) + "\n")
    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_json(result), indent=2, sort_keys=True, allow_nan=False) + "\n")
        sys.stdout.write(f"wrote {path}\n")
    sys.stdout.write(f"eval took {result['seconds']:.0f} s\n")
    return 0


def add_eval_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `eval` on the CLI's subparsers (sets `func=run_eval`)."""
    parser = subparsers.add_parser("eval", help="judge the models: held-out figures, baselines, music statistics",
                                   description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="extend", nargs="+", default=None, metavar="DIR",
                        help="MIDI folder(s) for the VAE and LSTM held-out figures (repeat or list several; "
                             "default: the training folders, whose held-out part is the validation split)")
    parser.add_argument("--checkpoint", metavar="DIR", default=None,
                        help="checkpoint directory (default: the shipped models/checkpoints)")
    parser.add_argument("--minutes", type=_positive_minutes, default=DEFAULT_MINUTES,
                        help="minutes of music per style and composer (model, next seed, noise latents) "
                             "(default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composed music (default %(default)s)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--train-data", action="extend", nargs="+", metavar="DIR", default=None,
                        help="the models' training folders, for the baselines and the copy check "
                             "(default: the checkpoint's train_config.json, else "
                             "../shared/data/{lofi,nes,lakh-lofi,pop909,vgmidi})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_eval)
    return parser
