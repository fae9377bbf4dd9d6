"""Faults of the disk and of the files around the daemon: checkpoint cards that are not files,
a full disk under the outputs, state files and directories that vanish, restarts over earlier
recordings. The real `chiplofi stream` runs as its own process (tests/integration/test_faults.py
has the harness), its outputs on a small tmpfs this test mounts (the tests run as root) and
fills up for real; figures go to docs/RELIABILITY.md like the other fault scenarios.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from test_faults import BUFFER_SECONDS, SHORT_BUFFER, install, report, stream_process
from test_stream_rtmp import write_checkpoint

pytestmark = pytest.mark.integration


# ----------------------------------------------------------------------------- checkpoint cards


def fifo_card(directory: Path) -> str:
    """vae.json a named pipe: opening it to read waits for a writer that never comes."""
    (directory / "vae.json").unlink()
    os.mkfifo(directory / "vae.json")
    return "not a regular file"


def endless_card(directory: Path) -> str:
    """vae.json /dev/zero (through a symlink): reading it never ends."""
    (directory / "vae.json").unlink()
    (directory / "vae.json").symlink_to("/dev/zero")
    return "not a regular file"


def huge_card(directory: Path) -> str:
    """vae.json a 2 GB regular file (sparse: it takes no disk)."""
    with open(directory / "vae.json", "r+b") as card:
        card.truncate(2 << 30)
    return "more than the"


def test_checkpoint_cards_that_are_not_small_files_are_refused_and_later_reloads_apply(tmp_path):
    good = tmp_path / "good"
    good_id = write_checkpoint(good, seed=0)
    second = tmp_path / "second"
    second_id = write_checkpoint(second, seed=1)
    live = tmp_path / "checkpoint"
    shutil.copytree(good, live)
    rejected = []
    with stream_process(tmp_path, ["--checkpoint", str(live), "--output", "null"], SHORT_BUFFER) as daemon:
        daemon.until(lambda s: s["checkpoint"]["id"] == good_id, 60)
        for count, spoil in enumerate((fifo_card, endless_card, huge_card), start=1):
            install(good, live)
            expected = spoil(live)
            daemon.proc.send_signal(signal.SIGHUP)
            after = daemon.until(lambda s: s["checkpoint"]["reload_failures"] == count
                                 and not s["checkpoint"]["reloading"], 30)
            error = after["checkpoint"]["last_reload_error"]
            rejected.append({"card": spoil.__name__, "error": error, "id_after": after["checkpoint"]["id"]})
            assert "vae.json" in error and expected in error and after["checkpoint"]["id"] == good_id, error
            (live / "vae.json").unlink()
        install(second, live)
        daemon.proc.send_signal(signal.SIGHUP)
        swapped = daemon.until(lambda s: s["checkpoint"]["id"] == second_id, 30)
        assert daemon.alive() and daemon.stop() == 0
    report("checkpoint_cards", rejected=rejected, reload_failures=swapped["checkpoint"]["reload_failures"],
           reloads_ok=swapped["checkpoint"]["reloads"], underruns=swapped["counters"]["underruns"],
           buffer_seconds=BUFFER_SECONDS)
    assert swapped["checkpoint"]["reloads"] == 1 and swapped["counters"]["underruns"] == 0
