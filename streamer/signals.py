"""The daemon's signals. A handler only queues the signal (a deque append, atomic); the main loop,
which polls every 0.25 s, logs it and acts on it (SIGTERM/SIGINT: stop; SIGHUP: reload; SIGUSR1:
log every thread's stack). Nothing in a handler takes a lock: Python runs handlers on the main
thread between bytecodes, and one that set a `threading.Event` while the main loop held that
Event's lock (inside `wait` or `clear`) would deadlock the daemon."""

from __future__ import annotations

import logging
import signal
import threading
from collections import deque

log = logging.getLogger(__name__)

STOPS = (signal.SIGTERM, signal.SIGINT)
HANDLED = (*STOPS, signal.SIGHUP, signal.SIGUSR1)


class SignalInbox:
    def __init__(self) -> None:
        self.pending: deque[int] = deque()

    def install(self) -> None:
        """Handle the signals (only the main thread can; a daemon run on another thread, as in the
        tests, is stopped by `request_stop`)."""
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def stop_asked(self) -> bool:
        """A SIGTERM or SIGINT is waiting (checked while starting, which the main loop cannot)."""
        return any(signum in STOPS for signum in list(self.pending))

    def take(self) -> list[int]:
        """Main loop: the signals received since the last call, oldest first."""
        taken = []
        while self.pending:
            taken.append(self.pending.popleft())
            log.info("received %s", signal.Signals(taken[-1]).name)
        return taken
