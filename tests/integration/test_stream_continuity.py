"""`chiplofi stream` restarted: the real command with the shipped models continues the radio
from its state directory, and `--seed` plays the same music every time without touching it."""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from test_stream_local import chiplofi
from testkit.waiting import free_port

pytestmark = pytest.mark.integration


def run(tmp_path: Path, name: str, *extra: str) -> tuple[str, np.ndarray]:
    """One unpaced 10 s run into `name`.wav: (its log, its audio)."""
    wav = tmp_path / f"{name}.wav"
    result = chiplofi("stream", "--speed", "0", "--duration", "10", "--output", str(wav), "--status-addr",
                      f"127.0.0.1:{free_port()}", *extra, env={"CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 0, result.stderr
    with wave.open(str(wav)) as handle:
        audio = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return result.stderr, audio


def first_track(log: str) -> str:
    return re.search(r"track (s\d+-t\d{4}):", log).group(1)


def test_restarts_continue_and_seed_runs_repeat(tmp_path):
    position = tmp_path / "state" / "position.json"
    log_1, audio_1 = run(tmp_path, "first")
    kept_1 = json.loads(position.read_text())
    log_2, audio_2 = run(tmp_path, "second")
    kept_2 = json.loads(position.read_text())
    seed = kept_1["seed"]
    assert kept_2["seed"] == seed and f"seed {seed}, track 1" in log_2
    assert (first_track(log_1), first_track(log_2)) == (f"s{seed}-t0000", f"s{seed}-t0001")
    assert (kept_1["next_track"], kept_2["next_track"], kept_2["starts"]) == (1, 2, 2)
    assert not np.array_equal(audio_1[:200_000], audio_2[:200_000])  # never the same music twice
    # A reproducible run: the same music every time, from track 0, and the radio's position kept.
    log_3, audio_3 = run(tmp_path, "seeded", "--seed", "5")
    log_4, audio_4 = run(tmp_path, "seeded again", "--seed", "5")
    assert first_track(log_3) == first_track(log_4) == "s5-t0000"
    assert np.array_equal(audio_3, audio_4)
    assert json.loads(position.read_text()) == kept_2
