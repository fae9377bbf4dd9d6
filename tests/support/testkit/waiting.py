"""Helpers shared by the stream integration tests: a free loopback port, polling with a deadline,
a daemon's JSON status, and the last-resort teardown of a process a test started."""

import itertools
import json
import os
import socket
import subprocess
import time
import urllib.request

# Each pytest-xdist worker hands out ports from its own block, below the kernel's ephemeral range
# (32768-60999 by default), where bind(("127.0.0.1", 0)) and outgoing connections take theirs. With
# bind(0) two workers asking a moment apart could both get one port: an nginx that then failed to
# bind it looked "listening" on another test's daemon, and the stream went nowhere.
PORT_BASE = 20000
PORT_BLOCK = 1500
PORT_WORKERS = 8  # blocks up to 32000


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    index = int(worker) % PORT_WORKERS if worker.isdigit() else 0
    return range(PORT_BASE + index * PORT_BLOCK, PORT_BASE + (index + 1) * PORT_BLOCK)


# Starting where the process id says, so that a run right after another does not take ports its
# predecessor's processes may still hold.
_ports = itertools.cycle(sorted(_port_block(), key=lambda port: (port - os.getpid()) % PORT_BLOCK))


def free_port() -> int:
    """A loopback port that is free now and that no other test worker hands out."""
    for _ in range(PORT_BLOCK):
        port = next(_ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use (or lingering) here
                continue
            return port
    raise RuntimeError(f"no free port in {_port_block()}")


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
