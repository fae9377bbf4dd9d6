"""Logging for the daemon: secrets redacted from every line, rate-limited repeats, stack dumps.

`install_redaction(secrets)` wraps the formatter of every root handler, so the stream key never
reaches a log line whatever module logs it (ffmpeg's own messages name the ingest URL).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterable

REDACTED = "<redacted>"
_secrets: list[str] = []
_secrets_lock = threading.Lock()


MIN_FRAGMENT = 4  # characters of a secret at a line's start or end that count as a piece of it
MIN_INNER_FRAGMENT = 8  # characters of a secret anywhere in a line that count as a piece of it


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every secret (the given ones, and those registered) replaced, and every piece
    of one: 8 characters or more anywhere, 4 or more that end the text or start it (what is left
    of a secret in a line cut short — ffmpeg truncates its log lines at 1 kB — or split)."""
    for secret in list(secrets or []) + _registered():
        if not secret:
            continue
        text = text.replace(secret, REDACTED)
        if _holds_piece(text, secret):
            for size in range(len(secret) - 1, MIN_INNER_FRAGMENT - 1, -1):
                for start in range(len(secret) - size + 1):
                    text = text.replace(secret[start:start + size], REDACTED)
        for size in range(len(secret) - 1, MIN_FRAGMENT - 1, -1):
            if text.endswith(secret[:size]):
                text = text[:-size] + REDACTED
                break
        for size in range(len(secret) - 1, MIN_FRAGMENT - 1, -1):
            if text.startswith(secret[-size:]):
                text = REDACTED + text[size:]
                break
    return text


@functools.lru_cache(maxsize=16)
def _pieces(secret: str) -> frozenset[str]:
    return frozenset(secret[i:i + MIN_INNER_FRAGMENT] for i in range(len(secret) - MIN_INNER_FRAGMENT + 1))


def _holds_piece(text: str, secret: str) -> bool:
    """Does `text` hold 8 consecutive characters of `secret`? (One pass over the text.)"""
    pieces = _pieces(secret)
    return any(text[i:i + MIN_INNER_FRAGMENT] in pieces for i in range(len(text) - MIN_INNER_FRAGMENT + 1))


def _registered() -> list[str]:
    with _secrets_lock:
        return list(_secrets)


def register_secret(secret: str) -> None:
    """Redact `secret` from every log line and from everything passed to `redact`."""
    if secret and len(secret) >= 3:
        with _secrets_lock:
            if secret not in _secrets:
                _secrets.append(secret)


class RedactingFormatter(logging.Formatter):
    """Formats with the wrapped formatter, then removes the registered secrets."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        # Line by line: a cut-off key at the end of one line of a multi-line record is found too.
        return "\n".join(redact(line) for line in self.inner.format(record).split("\n"))


def install_redaction(secrets: Iterable[str] = ()) -> None:
    """Register `secrets` and make sure every root handler redacts them."""
    for secret in secrets:
        register_secret(secret)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter or logging.Formatter()))


class RateLimitedLog:
    """Logs a message once per `interval` seconds; says how many repeats were held back."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def _key(self, msg: str, args: tuple[object, ...]) -> str:
        text = msg % args if args else msg
        return "".join(c if not c.isdigit() else "#" for c in text)[:200]  # counters / addresses vary

    def log(self, level: int, msg: str, *args: object) -> None:
        key = self._key(msg, args)
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (-1e18, 0))
            if now - last < self.interval:
                self._seen[key] = (last, held + 1)
                return
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:
                self._seen.clear()
        if held:
            self.logger.log(level, msg + " (and %d more like it)", *args, held)
        else:
            self.logger.log(level, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)


def thread_stacks() -> str:
    """Every thread's current stack, as text (for SIGUSR1)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, '?')} ({ident})\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)
