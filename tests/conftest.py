"""The layout of a parallel run.

`make test` runs the suite on several pytest-xdist workers (`--dist loadgroup`): most tests
wait on real time (a paced stream, a restart, a watchdog) rather than compute, so more workers
than cores finish sooner. Every test already has its own ports (testkit.waiting.free_port: each
worker its own block of them) and directories (tmp_path; each stream's state directory is under it,
by CHIPLOFI_STREAM__STATE_DIR or the config file's stream.state_dir), so tests can run side by
side. What this file adds:

- Tests that share an expensive session or module fixture run on one worker (`GROUPS`), and
  the longest tests start first (`FIRST`), so the run does not end waiting on one of them.
- Tests marked `alone` take a core away on purpose (a busy loop); `make test` leaves them out of
  the parallel run (`-m "not alone"`) and runs them afterwards by themselves.
"""

from __future__ import annotations

import pytest

# Files whose tests share a fixture that is expensive to build twice: each set runs on one worker.
GROUPS = {
    "tests/integration/test_install.py": "installed-root",  # a real virtual environment, installed once
    "tests/integration/test_systemd_units.py": "installed-root",
    "tests/integration/test_bad_input.py": "bad-input",
    "tests/integration/test_cli_render.py": "cli-render",
    "tests/integration/test_soak.py": "soak",
}

# The longest tests and groups, started first, longest first (by `pytest --durations`, 4 workers:
# the soak runs an hour of audio unpaced (260 s), systemd boots in a namespace (180 s), the video
# hour (120 s), the installer builds a virtual environment (80 s), the rest stream in real time
# for 30-100 s each). A file name covers all of its tests.
FIRST = [
    "tests/integration/test_soak.py",
    "tests/integration/test_systemd_namespace.py",
    "tests/integration/test_picture_stream.py::test_a_looped_video_background_keeps_to_the_audio_over_an_hour",
    "tests/integration/test_install.py",
    "tests/integration/test_off_air.py::test_an_ingest_frozen_mid_stream_is_cut_retried_and_gets_no_stale_backlog",
    "tests/integration/test_stream_rtmp.py::test_sixty_seconds_to_nginx_rtmp_with_reloads_and_a_clean_stop",
    "tests/integration/test_faults.py::test_receiver_down_for_5_s_then_30_s_the_daemon_reconnects_and_never_exits",
    "tests/integration/test_faults_disk.py",
    "tests/integration/test_faults.py::test_a_composer_that_raises_or_hangs_is_covered_by_the_fallback_bed",
    "tests/integration/test_off_air.py",
    "tests/integration/test_systemd_units.py",
    "tests/integration/test_faults.py",
    "tests/integration/test_stream_archive.py",
    "tests/integration/test_schedule_stream.py",
    "tests/integration/test_stream_rtmp.py",
]


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    name = item.nodeid.split("[")[0]  # a parametrized test: all of its cases
    for rank, entry in enumerate(FIRST):
        if entry in (name, path):
            return rank
    return len(FIRST)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids (its own hook)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = GROUPS.get(item.nodeid.split("::")[0])
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_rank)  # stable: the order within a rank is the collection order
