"""SampleClock: paces by sample count without drift, honours speed, re-anchors after a stall."""

import threading

import pytest

from streamer.clock import SampleClock


class FakeTime:
    """A monotonic clock and an Event whose wait() advances it (no real sleeping)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def event(self) -> threading.Event:
        fake = self

        class _Event(threading.Event):
            def wait(self, timeout=None):
                if self.is_set():
                    return True
                fake.waits.append(timeout)
                fake.now += timeout + 0.0007  # sleeps always overshoot a little
                return self.is_set()
        return _Event()


def test_blocks_are_released_on_schedule_without_drift():
    fake = FakeTime()
    clock = SampleClock(44100, 1.0, monotonic=fake.monotonic)
    stop = fake.event()
    clock.start()
    start = fake.now
    for _ in range(44100 // 1024 * 60):  # ~60 s of 1024-frame blocks
        assert clock.wait_due(clock.frames, stop)
        clock.advance(1024)
    # The last block was released when it was due, give or take one overshoot: no accumulation.
    due = start + (clock.frames - 1024) / 44100
    assert fake.now - 0.0007 <= due + 0.0008
    assert fake.now >= due
    assert clock.resyncs == 0


def test_speed_scales_time():
    fake = FakeTime()
    clock = SampleClock(1000, 4.0, monotonic=fake.monotonic)
    stop = fake.event()
    clock.start()
    clock.advance(1000)
    assert clock.wait_due(1000, stop)
    assert sum(fake.waits) == pytest.approx(0.25)


def test_unpaced_never_waits():
    fake = FakeTime()
    clock = SampleClock(1000, 0.0, monotonic=fake.monotonic)
    stop = fake.event()
    for _ in range(10):
        assert clock.wait_due(clock.frames, stop)
        clock.advance(1000)
    assert fake.waits == [] and clock.position_seconds == 10.0 and clock.lag_seconds() == 0.0


def test_a_long_stall_re_anchors_instead_of_bursting():
    fake = FakeTime()
    clock = SampleClock(1000, 1.0, max_lag_seconds=2.0, monotonic=fake.monotonic)
    stop = fake.event()
    clock.start()
    clock.advance(1000)
    fake.now += 10.0  # SIGSTOP for 10 s
    assert clock.lag_seconds() == pytest.approx(9.0)  # 10 s passed, 1 s of audio was released
    assert clock.wait_due(1000, stop)
    assert clock.resyncs == 1
    clock.advance(1000)
    assert clock.wait_due(2000, stop)
    assert fake.waits[-1] == pytest.approx(1.0)  # back to real time, no burst


def test_stop_interrupts_the_wait_and_advancing_reports_staleness():
    fake = FakeTime()
    clock = SampleClock(1000, 1.0, monotonic=fake.monotonic)
    stop = fake.event()
    clock.start()
    stop.set()
    assert clock.wait_due(5000, stop) is False
    assert clock.advancing(1.0)
    fake.now += 5
    assert not clock.advancing(1.0)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        SampleClock(0)
    with pytest.raises(ValueError):
        SampleClock(44100, -1)
