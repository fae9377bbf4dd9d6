"""`chiplofi status`: a running stream's /status in a terminal (once, as JSON, or redrawn).

It reads the same JSON as the status page, from the status server (127.0.0.1:8080 by default),
so it needs no privileges and shows exactly what the page and /metrics show. The stream key
never reaches /status (outputs are redacted there), so nothing here can print it.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from streamer.errors import StatusUnavailableError
from streamer.status_snapshot import duration_text

CLEAR_SCREEN = "\033[H\033[2J"  # cursor home, erase display (any ANSI terminal)


def fetch_status(addr: str, timeout: float = 5.0) -> dict[str, Any]:
    """The JSON of http://ADDR/status; StatusUnavailableError says why there is none."""
    url = f"http://{addr}/status"
    # No proxy: the status server is on this machine (an http_proxy variable must not reroute it).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise StatusUnavailableError(f"{url} answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StatusUnavailableError(f"no chiplofi stream answers at {url} ({reason}); is it running "
                                     f"(`systemctl status chiplofi`)? Another channel: --addr HOST:PORT") from None
    except ValueError as error:
        raise StatusUnavailableError(f"{url} did not answer JSON ({error})") from None


def _output_line(sink: dict[str, Any]) -> str:
    state = f"{sink['name']}: {sink['state']}" + ("" if sink.get("connected") else ", not connected")
    extras = [f"{sink[k]} {label}" for k, label in (("restarts", "restarts"), ("frames_dropped", "frames dropped"))
              if sink.get(k)]
    if sink.get("last_error"):
        extras.append(f"last error: {sink['last_error']}")
    return state + (f" ({'; '.join(extras)})" if extras else "")


def _schedule_line(schedule: dict[str, Any]) -> str | None:
    if not schedule or not (schedule.get("program") or schedule.get("next") or schedule.get("next_reload")):
        return None
    parts = []
    if schedule.get("program"):
        parts.append(f"program {schedule['program']} (mood {schedule.get('mood') or 'none'}) until {schedule['until']}")
    if schedule.get("next"):
        parts.append(f"next: {schedule['next']['program']} at {schedule['next']['starts']}")
    if schedule.get("next_reload"):
        parts.append(f"reload at {schedule['next_reload']}")
    return "; ".join(parts)


def format_status(status: dict[str, Any], addr: str) -> str:
    """The terminal view of one /status snapshot."""
    playing = status["now_playing"]
    checkpoint = status.get("checkpoint", {})
    buffer = status["buffer"]
    counters = status["counters"]
    rows = [("stream", f"{status['state']} at http://{addr}/, up {duration_text(status['uptime_seconds'])}, "
                       f"audio {duration_text(status['clock']['position_seconds'])}")]
    if playing.get("track_id"):
        rows.append(("now playing", f"{playing['track_id']}: {playing['key']}, {playing['tempo_bpm']:.0f} BPM, "
                                    f"section {playing['section'] or '-'}, bar {playing['bar'] + 1}, "
                                    f"chord {playing['chord'] or '-'}"
                                    + (" (fallback bed)" if playing.get("fallback") else "")))
    else:
        rows.append(("now playing", "nothing yet"))
    model = checkpoint.get("id") or playing.get("composer_id") or "-"
    model += f"; reloads {checkpoint.get('reloads', 0)}, failed {checkpoint.get('reload_failures', 0)}"
    if checkpoint.get("reloading"):
        model += ", reloading"
    if checkpoint.get("last_reload_error"):
        model += f" (last error: {checkpoint['last_reload_error']})"
    rows.append(("model", model))
    rows.append(("buffer", f"{buffer['ahead_seconds']:.1f} s ahead (target {buffer['target_seconds']:g} s, "
                           f"{buffer['bars']} bars)"))
    sinks = status.get("sinks") or []
    rows += [("outputs" if i == 0 else "", _output_line(sink)) for i, sink in enumerate(sinks)] or [("outputs", "none")]
    schedule = _schedule_line(status.get("schedule") or {})
    if schedule:
        rows.append(("schedule", schedule))
    rows.append(("counters", ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in counters.items())))
    width = max(len(label) for label, _ in rows)
    return "".join(f"{label:<{width}}  {text}\n" for label, text in rows)


def run_status(addr: str, *, as_json: bool = False, watch: float | None = None, out: TextIO = sys.stdout) -> int:
    """Print the status once, or every `watch` seconds until Ctrl-C (exit 0). Once: a stream that
    cannot be reached raises StatusUnavailableError; watching, it is shown and retried."""
    if watch is None:
        status = fetch_status(addr)
        out.write(json.dumps(status, indent=2) + "\n" if as_json else format_status(status, addr))
        return 0
    clear = CLEAR_SCREEN if out.isatty() and not as_json else ""
    # Ctrl-C only sets a flag: a KeyboardInterrupt raised where Python runs a finaliser (the
    # HTTP responses' sockets are closed by them) is printed and dropped, and the watch would go on.
    stopping: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
    try:
        while not stopping:
            try:
                status = fetch_status(addr)
                # Watching as JSON gives one object per line (for jq or a log).
                text = json.dumps(status) + "\n" if as_json else format_status(status, addr)
            except StatusUnavailableError as error:
                text = f"{time.strftime('%H:%M:%S')} {error}\n"
            if stopping:
                break
            out.write(clear + text + ("" if clear or as_json else "\n"))
            out.flush()
            _sleep_unless(stopping, watch)
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def _sleep_unless(stopping: list[int], seconds: float) -> None:
    """Sleep `seconds`, in slices short enough that a Ctrl-C ends the wait within 0.1 s."""
    deadline = time.monotonic() + seconds
    while not stopping and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
