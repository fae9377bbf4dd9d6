"""systemd's watchdog through the Daemon API: WATCHDOG=1 stops while the composer is stuck for longer
than the buffer lasts, or while every output is unhealthy, and comes back when they recover.

Real FluidSynth and effects; the composer, the sinks and the notifier are test doubles at their
boundaries (tests/integration/test_watchdog.py runs the real process on a real NOTIFY_SOCKET)."""

import threading
import time

from streamer.daemon import Daemon
from testkit.daemon import unpaced_config as _config, until as _until
from testkit.doubles import (
    PING_SECONDS,
    FlakyComposer,
    RecordingNotifier,
    RecordingSink,
    StallingComposer,
    SwitchableSink,
)


def _start(daemon):
    thread = threading.Thread(target=daemon.run)
    thread.start()
    return thread


def _stop(daemon, thread):
    daemon.request_stop("test over")
    thread.join(10)
    assert not thread.is_alive()


def _quiet_while(notifier, condition, seconds):
    """No WATCHDOG=1 for `seconds` while `condition()` holds throughout; returns the pings seen."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        assert condition()
        time.sleep(PING_SECONDS / 2)
    return notifier.pings(since=started)


def test_watchdog_stops_while_the_composer_is_stuck_longer_than_the_buffer_lasts(tmp_path):
    composer = StallingComposer(ident="stalling")
    notifier = RecordingNotifier()
    # 8 s of buffer at 10× real time lasts 0.8 s of wall time.
    daemon = Daemon(_config(tmp_path, speed=10.0, buffer_seconds=8.0, fast_start=False), environ={},
                    sinks=[RecordingSink()], notifier=notifier, composer_loader=lambda setting, seed: composer)
    thread = _start(daemon)
    try:
        assert _until(lambda: len(notifier.pings()) >= 5, 20)
        assert notifier.messages[0][1] == "READY=1"
        composer.stall.set()
        stuck = lambda: daemon.status()["composer"]["busy_seconds"] > 0.8 + 2 * PING_SECONDS  # noqa: E731
        assert _until(stuck, 20)
        # The stream itself goes on (the fallback bed covers the gap), so only the stuck composer
        # can be what stops the pings.
        assert _until(lambda: daemon.status()["counters"]["underruns"] > 0, 20)
        assert daemon.health() == (True, "ok")
        assert _quiet_while(notifier, stuck, 2.0) == []
        composer.stall.clear()
        composer.release.set()
        resumed = time.monotonic()
        assert _until(lambda: len(notifier.pings(since=resumed)) >= 3, 20)
    finally:
        composer.release.set()
        _stop(daemon, thread)


def test_watchdog_stops_while_every_output_is_unhealthy(tmp_path):
    primary, backup = SwitchableSink("primary"), SwitchableSink("backup")
    notifier = RecordingNotifier()
    daemon = Daemon(_config(tmp_path, speed=4.0), environ={}, sinks=[primary, backup], notifier=notifier,
                    composer_loader=lambda setting, seed: FlakyComposer(seed=seed))
    thread = _start(daemon)
    try:
        assert _until(lambda: len(notifier.pings()) >= 3, 20)
        primary.healthy = False  # one output down: the others carry the stream, no restart wanted
        one_down = time.monotonic()
        assert _until(lambda: len(notifier.pings(since=one_down)) >= 5, 20)
        backup.healthy = False  # every output down
        time.sleep(2 * PING_SECONDS)  # a ping already decided on may still arrive
        assert _quiet_while(notifier, lambda: daemon.health() == (True, "ok"), 2.0) == []
        backup.healthy = True
        back = time.monotonic()
        assert _until(lambda: len(notifier.pings(since=back)) >= 3, 20)
    finally:
        _stop(daemon, thread)


def test_a_brief_unhealthy_moment_delays_the_ping_instead_of_skipping_it(tmp_path):
    sink = SwitchableSink("only")
    notifier = RecordingNotifier()
    notifier.watchdog_seconds = 3.0  # systemd's deadline is two intervals after the last ping
    daemon = Daemon(_config(tmp_path, speed=4.0), environ={}, sinks=[sink], notifier=notifier,
                    composer_loader=lambda setting, seed: FlakyComposer(seed=seed))
    thread = _start(daemon)
    try:
        assert _until(lambda: notifier.pings(), 20)
        last = notifier.pings()[-1]
        sink.healthy = False  # e.g. the only ffmpeg restarting when the next ping falls due
        assert _until(lambda: time.monotonic() - last > 3.5, 10)
        assert notifier.pings(since=last + 0.01) == []
        sink.healthy = True
        assert _until(lambda: notifier.pings(since=last + 0.01), 10)
        # Sent once healthy again, not an interval later: well before systemd's deadline.
        assert notifier.pings(since=last + 0.01)[0] < last + 2 * 3.0
    finally:
        _stop(daemon, thread)
