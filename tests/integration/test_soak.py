"""Accelerated soak, CI size: one hour of audio through the whole pipeline (shipped composer →
ring buffer → FluidSynth → effects → ffmpeg with its video track → a Matroska file), unpaced.

The driver is bench/bench_soak.py (`make soak` runs it with 24 h). Over one hour the RSS
figure is noisier than over a day, so the warm-up here is the first quarter: growth is the RSS
in the last 5 % of the audio against the RSS in the 5 % after the 25 % mark.
"""

from __future__ import annotations

import pytest

from bench_soak import GOAL_DRIFT_SECONDS, GOAL_GROWTH, print_table, run_soak  # bench/: pytest's pythonpath

pytestmark = pytest.mark.integration


def test_one_hour_of_audio_keeps_memory_timestamps_and_buffer_steady(tmp_path):
    result = run_soak(1.0, tmp_path, warmup=0.25, log=lambda line: None)
    print_table(result)  # the figures, with pytest -s or -rP

    daemon_rss, drift, underruns = result["rss"]["daemon"], result["drift"], result["underruns"]
    assert result["settings"]["composer"].startswith("chiplofi-vae-"), result["settings"]  # the shipped model
    assert daemon_rss["growth"] < GOAL_GROWTH, daemon_rss
    # The file holds the whole hour, in both streams, without holes or reordering.
    assert drift["audio_end"] == pytest.approx(3600, abs=0.1), drift
    assert drift["video_end"] == pytest.approx(3600, abs=0.1), drift
    for stream in ("audio", "video"):
        assert drift[stream]["gaps"] == 0 and drift[stream]["non_monotonic"] == 0, drift
    assert drift["points"] >= 100, drift
    assert drift["max_seconds"] < GOAL_DRIFT_SECONDS, drift
    assert drift["end_seconds"] < GOAL_DRIFT_SECONDS, drift
    assert underruns == {**underruns, "underruns": 0, "pcm_underruns": 0, "logged": 0, "sink_frames_dropped": 0,
                         "ffmpeg_restarts": 0, "ffmpeg_processes": 1}, underruns
    assert result["samples"] > 50, result["samples"]  # RSS was really sampled through the run
