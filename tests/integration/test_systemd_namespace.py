"""The shipped unit under a real systemd, with all its hardening.

deploy/install.sh installs chiplofi, for real, into a PID namespace whose PID 1 is this
machine's systemd (tests/integration/systemd_boot.sh: overlays over /etc, /opt and /var, private
/tmp and /run, an empty boot target and this machine's own services masked, so nothing done
inside reaches the machine). chiplofi.service then streams to nginx-rtmp on loopback (the
network namespace is shared) and is driven with systemctl:

- READY=1 comes after the prefill (`systemctl start` returns then, and not before the daemon's
  "buffer prefilled" line);
- `systemctl reload` swaps the checkpoint;
- a daemon frozen with SIGSTOP is killed by the watchdog and restarted;
- an ingest that accepts TCP and never answers (tests/integration/receiver.py, HungIngest) puts
  the stream off air: its connections are cut and retried under the unit's seccomp filter and
  address families, the pings stop, the watchdog restarts the service, and the stream is back
  once the ingest answers;
- `systemctl stop` lets the daemon finish its files.

Figures are reported like test_faults.py's (CHIPLOFI_FAULT_FIGURES) for docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import wave
from pathlib import Path

import pytest

from conftest import copy_source
from test_faults import report
from test_stream_local import probe
from test_stream_rtmp import get, write_checkpoint
from testkit.receiver import HungIngest, receiver_fixture, require_tools
from testkit.waiting import free_port, status, wait_for

pytestmark = pytest.mark.integration

KEY = "namespace-key-6c1f0a"
BOOT = Path(__file__).with_name("systemd_boot.sh")
UNIT = "chiplofi.service"
HUNG_SECONDS = 50.0  # longer than WatchdogSec (30 s) after the last ping (at most 15 s before)

receiver = receiver_fixture(KEY)


class Namespace:
    """systemd as PID 1 of a new PID and mount namespace (systemd_boot.sh); `run` enters it."""

    def __init__(self, base: Path) -> None:
        self.share = base / "share"  # seen inside at /mnt
        self.share.mkdir(parents=True)
        self.log = base / "boot.log"
        with open(self.log, "wb") as log:
            self.unshare = subprocess.Popen(
                ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--mount-proc",
                 "bash", str(BOOT), str(base / "layers"), str(self.share)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        self.pid1 = int(wait_for(lambda: children.read_text().split(), 20)[0])
        booted = wait_for(lambda: self.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded"),
                          60, 0.5)
        assert booted, self.log.read_text() + self.run("systemctl", "--failed", "--no-pager").stdout

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.pid1), "-m", "-p", "--", *args], capture_output=True,
                              text=True, timeout=timeout)

    def check(self, *args: str, timeout: float = 60) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        return result.stdout

    def show(self, prop: str) -> str:
        return self.check("systemctl", "show", "-p", prop, "--value", UNIT).strip()

    def journal(self) -> str:
        return self.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout

    def close(self) -> None:
        """SIGKILL to PID 1 ends every process of the namespace; its mounts go with it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid1, signal.SIGKILL)
        self.unshare.wait(30)


@pytest.fixture
def namespace(tmp_path):
    ns = Namespace(tmp_path)
    try:
        yield ns
    finally:
        ns.close()


def restarted(ns: Namespace, restarts: int, timeout: float) -> str:
    """Wait until systemd restarted the service `restarts` times and it is active again."""
    found = wait_for(lambda: int(ns.show("NRestarts")) >= restarts and ns.show("ActiveState") == "active"
                     and ns.show("SubState") == "running" and ns.show("MainPID"), timeout, 0.5)
    assert found, ns.journal()[-4000:]
    return found


def test_the_installed_unit_under_systemd_is_ready_reloads_recovers_and_stops_cleanly(tmp_path, receiver, namespace):
    require_tools()
    ns = namespace
    share = ns.share
    copy_source(share / "source")
    first_id = write_checkpoint(share / "checkpoint-a", seed=0)
    second_id = write_checkpoint(share / "checkpoint-b", seed=1)
    status_port = free_port()
    (share / "chiplofi.toml").write_text(
        f'[stream]\ncheckpoint = "/etc/chiplofi/checkpoint"\n'
        f'outputs = ["{receiver.ingest_url}", "stream.wav", "stream.mkv"]\n'
        f'[status]\naddr = "127.0.0.1:{status_port}"\n')
    (share / "chiplofi.env").write_text(f"CHIPLOFI_STREAM_KEY={KEY}\n")

    # As root on a server would: the system's python3 and PATH (not this checkout's), pip's own
    # settings (where the packages come from) passed through.
    pip = [f"{name}={value}" for name, value in os.environ.items() if name.startswith("PIP_")]
    installed = ns.run("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", *pip,
                       "bash", "/mnt/source/deploy/install.sh", "--no-apt", timeout=1800)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    ns.check("install", "-m", "0640", "-g", "chiplofi", "/mnt/chiplofi.toml", "/etc/chiplofi/chiplofi.toml")
    ns.check("install", "-m", "0600", "/mnt/chiplofi.env", "/etc/chiplofi/chiplofi.env")
    ns.check("cp", "-rT", "/mnt/checkpoint-a", "/etc/chiplofi/checkpoint")
    ns.check("chmod", "-R", "a+rX", "/etc/chiplofi/checkpoint")

    # READY=1 after the prefill: `systemctl start` of a Type=notify unit returns only then.
    started = time.monotonic()
    ns.check("systemctl", "start", UNIT, timeout=180)
    start_seconds = time.monotonic() - started
    # systemd's "Started" line reaches the journal a moment after `systemctl start` returns.
    assert wait_for(lambda: "Started chiplofi" in ns.journal(), 10), ns.journal()[-3000:]
    journal = ns.journal()
    assert "buffer prefilled" in journal and journal.index("buffer prefilled") < journal.index("Started chiplofi"), \
        journal[-3000:]
    prefill = re.search(r"buffer prefilled: ([\d.]+) s ahead", journal)
    first = status(status_port)
    assert prefill and first["state"] == "running" and first["buffer"]["ahead_seconds"] > 0
    # (A fast start opens with the rule-based composer while the configured one loads.)
    assert wait_for(lambda: status(status_port)["checkpoint"]["id"] == first_id, 90), ns.journal()[-3000:]
    assert wait_for(lambda: receiver.ingest.first_media_after(0.0), 60), journal[-3000:]
    # The hardening is in force, not only written down (a few of its marks).
    main_pid = ns.show("MainPID")
    process = ns.check("cat", f"/proc/{main_pid}/status")
    mounts = {line.split()[4]: line for line in ns.check("cat", f"/proc/{main_pid}/mountinfo").splitlines()}
    assert "NoNewPrivs:\t1" in process and "Seccomp:\t2" in process and "CapEff:\t0000000000000000" in process
    assert mounts["/"].split()[5].startswith("ro") and mounts["/etc"].split()[5].startswith("ro")
    assert "hidepid=invisible" in mounts["/proc"] and "subset=pid" in mounts["/proc"]
    assert mounts["/var/lib/chiplofi"].split()[5].startswith("rw")

    # systemctl reload: SIGHUP, the new checkpoint swapped in without a restart.
    ns.check("cp", "-rT", "/mnt/checkpoint-b", "/etc/chiplofi/checkpoint")
    reloaded = time.monotonic()
    ns.check("systemctl", "reload", UNIT)
    assert wait_for(lambda: status(status_port)["checkpoint"]["id"] == second_id, 90), ns.journal()[-3000:]
    reload_seconds = time.monotonic() - reloaded
    assert ns.show("NRestarts") == "0"

    # A frozen daemon: no pings, so systemd's watchdog kills and restarts it.
    frozen_pid = ns.show("MainPID")
    ns.check("kill", "-STOP", frozen_pid)
    frozen = time.monotonic()
    restarted(ns, 1, 150)
    watchdog_restart_seconds = time.monotonic() - frozen
    assert ns.show("MainPID") != frozen_pid
    assert "Watchdog timeout" in ns.journal()
    # Media of a session begun after the freeze: the restarted daemon's (its ffmpeg may publish
    # before `restarted` sees the new MainPID).
    assert wait_for(lambda: receiver.ingest.first_media_after(frozen), 90), ns.journal()[-3000:]

    # An ingest that accepts TCP and never answers the handshake.
    assert wait_for(lambda: get(status_port, "/readyz")[0] == 200, 60)
    receiver.stop_server()
    hung = HungIngest(receiver.port)
    try:
        hung_from = time.monotonic()
        states, codes = set(), set()
        while time.monotonic() - hung_from < HUNG_SECONDS:
            time.sleep(1.0)
            if time.monotonic() - hung_from < 5.0:
                continue  # bytes sent before the switch are still being acknowledged (3 s window)
            try:
                sink = next(s for s in status(status_port)["sinks"] if s["kind"] == "ffmpeg")
                states.add(sink["detail"]["targets"][0]["state"])
                codes.add(get(status_port, "/readyz")[0])
            except OSError:
                pass  # the service restarting
    finally:
        hung.close()
    receiver.start_server()
    answered = time.monotonic()
    restarts_while_hung = int(ns.show("NRestarts")) - 1
    on_air = wait_for(lambda: receiver.ingest.first_media_after(answered), 90)
    assert on_air, ns.journal()[-3000:]

    # systemctl stop: the daemon ends ffmpeg's input and both files are finished.
    stopping = time.monotonic()
    ns.check("systemctl", "stop", UNIT, timeout=60)
    stop_seconds = time.monotonic() - stopping
    result = ns.show("Result")
    # Restarts never overwrite (stream.mkv, stream-1.mkv, ...): the last run's files are the newest.
    ns.check("sh", "-c", "cp -p /var/lib/chiplofi/stream*.wav /var/lib/chiplofi/stream*.mkv /mnt/")

    def newest(pattern: str) -> Path:
        return max(share.glob(pattern), key=lambda path: path.stat().st_mtime)
    with wave.open(str(newest("stream*.wav"))) as wav:
        wav_seconds = wav.getnframes() / wav.getframerate()
    mkv_seconds = float(probe(newest("stream*.mkv"))["format"]["duration"])
    journal = ns.journal()
    report("systemd_namespace", start_to_ready_seconds=round(start_seconds, 1), prefilled_seconds=float(prefill[1]),
           reload_seconds=round(reload_seconds, 1),
           watchdog_restart_after_sigstop_seconds=round(watchdog_restart_seconds, 1),
           hung_seconds=HUNG_SECONDS, hung_connection_attempts=len(hung.accepted),
           target_states_while_hung=sorted(states), readyz_while_hung=sorted(codes),
           watchdog_restarts_while_hung=restarts_while_hung,
           on_air_after_ingest_answered_seconds=round(on_air - answered, 2),
           stop_seconds=round(stop_seconds, 1), result=result, wav_seconds=round(wav_seconds, 1),
           mkv_seconds=round(mkv_seconds, 1))

    assert len(hung.accepted) >= 3  # cut and retried, under the unit's sandbox
    assert "ok" not in states and 200 not in codes
    assert restarts_while_hung >= 1  # off air past WatchdogSec: systemd restarted it
    assert result == "success" and "ffmpeg ended (exit code 0)" in journal
    assert wav_seconds > 1.0 and mkv_seconds > 1.0
    assert KEY not in journal
