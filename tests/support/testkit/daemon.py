"""Running the Daemon in-process in unit tests: an unpaced config, running it to its end, and
waiting on a condition."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streamer.config import Config


def unpaced_config(state_dir: Path, **stream) -> Config:
    """The default config, unpaced, with an 8 s buffer, no status server and its state in
    `state_dir`; `stream` overrides [stream] keys."""
    base = Config()
    values = dict(speed=0.0, buffer_seconds=8.0, prefill_timeout_seconds=2.0, ready_seconds=0.0,
                  state_dir=str(state_dir))
    settings = dataclasses.replace(base.stream, **{**values, **stream})
    status = dataclasses.replace(base.status, enabled=False)
    return dataclasses.replace(base, stream=settings, status=status)


def until(predicate: Callable[[], object], timeout: float = 20.0, poll: float = 0.02) -> bool:
    """Whether `predicate()` became true within `timeout` seconds (checked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def run_to_end(daemon, timeout: float = 60.0) -> int:
    """Run `daemon` (given a duration, or stopped by another thread) on a thread of its own; its exit
    code. Fails the test if it has not stopped within `timeout` seconds."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", daemon.run()))
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "daemon did not stop"
    return result["code"]
