"""streamer.composer: the rule-based composer, the adapter over models.composer, checkpoints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.composer import (
    RULE_BASED,
    ModelComposer,
    RuleBasedComposer,
    check_bar,
    load_composer,
    uses_model,
)
from streamer.errors import CheckpointError
from streamer.fallback import FallbackBed, FallbackSource
from streamer.ringbuffer import BarEntry
from streamer.status_snapshot import Counters
from streamer.types import Bar

ROOT = Path(__file__).resolve().parents[2]


def test_rule_based_composer_changes_track_key_and_tempo():
    composer = load_composer(RULE_BASED, seed=3)
    assert isinstance(composer, RuleBasedComposer) and composer.id.startswith("rule-based-")
    bars = [check_bar(composer.next_bar()) for _ in range(3 * composer.track_bars)]
    tracks = [bar.track_id for bar in bars]
    assert len(set(tracks)) == 3 and tracks[0] == "r3-t0000"
    assert len({(bar.key, bar.tempo_bpm) for bar in bars}) >= 2
    assert load_composer(RULE_BASED, seed=3).id == composer.id  # the id names what is loaded
    assert load_composer(RULE_BASED, seed=4).id != composer.id


def test_fallback_bed_follows_the_key_and_tempo():
    bed = FallbackBed(seed=1)
    bed.follow(Bar((), 84.0, key="F# minor"))
    bar = bed.next_bar()
    assert bar.tempo_bpm == 84.0 and bar.key.startswith("Gb") and bar.track_id == "fallback"


def test_the_fallback_source_is_never_dry_when_a_bar_is_due():
    queued = [BarEntry(Bar((), 84.0, key="F# minor", track_id="s1-t0001"), "model")]
    waits = []

    def ring(timeout):  # the fallible source: one bar, then none in time
        waits.append(timeout)
        return queued.pop() if queued else None
    counters = Counters()
    source = FallbackSource(ring, FallbackBed(seed=1), counters)
    entry, from_bed = source.next(0.5, due=True)
    assert entry.composer_id == "model" and not from_bed and counters.underruns == 0
    source.played(entry.bar, from_bed)  # the bed follows what the composer played
    assert source.next(0.0, due=False) is None and counters.underruns == 0  # nothing due: no bed yet
    entry, from_bed = source.next(0.0, due=True)
    assert from_bed and entry.bar.track_id == "fallback" and entry.bar.tempo_bpm == 84.0
    assert entry.bar.key.startswith("Gb") and counters.underruns == 1
    source.played(entry.bar, from_bed)
    assert counters.fallback_bars == 1 and waits == [0.5, 0.0, 0.0]


def test_uses_model():
    assert not uses_model(RULE_BASED)
    assert uses_model("/some/checkpoint")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from models.debug import write_debug_checkpoint

    return write_debug_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=0)


def test_model_composer_bars(checkpoint):
    composer = load_composer(str(checkpoint), seed=2)
    assert isinstance(composer, ModelComposer)
    from models.checkpoint import read_info

    assert composer.id == f"{read_info(checkpoint, 'vae').model_id}+{read_info(checkpoint, 'lstm').model_id}"
    bars = [check_bar(composer.next_bar()) for _ in range(8)]
    assert [bar.bar_index for bar in bars] == list(range(8))
    assert all(bar.beats == 4.0 and 40 <= bar.tempo_bpm <= 200 and bar.key and bar.section for bar in bars)
    notes = [note for bar in bars for note in bar.notes]
    assert notes and all(0 <= note.start < 4.0 and note.duration > 0 for note in notes)
    assert {note.voice for note in notes} <= {"lead", "harmony", "bass", "drums"}


def test_bad_checkpoints_raise_checkpoint_error(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_composer(str(tmp_path / "missing"), seed=0)
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in checkpoint.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weights = broken / "lstm.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="lstm.safetensors"):
        load_composer(str(broken), seed=0)


def test_the_stream_composer_loads_without_torch_and_one_blas_thread():
    """Built as `chiplofi stream` builds it (the CLI module first, then the shipped checkpoint),
    in a fresh interpreter: torch is never imported and numpy's BLAS starts no worker thread."""
    from models.checkpoint import read_info, shipped_directory

    code = ("import os, sys\n"
            "import streamer.cli\n"
            "from streamer.composer import check_bar, load_composer\n"
            "composer = load_composer('', seed=5)\n"
            "bars = [check_bar(composer.next_bar()) for _ in range(8)]\n"
            "print(composer.id, 'torch' in sys.modules, len(os.listdir('/proc/self/task')), len(bars))\n")
    env = {name: value for name, value in os.environ.items() if not name.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    model_id, torch_imported, threads, bars = result.stdout.split()
    shipped = shipped_directory()
    assert model_id == f"{read_info(shipped, 'vae').model_id}+{read_info(shipped, 'lstm').model_id}"
    assert (torch_imported, threads, bars) == ("False", "1", "8")
