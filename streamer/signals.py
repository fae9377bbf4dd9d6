"""The daemon's signals. A handler only queues the signal, wakes the main loop and logs one line;
the main loop acts on it (SIGTERM/SIGINT: stop; SIGHUP: reload; SIGUSR1: log every thread's stack)."""

from __future__ import annotations

import logging
import signal
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

STOPS = (signal.SIGTERM, signal.SIGINT)
HANDLED = (*STOPS, signal.SIGHUP, signal.SIGUSR1)


class SignalInbox:
    def __init__(self, wake: Callable[[], None]) -> None:
        self.pending: deque[int] = deque()
        self._wake = wake

    def install(self) -> None:
        """Handle the signals (only the main thread can; a daemon run on another thread, as in the
        tests, is stopped by `request_stop`)."""
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: object) -> None:
        self.pending.append(signum)
        self._wake()
        log.info("received %s", signal.Signals(signum).name)

    def stop_asked(self) -> bool:
        """A SIGTERM or SIGINT is waiting (checked while starting, which the main loop cannot)."""
        return any(signum in STOPS for signum in list(self.pending))

    def take(self) -> list[int]:
        """Main loop: the signals received since the last call, oldest first."""
        taken = []
        while self.pending:
            taken.append(self.pending.popleft())
        return taken
