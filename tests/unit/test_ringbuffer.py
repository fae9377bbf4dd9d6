"""BarRing and BlockQueue: bounded, FIFO, timeouts, drops counted."""

import threading
import time

import numpy as np
import pytest

from streamer.ringbuffer import AudioBlock, BarEntry, BarRing, BlockQueue
from streamer.types import Bar


def _entry(index: int, tempo: float = 120.0) -> BarEntry:
    return BarEntry(Bar((), tempo, 4.0, "t", index), "c")  # 2 s per bar at 120 BPM


def _block(frames: int, start: int = 0) -> AudioBlock:
    pcm = np.full((frames, 2), start, dtype=np.float32)
    return AudioBlock(pcm, b"\0" * frames * 4, start, 1000)


def test_bar_ring_is_fifo_and_counts_seconds():
    ring = BarRing(target_seconds=5.0)
    for i in range(3):
        ring.put(_entry(i))
    assert ring.ahead_seconds == pytest.approx(6.0) and len(ring) == 3
    assert not ring.has_room()
    assert [ring.get().bar.bar_index for _ in range(3)] == [0, 1, 2]
    assert ring.ahead_seconds == 0.0 and ring.has_room()


def test_bar_ring_cuts_at_the_first_bar_that_starts_and_queues_the_new_one():
    ring = BarRing(target_seconds=100.0)
    sections = ["A", "A", "A", "B", "B", "C"]
    entries = [BarEntry(Bar((), 120.0, 4.0, "t", i, section=label), "c") for i, label in enumerate(sections)]
    for entry in entries:
        ring.put(entry)
    assert ring.get() is entries[0] and ring.last_taken is entries[0]
    new_section = lambda before, bar: before is None or bar.section != before.section  # noqa: E731
    cut, before = ring.find_start(new_section)
    assert cut is entries[3] and before is entries[2].bar
    assert ring.cut_before(cut, _entry(99, tempo=60.0)) == (3, pytest.approx(4.0))  # 2 bars of 2 s kept
    assert [e.bar.bar_index for e in ring.peek_all()] == [1, 2, 99]
    assert ring.ahead_seconds == pytest.approx(8.0)
    assert ring.cut_before(entries[4], _entry(100)) is None  # no longer queued: nothing changes
    assert ring.find_start(lambda before, bar: bar.bar_index > 200) is None
    assert ring.last_queued().bar_index == 99
    assert ring.cut_before(ring.peek_all()[0], _entry(7)) == (3, 0.0)  # cut before everything queued
    assert ring.cut_before(None, _entry(8)) == (0, pytest.approx(2.0))  # append
    assert [ring.get().bar.bar_index for _ in range(2)] == [7, 8] and ring.get() is None


def test_bar_ring_waits_time_out():
    ring = BarRing(target_seconds=1.0)
    ring.put(_entry(0))
    started = time.monotonic()
    assert ring.wait_for_room(0.05) is False
    assert ring.get(timeout=0.0).bar.bar_index == 0
    assert ring.get(timeout=0.05) is None
    assert ring.empty_gets == 1
    assert time.monotonic() - started < 2.0


def test_bar_ring_get_wakes_when_a_bar_arrives():
    ring = BarRing(target_seconds=4.0)
    threading.Timer(0.05, ring.put, args=(_entry(7),)).start()
    entry = ring.get(timeout=5.0)
    assert entry is not None and entry.bar.bar_index == 7


def test_bar_ring_prefill_wait():
    ring = BarRing(target_seconds=4.0)
    assert ring.wait_for_seconds(3.0, 0.01) is False
    ring.put(_entry(0))
    ring.put(_entry(1))
    assert ring.wait_for_seconds(3.0, 0.01) is True


def test_block_queue_drops_the_oldest_when_full():
    queue = BlockQueue(max_frames=100)
    for start in range(5):
        assert queue.put(_block(30, start)) == (30 if start >= 3 else 0)
    assert queue.frames == 90
    assert [queue.get(0).start_frame for _ in range(3)] == [2, 3, 4]
    assert queue.stats.frames_dropped == 60 and queue.stats.drops == 2


def test_block_queue_put_waits_for_room_up_to_the_timeout():
    queue = BlockQueue(max_frames=60)
    queue.put(_block(30, 0))
    queue.put(_block(30, 1))
    threading.Timer(0.05, queue.get, args=(0,)).start()
    assert queue.put(_block(30, 2), timeout=5.0) == 0  # a consumer made room: nothing dropped
    assert queue.stats.frames_dropped == 0


def test_block_queue_get_timeout_and_clear():
    queue = BlockQueue(max_frames=100)
    assert queue.get(0.01) is None
    queue.put(_block(40))
    assert queue.clear() == 40 and queue.frames == 0 and queue.stats.frames_dropped == 40


def test_invalid_sizes_are_rejected():
    with pytest.raises(ValueError):
        BarRing(0)
    with pytest.raises(ValueError):
        BlockQueue(0)


def test_block_queue_trim_keeps_the_newest():
    queue = BlockQueue(max_frames=1000)
    for start in range(5):
        queue.put(_block(100, start))
    assert queue.trim_to(250) == 300
    assert [queue.get(0).start_frame for _ in range(2)] == [3, 4]
    assert queue.stats.frames_dropped == 300
