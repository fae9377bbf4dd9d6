"""Typed /status snapshots for tests of what reads them (the status server, /metrics, the stats line)."""

from __future__ import annotations

import dataclasses
from typing import Any

from streamer.sinks import SinkSnapshot
from streamer.status_snapshot import (
    BufferStatus,
    CheckpointStatus,
    ClockStatus,
    ComposerStatus,
    NowPlaying,
    PositionStatus,
    ScheduleStatus,
    StatusCounters,
    StatusSnapshot,
)


def example_snapshot(**fields: Any) -> StatusSnapshot:
    """A running daemon's snapshot with every section filled in; `fields` replace top-level ones."""
    snapshot = StatusSnapshot(
        uptime_seconds=3.0, state="running", sample_rate=44100,
        now_playing=NowPlaying("s0-t0001", "A Title", 3, "A", "C major", "Cmaj7", 80.0, "ck-1", False),
        buffer=BufferStatus(31.0, 30.0, 10),
        clock=ClockStatus(12.5, 1.0, True, 0.0, 0),
        checkpoint=CheckpointStatus("ck-1", "", "2026-01-01T00:00:00Z", 2, 1, "", "", False, "bar", False, 0.0),
        position=PositionStatus(7, 2, 1, True),
        composer=ComposerStatus(0.0),
        sinks=[SinkSnapshot("ffmpeg", "ffmpeg", "running", True, True, restarts=4, bytes_written=1000,
                            frames_dropped=7)],
        archive=None, schedule=ScheduleStatus("UTC", None, None, None, None, {}, {}, {}, None, None, 0.0), video=None,
        counters=StatusCounters(underruns=5, fallback_bars=6, composer_errors=1, nonfinite_samples=9, bars_played=11,
                                bars_composed=20, archive_errors=2, bars_dropped_on_swap=9))
    return dataclasses.replace(snapshot, **fields)
