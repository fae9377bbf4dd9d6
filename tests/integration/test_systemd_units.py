"""The systemd units: `systemd-analyze verify` has nothing to say about them where deploy/install.sh
put them (so ExecStart= and ExecReload= name real programs of that root), the sandbox keeps a low
exposure score, and chiplofi.service is chiplofi@.service for the one channel "chiplofi"."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, make_os_root
from streamer.daemon import STOP_BUDGET_SECONDS

pytestmark = pytest.mark.integration

UNITS_DIR = ROOT / "systemd"
CHECKED = ("chiplofi.service", "chiplofi@radio.service")  # a template is verified as an instance
MAX_EXPOSURE = 2.0  # systemd-analyze security's 0 (locked down) .. 10 (unprotected); these are 1.5


def systemd_analyze(*args: str) -> subprocess.CompletedProcess:
    assert shutil.which("systemd-analyze"), "systemd-analyze missing (Debian's systemd package)"
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    # --man=no: Documentation= names the README the installer copies, not a man page.
    return systemd_analyze("verify", f"--root={root}", "--man=no", *units)


def settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting of a unit file, in order, comments left out."""
    section, found = "", []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


def test_units_verify_without_a_message_where_the_installer_put_them(installed_root):
    result = verify(installed_root.root, *CHECKED)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_catches_a_missing_program_and_an_unknown_setting(tmp_path):
    root = make_os_root(tmp_path / "root")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(UNITS_DIR / "chiplofi.service", units)  # no /opt/chiplofi/venv in this root
    result = verify(root, "chiplofi.service")
    assert result.returncode != 0 and "/opt/chiplofi/venv/bin/chiplofi is not executable" in result.stderr
    program = root / "opt/chiplofi/venv/bin/chiplofi"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    (units / "chiplofi.service").write_text((UNITS_DIR / "chiplofi.service").read_text()
                                            .replace("KillMode=mixed", "KillMode=mixed\nWatchdogSecs=30s"))
    result = verify(root, "chiplofi.service")
    assert "Unknown key 'WatchdogSecs'" in result.stderr  # exit code 0: only the output tells


def test_sandbox_exposure_stays_low(installed_root):
    result = systemd_analyze("security", "--offline=true", f"--root={installed_root.root}",
                             f"--threshold={round(MAX_EXPOSURE * 10)}", *CHECKED)  # in tenths
    scores = [float(score) for score in re.findall(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)]
    assert result.returncode == 0 and len(scores) == 2 and max(scores) <= MAX_EXPOSURE, result.stdout[-2000:]


def test_the_single_channel_unit_is_the_template_for_the_channel_chiplofi():
    single = settings(UNITS_DIR / "chiplofi.service")
    # /etc/chiplofi/%i.toml -> /etc/chiplofi/chiplofi.toml, but StateDirectory=chiplofi/%i -> chiplofi
    template = [(section, key, value.replace("/%i.", "/chiplofi.").replace("chiplofi/%i", "chiplofi")
                 .replace("chiplofi-%i", "chiplofi").replace(", channel %i", ""))
                for section, key, value in settings(UNITS_DIR / "chiplofi@.service")]
    assert single == template


def test_the_units_say_what_the_daemon_relies_on():
    found = settings(UNITS_DIR / "chiplofi@.service")
    values = {(section, key): value for section, key, value in found}
    expected = {
        ("Unit", "StartLimitIntervalSec"): "0",
        ("Service", "Type"): "notify",  # streamer/notify.py: READY=1, WATCHDOG=1, STATUS=
        ("Service", "NotifyAccess"): "main",
        ("Service", "Restart"): "always",
        ("Service", "KillMode"): "mixed",  # SIGTERM to the daemon only; it ends ffmpeg itself
        ("Service", "ExecReload"): "/bin/kill -HUP $MAINPID",  # SIGHUP: reload in the background
        ("Service", "ExecStart"): "/opt/chiplofi/venv/bin/chiplofi stream --config /etc/chiplofi/%i.toml",
        ("Service", "EnvironmentFile"): "-/etc/chiplofi/%i.env",  # CHIPLOFI_STREAM_KEY=
        ("Service", "StateDirectory"): "chiplofi/%i",  # $STATE_DIRECTORY when stream.state_dir is empty
        ("Service", "User"): "chiplofi",
        ("Service", "SupplementaryGroups"): "audio",
        ("Service", "RestrictAddressFamilies"): "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    }
    assert {key: values.get(key) for key in expected} == expected
    # systemd waits longer than the daemon takes to stop its outputs, so ffmpeg ends its files.
    assert int(values[("Service", "TimeoutStopSec")].rstrip("s")) > STOP_BUDGET_SECONDS + 1
    assert int(values[("Service", "WatchdogSec")].rstrip("s")) >= 10
