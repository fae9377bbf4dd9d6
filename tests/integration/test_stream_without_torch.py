"""`chiplofi stream` with the shipped models, run whole with real FluidSynth: torch is never
imported (it would be most of the stream's memory); the models run in numpy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.checkpoint import read_info, shipped_directory
from testkit.waiting import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# `chiplofi stream ...` in-process, then report whether torch was ever imported.
RUN_AND_REPORT = ("import sys\n"
                  "from streamer.cli import main\n"
                  "code = main(sys.argv[1:])\n"
                  "print('torch imported:', 'torch' in sys.modules)\n"
                  "sys.exit(code)\n")


def test_stream_with_the_shipped_models_never_imports_torch(tmp_path):
    shipped = shipped_directory()
    model_id = f"{read_info(shipped, 'vae').model_id}+{read_info(shipped, 'lstm').model_id}"
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, "stream", "--speed", "0", "--duration", "20", "--output", "null",
         "--status-addr", f"127.0.0.1:{free_port()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 0, result.stderr
    assert f"composer: {model_id}" in result.stderr  # the default checkpoint: the shipped models played
    assert "torch imported: False" in result.stdout
