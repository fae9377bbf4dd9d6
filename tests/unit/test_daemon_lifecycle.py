"""The daemon's wiring and lifecycle with every boundary a test double (testkit.doubles): a
renderer without FluidSynth, effects that change nothing, a clock in virtual time, recording sinks.
What is tested is the daemon's own work — start, swap, stop, count — not the sound."""

import json
import threading
from itertools import pairwise

from streamer.composer import RuleBasedComposer
from streamer.daemon import Daemon
from streamer.position import POSITION_FILE
from streamer.stream_config import CliOverrides, load_stream_config
from testkit.daemon import run_to_end as run, unpaced_config, until
from testkit.doubles import RecordingNotifier, RecordingSink, VirtualClock, fake_pipeline


def rule_based(setting, seed):
    return RuleBasedComposer(seed)


def contiguous(sink: RecordingSink) -> bool:
    starts = [block.start_frame for block in sink.blocks]
    return starts[0] == 0 and all(b - a == 1024 for a, b in pairwise(starts))


def test_a_paced_run_in_virtual_time_plays_its_duration_in_order_and_stops(tmp_path):
    sink, notifier, renderers = RecordingSink(), RecordingNotifier(), []
    config = unpaced_config(tmp_path, speed=1.0, fast_start=False)
    daemon = Daemon(config, environ={}, duration=120.0, sinks=[sink], notifier=notifier, composer_loader=rule_based,
                    clock_factory=VirtualClock, **fake_pipeline(renderers))
    assert run(daemon) == 0
    assert isinstance(daemon.clock, VirtualClock) and daemon.clock.paced
    assert abs(sink.frames - 120.0 * 44100) <= 1024 and contiguous(sink)
    assert daemon.clock.now >= 119.0  # paced: two minutes of (virtual) time went by
    status = daemon.status()
    assert status["state"] == "stopping" and status["clock"]["lag_seconds"] == 0.0
    assert status["counters"]["underruns"] == 0 and status["counters"]["bars_played"] > 30
    assert [m for _, m in notifier.messages if not m.startswith(("STATUS=", "WATCHDOG="))] == ["READY=1", "STOPPING=1"]
    assert len(renderers) == 1 and renderers[0].closed  # closed on the way out
    assert daemon.stop_reason == "120 s of audio played"


def test_a_bar_the_renderer_cannot_render_is_replaced_by_a_bar_of_the_bed(tmp_path):
    sink, renderers = RecordingSink(), []
    daemon = Daemon(unpaced_config(tmp_path, fast_start=False), environ={}, duration=30.0, sinks=[sink],
                    composer_loader=rule_based, **fake_pipeline(renderers, fail_on={2}))
    assert run(daemon) == 0
    counters = daemon.status()["counters"]
    assert counters["render_errors"] >= 1 and counters["fallback_bars"] == counters["render_errors"]
    assert counters["underruns"] == 0 and contiguous(sink)
    rendered = renderers[0].bars
    assert all(bar.bar_index != 2 for bar in rendered if bar.track_id != "fallback")
    assert any(bar.track_id == "fallback" for bar in rendered)


def test_the_position_is_kept_and_a_restart_continues_the_track_numbers(tmp_path):
    numbers = []
    for _ in range(2):
        renderers = []
        daemon = Daemon(unpaced_config(tmp_path, fast_start=False), environ={}, duration=20.0,
                        sinks=[RecordingSink()], composer_loader=rule_based, **fake_pipeline(renderers))
        assert run(daemon) == 0
        tracks = [bar.track_number for bar in renderers[0].bars if bar.track_number >= 0]
        numbers.append((tracks[0], json.loads((tmp_path / POSITION_FILE).read_text())["next_track"]))
    (first_track, kept), (second_track, _) = numbers
    assert first_track == 0 and kept >= 1 and second_track == kept  # the restart begins the next track


def test_a_render_reload_swaps_in_a_validated_renderer_and_closes_the_old_one(tmp_path):
    path = tmp_path / "stream.toml"
    base = (f'[stream]\nspeed = 0\nbuffer_seconds = 8.0\nready_seconds = 0\nfast_start = false\n'
            f'state_dir = "{tmp_path}"\n[status]\nenabled = false\n')
    path.write_text(base)
    sink, renderers = RecordingSink(), []
    daemon = Daemon(load_stream_config(path, CliOverrides(), {}), config_path=path, environ={}, duration=600.0,
                    sinks=[sink], composer_loader=rule_based, **fake_pipeline(renderers))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert until(lambda: len(sink.blocks) > 20)
        path.write_text(base + "[render]\ngain = 0.4\n")
        daemon.reloader.start()
        assert until(lambda: daemon.config.render.gain == 0.4)
        old, new = renderers
        assert daemon.audio.renderer is new and old.closed and not new.closed
        assert len(new.bars) > 1  # a bar to prove it before it was trusted, then the stream's
        effects = daemon.audio.effects
        path.write_text(base + "[render]\ngain = 0.4\n[sinks]\nqueue_seconds = 3\n")
        daemon.reloader.start()  # [sinks] waits for a restart: nothing is swapped
        assert until(lambda: not daemon.reloader.running)
        assert daemon.audio.renderer is new and daemon.audio.effects is effects and len(renderers) == 2
        assert daemon.status()["checkpoint"]["reloads"] == 2 and daemon.status()["checkpoint"]["reload_failures"] == 0
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    assert not thread.is_alive() and contiguous(sink)


# /status as operators, `chiplofi status`, the status page and monitoring read it: every key path
# ("sinks.[]." for each sink's entry). A key renamed or dropped is a change for all of them.
STATUS_KEYS = {
    'archive', 'archive.bytes_written', 'archive.deleted', 'archive.directory', 'archive.dropped',
    'archive.enabled', 'archive.errors', 'archive.last_error', 'archive.queued', 'archive.written',
    'buffer', 'buffer.ahead_seconds', 'buffer.bars', 'buffer.target_seconds',
    'checkpoint', 'checkpoint.error', 'checkpoint.id', 'checkpoint.last_reload_error',
    'checkpoint.last_swap_wait_seconds', 'checkpoint.loaded_at', 'checkpoint.reload_failures',
    'checkpoint.reloading', 'checkpoint.reloads', 'checkpoint.setting', 'checkpoint.swap_at',
    'checkpoint.swap_pending',
    'clock', 'clock.advancing', 'clock.lag_seconds', 'clock.position_seconds', 'clock.resyncs', 'clock.speed',
    'composer', 'composer.busy_seconds',
    'counters', 'counters.archive_errors', 'counters.bars_composed', 'counters.bars_dropped_on_swap',
    'counters.bars_played', 'counters.composer_errors', 'counters.fallback_bars',
    'counters.nonfinite_samples', 'counters.pcm_underruns', 'counters.render_errors', 'counters.swaps',
    'counters.tracks_started', 'counters.underruns',
    'now_playing', 'now_playing.bar', 'now_playing.chord', 'now_playing.composer_id', 'now_playing.fallback',
    'now_playing.key', 'now_playing.section', 'now_playing.tempo_bpm', 'now_playing.title',
    'now_playing.track_id',
    'position', 'position.kept', 'position.next_track', 'position.seed', 'position.starts',
    'sample_rate',
    'schedule', 'schedule.composer', 'schedule.effects', 'schedule.effects_applied', 'schedule.mood',
    'schedule.next', 'schedule.next_reload', 'schedule.program', 'schedule.since',
    'schedule.stats_interval_seconds', 'schedule.timezone', 'schedule.until',
    'sinks', 'sinks.[].bytes_written', 'sinks.[].connected', 'sinks.[].detail', 'sinks.[].frames_dropped',
    'sinks.[].frames_written', 'sinks.[].healthy', 'sinks.[].kind', 'sinks.[].last_error', 'sinks.[].name',
    'sinks.[].network', 'sinks.[].queued_seconds', 'sinks.[].restarts', 'sinks.[].state',
    'state',
    'uptime_seconds',
    'video', 'video.enabled',
}


def key_paths(value: object, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        paths = set()
        for key, inner in value.items():
            paths |= {f"{prefix}{key}"} | key_paths(inner, f"{prefix}{key}.")
        return paths
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return set().union(*(key_paths(item, f"{prefix}[].") for item in value))
    return set()


def test_status_keeps_every_key_operators_read(tmp_path):
    sink, renderers = RecordingSink(), []
    daemon = Daemon(unpaced_config(tmp_path, fast_start=False), environ={}, duration=20.0, sinks=[sink],
                    composer_loader=rule_based, **fake_pipeline(renderers))
    assert run(daemon) == 0
    status = daemon.status()
    assert key_paths(status) == STATUS_KEYS
    assert json.loads(json.dumps(status)) == status  # plain JSON: nothing a client cannot read
