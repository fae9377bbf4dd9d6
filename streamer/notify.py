"""systemd notification (sd_notify): READY=1, WATCHDOG=1 and STATUS= lines, via sdnotify.

Without NOTIFY_SOCKET (not started by systemd) every call does nothing. The watchdog interval
is half of `WATCHDOG_USEC` when systemd sets it, else `DEFAULT_WATCHDOG_SECONDS`; the daemon
sends WATCHDOG=1 only while its health check passes, so a frozen pipeline lets systemd restart
the service.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_WATCHDOG_SECONDS = 5.0


class Notifier(Protocol):
    def notify(self, state: str) -> None: ...


class SystemdNotifier:
    """sd_notify through sdnotify; silent when there is no NOTIFY_SOCKET."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self._notifier = None
        if self.enabled:
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()
        usec = environ.get("WATCHDOG_USEC", "")
        self.watchdog_seconds = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else DEFAULT_WATCHDOG_SECONDS

    def notify(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)


def status_line(text: str) -> str:
    """A STATUS= message: one line, no newlines."""
    return "STATUS=" + " ".join(text.split())


STATUS_LINE_SECONDS = 10.0


class SystemdReporter:
    """Main loop, every turn (`report()`): WATCHDOG=1 each watchdog interval while `healthy(now)`,
    and a STATUS= line of `summary()` every `STATUS_LINE_SECONDS`."""

    def __init__(self, notifier: Notifier, healthy: Callable[[float], bool], summary: Callable[[], str]) -> None:
        self.notifier, self.healthy, self.summary = notifier, healthy, summary
        self._last_watchdog = self._last_status_line = 0.0

    def report(self) -> None:
        now = time.monotonic()
        interval = getattr(self.notifier, "watchdog_seconds", DEFAULT_WATCHDOG_SECONDS)
        # Pinging at half the timeout, one skipped ping already lets systemd restart us: an unhealthy
        # moment (an ffmpeg restarting) only delays the ping, which is tried again on every loop.
        if now - self._last_watchdog >= interval and self.healthy(now):
            self._last_watchdog = now
            self.notifier.notify("WATCHDOG=1")
        if now - self._last_status_line >= STATUS_LINE_SECONDS:
            self._last_status_line = now
            self.notifier.notify(status_line(self.summary()))
