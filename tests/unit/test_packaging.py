"""Packaging: the licence as PEP 639 declares it, a bounded build backend, and what the make targets install.

`make run` installs what playing needs and nothing else; `make test` adds the test packages and
extras and lints before the tests: the real Makefile, dry-run (`make -n -B`: every command it
would run, nothing executed).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _roles() -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {"run": [], "test": []}
    for line in (ROOT / "deploy/apt-packages.txt").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            roles[fields[1]].append(fields[0])
    return roles


def _dry_run(target: str) -> str:
    result = subprocess.run(["make", "--no-print-directory", "-n", "-B", "-C", str(ROOT), target],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _apt_packages(commands: str) -> set[str]:
    lists = re.findall(r"for p in ([^;]*); do", commands)
    assert lists, commands
    return {name for found in lists for name in found.split()}


def test_make_run_installs_only_the_run_packages_and_the_project():
    roles = _roles()
    assert roles["run"] and roles["test"]
    commands = _dry_run("run")
    assert _apt_packages(commands) == set(roles["run"])
    assert "pip install -q -e ." in commands and "[test]" not in commands
    assert commands.rstrip().splitlines()[-1].endswith("chiplofi stream")


def test_make_test_adds_the_test_packages_and_extras():
    roles = _roles()
    commands = _dry_run("test")
    assert _apt_packages(commands) == set(roles["run"]) | set(roles["test"])
    assert "pip install -q -e '.[test]'" in commands


def test_licence_is_an_spdx_string_with_its_file_and_the_build_backend_is_bounded():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # PEP 639; the TOML table form is deprecated
    for name in project["project"]["license-files"]:
        assert "MIT License" in (ROOT / name).read_text()
    (backend,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert re.fullmatch(r"setuptools>=77[.0-9]*,<\d+", backend), backend


def test_make_test_lints_before_the_tests_with_ruff_from_the_test_extras():
    commands = _dry_run("test").splitlines()
    lint = [i for i, line in enumerate(commands) if line.endswith(" -m ruff check .")]
    tests = [i for i, line in enumerate(commands) if " -m pytest " in line]
    assert len(lint) == 1 and len(tests) == 2 and lint[0] < min(tests), commands
    # The parallel run leaves out the tests that take a core; they run after it, by themselves.
    parallel, alone = (commands[i] for i in tests)
    assert " -n " in parallel and '-m "not alone"' in parallel, parallel
    assert " -n " not in alone and alone.endswith(" -m alone"), alone
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(r.startswith("ruff") for r in project["project"]["optional-dependencies"]["test"])
    assert not any(r.startswith("ruff") for r in project["project"]["dependencies"])  # `make run` stays lean
    assert {"E", "F", "B", "I", "UP", "SIM"} <= set(project["tool"]["ruff"]["lint"]["select"])
