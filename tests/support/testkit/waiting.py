"""Helpers shared by the stream integration tests: a free loopback port, polling with a deadline,
a daemon's JSON status, and the last-resort teardown of a process a test started."""

import json
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """The first truthy value of `predicate()` within `timeout` seconds, else None.

    OSError counts as "not yet": servers under test refuse connections while starting.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


def status(port: int, path: str = "/status"):
    """The daemon's JSON answer at `path` on its loopback status port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def kill_if_running(process: subprocess.Popen) -> None:
    """A test's `finally`: whatever failed, the process it started does not outlive it."""
    if process.poll() is None:
        process.kill()
        process.wait()
