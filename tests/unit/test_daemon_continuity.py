"""A radio, not a program restarting: restarts continue the music, reloads touch only what
changed, model swaps land on musical boundaries (real FluidSynth and effects, tiny models)."""

import json
import threading
from itertools import pairwise

import pytest

from models.theory import parse_key
from streamer.composer import Bridge, RuleBasedComposer, load_composer, starts_unit
from streamer.daemon import Daemon
from streamer.position import POSITION_FILE, read_position
from streamer.stream_config import CliOverrides, load_stream_config
from testkit.daemon import run_to_end as _run, unpaced_config as _config, until as _until
from testkit.doubles import RecordingSink

RELATED_STEPS = {0, 2, 3, 5, 7, 9, 10}  # semitones between related keys (fifths, tones, relative)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from models.debug import write_debug_checkpoint

    return [write_debug_checkpoint(tmp_path_factory.mktemp(f"ckpt{seed}"), seed=seed) for seed in (0, 1)]


def played_bars(daemon: Daemon) -> list:
    """Every entry the audio thread renders, in order (observed, the daemon's own method runs)."""
    entries = []
    produce = daemon.audio._produce

    def observe(entry, fallback):
        entries.append((entry, fallback))
        produce(entry, fallback)
    daemon.audio._produce = observe
    return entries


def related(key_a: str, key_b: str) -> bool:
    return (parse_key(key_b)[0] - parse_key(key_a)[0]) % 12 in RELATED_STEPS


def test_restarts_continue_the_radio_with_new_tracks(tmp_path, checkpoints):
    runs = []
    for _ in range(3):
        daemon = Daemon(_config(tmp_path, checkpoint=str(checkpoints[0])), environ={}, duration=12.0,
                        sinks=[RecordingSink()])
        entries = played_bars(daemon)
        assert _run(daemon) == 0
        runs.append((daemon.seed, [entry.bar for entry, fallback in entries if not fallback],
                     read_position(tmp_path / POSITION_FILE)))
    seeds = {seed for seed, _, _ in runs}
    assert len(seeds) == 1  # picked at random on the first start, then kept
    seed = seeds.pop()
    firsts = [bars[0] for _, bars, _ in runs]
    assert [bar.track_id for bar in firsts] == [f"s{seed}-t{n:04d}" for n in range(3)]
    assert all(bar.bar_index == 0 for bar in firsts)
    assert len({bar.notes for bar in firsts}) == 3  # never the same music again
    for before, after in pairwise(firsts):
        assert related(before.key, after.key)
    kept = runs[-1][2]
    assert (kept.seed, kept.next_track, kept.key, kept.starts) == (seed, 3, firsts[2].key, 3)


def test_a_fresh_install_picks_a_seed_and_a_configured_one_is_kept(tmp_path):
    fresh = [Daemon(_config(tmp_path / f"fresh{n}"), environ={}) for n in range(2)]
    assert fresh[0].seed != fresh[1].seed  # two installs, two radios (kept: see the restart test)
    configured = Daemon(_config(tmp_path / "set", seed=1234), environ={})
    assert configured.seed == 1234


def test_seed_flag_is_reproducible_and_leaves_the_kept_position_alone(tmp_path):
    runs = []
    for _ in range(2):
        daemon = Daemon(_config(tmp_path), overrides=CliOverrides(seed=9), environ={}, duration=6.0,
                        sinks=[RecordingSink()], composer_loader=lambda setting, seed: RuleBasedComposer(seed))
        entries = played_bars(daemon)
        assert _run(daemon) == 0
        runs.append([entry.bar for entry, _ in entries])
    assert runs[0][0].track_id == "r9-t0000" and runs[0][:8] == runs[1][:8]
    assert not (tmp_path / POSITION_FILE).exists()


def test_the_opening_bridge_varies_follows_the_last_key_and_is_not_a_track(tmp_path):
    bridges = []
    for _ in range(2):
        loaded = threading.Event()

        def slow_loader(setting, seed, loaded=loaded):  # this run's event, whenever the daemon calls it
            loaded.wait(10)
            return RuleBasedComposer(seed)
        sink = RecordingSink()
        daemon = Daemon(_config(tmp_path, speed=20.0, checkpoint="a-model"), environ={}, sinks=[sink],
                        composer_loader=slow_loader)
        entries = played_bars(daemon)
        thread = threading.Thread(target=daemon.run)
        thread.start()
        try:
            assert _until(lambda: len(entries) >= 2, 10)
            loaded.set()
            assert _until(lambda: any(e.bar.track_id.startswith("r") and e.bar.bar_index == 2 for e, _ in entries))
        finally:
            daemon.request_stop("test over")
            thread.join(10)
        bars = [entry.bar for entry, _ in entries]
        bridge = [bar for bar in bars if bar.track_id == Bridge.TRACK_ID]
        assert bridge and bars[0].track_id == Bridge.TRACK_ID and all(bar.track_number == -1 for bar in bridge)
        first_track = next(bar for bar in bars if bar.track_id != Bridge.TRACK_ID)
        assert first_track.bar_index == 0 and related(bridge[-1].key, first_track.key)
        bridges.append((bridge, first_track))
        assert daemon.status()["counters"]["tracks_started"] == 1  # the bridge is not counted
        assert not list((tmp_path / "tracks").glob(f"*{Bridge.TRACK_ID}*"))  # nor archived
    (first_bridge, first_track), (second_bridge, second_track) = bridges
    assert first_bridge[0].notes != second_bridge[0].notes  # every start opens differently
    assert related(first_track.key, second_bridge[0].key)  # ... in a key following the last track
    assert int(second_track.track_id.split("-t")[1]) == int(first_track.track_id.split("-t")[1]) + 1
    kept = json.loads((tmp_path / POSITION_FILE).read_text())
    assert kept["starts"] == 2 and kept["next_track"] == second_track.track_number + 1


def test_an_effects_only_reload_leaves_the_composer_and_its_bars_alone(tmp_path, checkpoints):
    config_path = tmp_path / "stream.toml"
    base = (f'[stream]\nspeed = 6.0\nbuffer_seconds = 10.0\nready_seconds = 0\nfast_start = false\n'
            f'checkpoint = "{checkpoints[0]}"\nstate_dir = "{tmp_path}"\n[status]\nenabled = false\n')
    config_path.write_text(base + "[effects]\ncrackle_per_second = 4\nhiss_db = -60\n")
    daemon = Daemon(load_stream_config(config_path, CliOverrides(), {}), config_path=config_path, environ={},
                    sinks=[RecordingSink()], composer_loader=load_composer)
    entries = played_bars(daemon)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert _until(lambda: len(entries) >= 3 and daemon.ring.ahead_seconds > 8, 30)
        composer, queued = daemon.composers.composer, daemon.ring.peek_all()
        reloads = daemon.status()["checkpoint"]["reloads"]
        config_path.write_text(base + "[effects]\ncrackle_per_second = 12\nhiss_db = -50\n")
        daemon.reloader.start()
        assert _until(lambda: daemon.config.effects.hiss_db == -50.0, 30)
        assert _until(lambda: len(entries) >= 12, 60)
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    status = daemon.status()
    assert status["checkpoint"]["reloads"] == reloads + 1 and status["counters"]["swaps"] == 0
    assert daemon.composers.composer is composer and status["counters"]["bars_dropped_on_swap"] == 0
    played = [entry for entry, fallback in entries if not fallback]
    # The bars queued when the signal came play as they were, and the track goes on bar after bar.
    start = played.index(queued[0])
    assert played[start:start + len(queued)] == queued
    bars = [entry.bar for entry in played]
    for before, after in pairwise(bars):
        assert (after.track_id, after.bar_index) == (before.track_id, before.bar_index + 1) or \
            (after.bar_index == 0 and after.track_number == before.track_number + 1)


@pytest.mark.parametrize("unit", ["section", "track"])
def test_a_new_model_takes_over_at_the_next_boundary_with_its_own_track(tmp_path, checkpoints, unit):
    loads = iter(checkpoints)
    made = {}  # composer id -> every bar it composed, in order

    def loader(setting, seed):
        composer = load_composer(str(next(loads)), seed)
        bars = made.setdefault(composer.id, [])
        next_bar = composer.next_bar

        def record():
            bar = next_bar()
            bars.append(bar)
            return bar
        composer.next_bar = record
        return composer
    sink = RecordingSink()
    daemon = Daemon(_config(tmp_path, speed=0.0, swap_at=unit, fast_start=False, checkpoint="x"), environ={},
                    duration=400.0, sinks=[sink], composer_loader=loader)
    entries = played_bars(daemon)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert _until(lambda: len(entries) >= 5, 30)
        old_id = daemon.composers.composer.id
        daemon.reloader.start()
        assert _until(lambda: any(e.composer_id != old_id for e, _ in entries), 120)
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    played = [entry for entry, fallback in entries if not fallback]
    first_new = next(i for i, entry in enumerate(played) if entry.composer_id != old_id)
    last_old, new = played[first_new - 1].bar, played[first_new].bar
    # The old model's next bar would have begun a section (a track): that is where the new one came in.
    old_bars = made[old_id]
    following = old_bars[next(i for i, bar in enumerate(old_bars) if bar is last_old) + 1]
    assert starts_unit(last_old, following, unit)
    assert new.bar_index == 0 and new.track_number == last_old.track_number + 1
    assert new.track_id.endswith(f"-t{last_old.track_number + 1:04d}") and related(last_old.key, new.key)
    status = daemon.status()
    assert status["counters"]["underruns"] == 0 and status["counters"]["swaps"] == 1
    starts = [b.start_frame for b in sink.blocks]
    assert all(b - a == 1024 for a, b in pairwise(starts))  # 0 samples lost
