"""The end-of-training summary: figures beside baselines, warnings, where the checkpoints are, next steps."""

from __future__ import annotations

from pathlib import Path

from models.train import TrainResult
from models.train_summary import summary_text, summary_warnings


def _result(tmp_path: Path, accuracy: float, chord_nll: float, before: dict[str, float] | None = None,
            songs: tuple[int, int] = (36, 4)) -> TrainResult:
    return TrainResult(tmp_path / "run", {"val_accuracy": accuracy}, {"val_chord_nll": chord_nll,
                                                                     "val_chord_bigram_nll": 1.5},
                       seconds=300.0, vae_baselines={"step_bigram": 0.70, "copy_previous_bar": 0.55},
                       before=before, init_from=tmp_path / "start" if before else None, songs=songs)


def test_good_models_no_warning_and_next_steps(tmp_path):
    text = summary_text(_result(tmp_path, 0.91, 1.2))
    out = (tmp_path / "run").resolve()
    assert "on 36 songs, figures on 4 held-out songs" in text
    assert "reconstruction accuracy 0.9100" in text and "step bigram: 0.7000" in text
    assert "chord NLL 1.200" in text and "chord bigram: 1.500" in text
    assert "WARNING" not in text
    assert f"checkpoints in {out}" in text
    assert f"chiplofi stream --checkpoint {out}" in text
    assert "sudo systemctl reload chiplofi" in text


def test_models_worse_than_their_baselines_are_named(tmp_path):
    result = _result(tmp_path, 0.3375, 1.9, songs=(36, 4))
    warnings = summary_warnings(result)
    assert len(warnings) == 2
    assert "0.3375" in warnings[0] and "step bigram" in warnings[0] and "0.7000" in warnings[0]
    assert "1.900" in warnings[1] and "1.500" in warnings[1]
    text = summary_text(result)
    assert text.count("WARNING: ") == 2
    assert "--init-from" in text  # 40 songs: the advice is to fine-tune
    assert "checkpoints in" in text  # saved anyway, and said where


def test_fine_tuning_shows_before_and_after_and_warns_when_it_made_things_worse(tmp_path):
    better = _result(tmp_path, 0.91, 1.2, before={"val_accuracy": 0.80, "val_chord_nll": 1.4})
    text = summary_text(better)
    assert f"fine-tuned from {tmp_path / 'start'}" in text
    assert "accuracy 0.8000 -> 0.9100" in text and "chord NLL 1.400 -> 1.200" in text
    assert "WARNING" not in text
    worse = _result(tmp_path, 0.75, 1.3, before={"val_accuracy": 0.80, "val_chord_nll": 1.25})
    warnings = summary_warnings(worse)
    assert len(warnings) == 2 and all("did not improve" in w for w in warnings)
    assert f"the models in {tmp_path / 'start'} do better" in summary_text(worse)


def test_missing_figures_print_as_not_available(tmp_path):
    result = TrainResult(tmp_path, {}, {}, seconds=1.0)
    text = summary_text(result)
    assert "accuracy n/a" in text and "chord NLL n/a" in text
