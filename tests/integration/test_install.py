"""deploy/install.sh for real against a temporary root (see conftest.py): what lands where with
which owner and mode, a second run that changes nothing, an operator's config and key kept,
--uninstall and --purge; and shellcheck over every shell script of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, fake_package_tools, make_os_root, run_installer

pytestmark = pytest.mark.integration

UNITS = ("chiplofi.service", "chiplofi@.service")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its type, mode, owner, size, mtime and link target."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            link = os.readlink(path) if path.is_symlink() else None
            entries[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, info.st_size,
                                                    info.st_mtime_ns, link)
    return entries


def account(root: Path, database: str, name: str) -> list[str] | None:
    """The fields of `name`'s line in the root's /etc/passwd or /etc/group, if any."""
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def passwd_entry(root: Path, name: str) -> list[str] | None:
    return account(root, "passwd", name)


def group_entry(root: Path, name: str) -> list[str] | None:
    return account(root, "group", name)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def run_packages(source: Path) -> list[str]:
    lines = (source / "deploy/apt-packages.txt").read_text().splitlines()
    rows = [line.split("#")[0].split() for line in lines]
    return [row[0] for row in rows if len(row) >= 2 and row[1] == "run"]


def test_help_and_bad_arguments(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "deploy/install.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--start", "--uninstall", "--purge", "--root", "--no-apt", "--no-systemctl"):
        assert option in result.stdout
    for args, message in ((["--bogus"], "unknown option '--bogus'"),
                          (["--purge"], "--purge only goes with --uninstall"),
                          (["--root", str(tmp_path / "nowhere")], "no such directory"),
                          (["--root", str(tmp_path), "--start"], "--start needs the real root")):
        result = subprocess.run(["bash", str(ROOT / "deploy/install.sh"), *args], capture_output=True, text=True)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written on an error


def test_install_lays_out_venv_user_config_and_units(installed_root):
    root, source = installed_root.root, installed_root.source
    # Only the missing packages a server needs, never the test tools.
    assert (installed_root.fake_dpkg / "apt-get.log").read_text().splitlines() == [
        "apt-get update -qq", "apt-get install -y -qq --no-install-recommends libportaudio2 ffmpeg"]
    assert set(run_packages(source)) >= {"libportaudio2", "ffmpeg", "libfluidsynth3"}

    # The virtual environment: torch as pinned in the Makefile, and the working program.
    venv = installed_root.path("/opt/chiplofi/venv")
    pin = next(line.split(":=")[1].strip() for line in (source / "Makefile").read_text().splitlines()
               if line.startswith("TORCH_PIN"))
    version = subprocess.run([str(venv / "bin/python"), "-c",
                              "import importlib.metadata as m; print(m.version('torch'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert pin == f"torch=={version.split('+')[0]}"  # 2.13.0+cpu
    help_text = subprocess.run([str(venv / "bin/chiplofi"), "stream", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert "--config" in help_text

    # The service user: a system account without a login, in the audio group.
    user = passwd_entry(root, "chiplofi")
    group = group_entry(root, "chiplofi")
    assert user and group and int(user[2]) < 1000 and user[3] == group[2]
    assert user[5:] == ["/var/lib/chiplofi", "/usr/sbin/nologin"]
    assert "chiplofi" in group_entry(root, "audio")[3].split(",")

    # /etc/chiplofi: the example config, readable by the service; the key file for root only.
    etc = installed_root.path("/etc/chiplofi")
    assert mode(etc) == 0o750 and (etc.stat().st_uid, etc.stat().st_gid) == (0, int(group[2]))
    config = etc / "chiplofi.toml"
    assert config.read_text() == (source / "deploy/config.example.toml").read_text()
    assert mode(config) == 0o640 and (config.stat().st_uid, config.stat().st_gid) == (0, int(group[2]))
    env_file = etc / "chiplofi.env"
    assert mode(env_file) == 0o600 and (env_file.stat().st_uid, env_file.stat().st_gid) == (0, 0)
    assert "CHIPLOFI_STREAM_KEY=" in env_file.read_text().splitlines()
    checked = subprocess.run([str(venv / "bin/chiplofi"), "config", "check", str(config)], capture_output=True,
                             text=True)
    assert checked.returncode == 0 and "stream key: not set" in checked.stdout, checked.stderr

    # The units, as in the repository, and the single-channel one enabled.
    for unit in UNITS:
        installed = installed_root.path(f"/etc/systemd/system/{unit}")
        assert installed.read_text() == (source / "systemd" / unit).read_text() and mode(installed) == 0o644
    wants = installed_root.path("/etc/systemd/system/multi-user.target.wants/chiplofi.service")
    assert os.readlink(wants) == "/etc/systemd/system/chiplofi.service"
    assert installed_root.path("/opt/chiplofi/README.md").read_text() == (source / "README.md").read_text()


def test_a_second_run_changes_nothing(installed_root):
    before = snapshot(installed_root.root)
    result = installed_root.run()
    assert snapshot(installed_root.root) == before
    assert result.stdout.splitlines() == ["install.sh: done"], result.stdout
    assert len((installed_root.fake_dpkg / "apt-get.log").read_text().splitlines()) == 2  # no new apt-get call


def test_an_operators_config_and_key_are_kept(installed_root):
    config = installed_root.path("/etc/chiplofi/chiplofi.toml")
    env_file = installed_root.path("/etc/chiplofi/chiplofi.env")
    original_config, original_env = config.read_text(), env_file.read_text()
    try:
        config.write_text('[stream]\nseed = 7\n')
        env_file.write_text("CHIPLOFI_STREAM_KEY=operator-key-123\n")
        installed_root.run()
        assert config.read_text() == '[stream]\nseed = 7\n'
        assert env_file.read_text() == "CHIPLOFI_STREAM_KEY=operator-key-123\n" and mode(env_file) == 0o600
    finally:
        config.write_text(original_config)
        env_file.write_text(original_env)


def test_uninstall_keeps_config_and_recordings_and_purge_removes_everything(installed_root, tmp_path):
    # A root of its own, whose venv is a hard-linked copy of the installed one (same source, so
    # the installer keeps it instead of building another): this test may take it apart.
    root = make_os_root(tmp_path / "root")
    source = installed_root.source
    env = fake_package_tools(tmp_path / "dpkg")
    (root / "opt").mkdir()
    subprocess.run(["cp", "-al", str(installed_root.path("/opt/chiplofi")), str(root / "opt")], check=True)
    assert "installed chiplofi into" not in run_installer(root, env, "--no-apt", source=source).stdout
    assert (tmp_path / "dpkg/apt-get.log").read_text() == ""  # --no-apt: not even asked
    instance_link = root / "etc/systemd/system/multi-user.target.wants/chiplofi@radio2.service"
    instance_link.symlink_to("/etc/systemd/system/chiplofi@.service")  # as `systemctl enable chiplofi@radio2`
    recording = root / "var/lib/chiplofi/radio2/recordings/chiplofi-20260101-000000.mkv"
    recording.parent.mkdir(parents=True)
    recording.write_bytes(b"\x1a\x45\xdf\xa3")
    config = root / "etc/chiplofi/chiplofi.toml"

    result = run_installer(root, env, "--uninstall", source=source)
    for unit in UNITS:
        assert not (root / "etc/systemd/system" / unit).exists()
    assert not list((root / "etc/systemd/system").glob("*.wants/chiplofi*"))  # every instance disabled
    assert not (root / "opt/chiplofi").exists()
    assert config.exists() and recording.exists() and passwd_entry(root, "chiplofi")
    assert "kept" in result.stdout
    assert installed_root.path("/opt/chiplofi/venv/bin/chiplofi").exists()  # the hard links only

    run_installer(root, env, "--uninstall", "--purge", source=source)
    assert not (root / "etc/chiplofi").exists() and not (root / "var/lib/chiplofi").exists()
    assert passwd_entry(root, "chiplofi") is None and group_entry(root, "chiplofi") is None
    assert "chiplofi" not in group_entry(root, "audio")[3].split(",")
    run_installer(root, env, "--uninstall", source=source)  # nothing left: still fine


def test_shell_scripts_are_shellcheck_clean():
    assert shutil.which("shellcheck"), "shellcheck missing: run make setup"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    scripts = [name for name in tracked if name.endswith(".sh") or _has_shell_shebang(ROOT / name)]
    scripts += [] if "deploy/install.sh" in scripts else ["deploy/install.sh"]
    assert {"deploy/install.sh", ".ci/run"} <= set(scripts)
    result = subprocess.run(["shellcheck", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _has_shell_shebang(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            first = handle.readline(100)
    except OSError:
        return False
    return first.startswith(b"#!") and any(shell in first for shell in (b"/sh", b"bash"))
