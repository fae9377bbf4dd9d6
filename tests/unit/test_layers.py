"""The import rules of README's Layout, checked on the source: every import statement counts,
also the ones inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streamer", "models", "soundfonts")

# The shared base: torch-free modules that import nothing of the project but each other, so every
# layer may import them: the root of the one exception hierarchy, the quietly imported MIDI and
# synthesizer libraries, the voice table, the MIDI writer and the token and key vocabulary it
# writes with (models.tokens, models.theory).
BASE = {"models.errors", "models.midi_lib", "models.voices", "models.midi_write", "models.tokens", "models.theory"}
# What `streamer` may use of `models` beyond the base: the composer wrapper runs the trained
# models (numpy inference, checkpoints read without torch), the CLI registers the model commands
# (which import torch only when they run).
STREAMER_USES_MODELS = {
    "streamer.composer": {"models.checkpoint", "models.composer"},
    "streamer.cli": {"models.commands", "models.evaluate"},
    "streamer.fallback": {"models.rule_parts"},  # the rule-based parts, numpy only, as the stream's bars
    "streamer.outputs": {"models.checkpoint"},  # read_regular_file: the key file is read as cards are (bounded)
}
# Cycles there are, each to be broken; the test fails on any other cycle, and on one of these
# once it is gone (then strike it here).
KNOWN_CYCLES = [
    {"streamer.video", "streamer.video_files"},  # video_files imports parse_size/preset_of lazily
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements under `if TYPE_CHECKING:` (for annotations only, never run)."""
    return {node for block in ast.walk(tree) if isinstance(block, ast.If)
            and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
            for statement in block.body for node in ast.walk(statement)}


@cache
def import_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    """module → the project modules it imports (anywhere in the file), from the AST; with
    `runtime_only`, leaving out the imports under `if TYPE_CHECKING:`."""
    raw: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            names: set[str] = set()
            tree = ast.parse(path.read_text(), str(path))
            skipped = _type_only(tree) if runtime_only else set()
            for node in ast.walk(tree):
                if node in skipped:
                    continue
                elif isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
                    names.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    raise AssertionError(f"{path}: relative import; the rules below read absolute ones")
            raw[_module_name(path)] = {name for name in names if name.split(".")[0] in PACKAGES}
    modules = set(raw)

    def resolve(name: str) -> str:  # `from models import checkpoint` → models.checkpoint
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    return {module: {resolve(name) for name in names} - {module} for module, names in raw.items()}


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_sees_every_package_and_lazy_imports():
    graph = import_graph()
    assert set(PACKAGES) == {_layer(m) for m in graph}
    assert "models.composer" in graph["streamer.composer"]  # imported inside a function


def test_models_never_import_streamer_or_soundfonts():
    wrong = {(m, d) for m, deps in import_graph().items() if _layer(m) == "models"
             for d in deps if _layer(d) != "models"}
    assert not wrong


def test_soundfonts_import_only_the_base():
    wrong = {(m, d) for m, deps in import_graph().items() if _layer(m) == "soundfonts"
             for d in deps if _layer(d) != "soundfonts" and d not in BASE}
    assert not wrong


def test_the_base_imports_nothing_above_it():
    graph = import_graph()
    assert set(graph) >= BASE
    wrong = {(m, d) for m in BASE for d in graph[m] if d not in BASE}
    assert not wrong


def test_streamer_uses_only_the_allowed_models_modules():
    wrong = {(m, d) for m, deps in import_graph().items() if _layer(m) == "streamer"
             for d in deps if _layer(d) == "models" and d not in BASE | STREAMER_USES_MODELS.get(m, set())}
    assert not wrong


def test_the_daemon_is_the_top_of_the_stream_only_the_cli_imports_it():
    """streamer.daemon wires the parts; a part importing it (at run time) would wire itself back in."""
    importers = {m for m, deps in import_graph(runtime_only=True).items() if "streamer.daemon" in deps}
    assert importers == {"streamer.cli"}


def test_no_import_cycles_but_the_known_ones():
    graph = import_graph(runtime_only=True)
    # Tarjan's strongly connected components: a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for dep in graph[module]:
            if dep not in index:
                visit(dep)
                low[module] = min(low[module], low[dep])
            elif dep in stack:
                low[module] = min(low[module], index[dep])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert sorted(map(sorted, cycles)) == sorted(map(sorted, KNOWN_CYCLES))


# Import every streamer module, build the default effects chain and load the shipped composer,
# then list what must stay out of a stream: torch (most of the stream's memory) and scipy.signal
# (over a second of CPU between start and first audio).
STREAM_PATH = """
import importlib, pkgutil, sys
import streamer
for info in pkgutil.walk_packages(streamer.__path__, "streamer."):
    importlib.import_module(info.name)
from streamer.config import Config
from streamer.effects import EffectsChain
from streamer.composer import load_composer
EffectsChain.from_settings(Config().effects, 44100, seed=0)
composer = load_composer("", seed=0)  # the shipped models
bar = composer.next_bar()
print(sorted(name for name in ("torch", "scipy.signal") if name in sys.modules))
"""


def test_the_stream_path_imports_neither_torch_nor_scipy_signal():
    result = subprocess.run([sys.executable, "-c", STREAM_PATH], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
