"""A temporary system root that deploy/install.sh really installs into, shared by the installer and
systemd unit tests (the install builds a real virtual environment, which takes a while: once).

The root starts as a small copy of this machine's OS: its user database, systemd's own units,
/bin/kill and nologin. apt-get and dpkg-query are replaced on PATH by a fake package database
that records what the installer asks for (the real ones would change this machine);
useradd/usermod/userdel, systemctl (offline, `--root`), python3 -m venv and pip run for real.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MISSING_PACKAGES = ("libportaudio2", "ffmpeg")  # what the fake package database lacks at first

FAKE_DPKG_QUERY = """#!/bin/sh
# dpkg-query -W -f='${Status}' PACKAGE, answered from $FAKE_DPKG/installed
for package; do :; done
if grep -qx "$package" "$FAKE_DPKG/installed"; then
    printf 'install ok installed'
else
    echo "dpkg-query: no packages found matching $package" >&2
    exit 1
fi
"""

FAKE_APT_GET = """#!/bin/sh
# Records every call; `install` adds the packages to the fake database.
echo "apt-get $*" >>"$FAKE_DPKG/apt-get.log"
if [ "$1" = install ]; then
    for arg in "$@"; do
        case "$arg" in -*|install) ;; *) echo "$arg" >>"$FAKE_DPKG/installed" ;; esac
    done
fi
"""


def make_os_root(root: Path) -> Path:
    """A directory that looks enough like this Debian system for useradd, systemctl and
    systemd-analyze: /etc's user database, /usr/lib/systemd/system, kill and nologin."""
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy2(Path("/etc") / name, root / "etc" / name)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for program in ("/usr/bin/kill", "/usr/sbin/nologin"):
        target = root / program.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(program, target)
    for merged in ("bin", "sbin", "lib"):  # Debian's merged /usr
        (root / merged).symlink_to(f"usr/{merged}")
    (root / "usr/lib/systemd/system").chmod(0o755)
    return root


def fake_package_tools(directory: Path) -> dict[str, str]:
    """apt-get and dpkg-query doubles in `directory`; returns the environment that uses them."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    installed = subprocess.run(["awk", "!/^[[:space:]]*(#|$)/ {print $1}", str(ROOT / "deploy/apt-packages.txt")],
                               capture_output=True, text=True, check=True).stdout.split()
    (directory / "installed").write_text("".join(f"{p}\n" for p in installed if p not in MISSING_PACKAGES))
    (directory / "apt-get.log").write_text("")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DPKG": str(directory)}


SOURCE_PARTS = ("pyproject.toml", "README.md", "LICENSE", "Makefile", "streamer", "models", "soundfonts", "systemd",
                "deploy")


def copy_source(target: Path) -> Path:
    """What a server gets from a checkout: the files the installer uses, frozen for the test (the
    installer fingerprints them, and pip builds there without touching the work tree)."""
    target.mkdir(parents=True)
    for part in SOURCE_PARTS:
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, target / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / part, target / part)
    return target


def run_installer(root: Path, env: dict[str, str], *args: str, source: Path = ROOT,
                  timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(source / "deploy" / "install.sh"), "--root", str(root), *args],
                            capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class InstalledRoot:
    def __init__(self, root: Path, source: Path, env: dict[str, str]) -> None:
        self.root = root
        self.source = source
        self.env = env
        self.fake_dpkg = Path(env["FAKE_DPKG"])
        self.first_run = self.run()

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return run_installer(self.root, self.env, *args, source=self.source)


@pytest.fixture(scope="session")
def installed_root(tmp_path_factory) -> InstalledRoot:
    """deploy/install.sh run once, for real, into a temporary root."""
    base = tmp_path_factory.mktemp("install")
    return InstalledRoot(make_os_root(base / "root"), copy_source(base / "source"),
                         fake_package_tools(base / "dpkg"))
