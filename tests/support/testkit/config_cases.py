"""Every key of the config, and values each must reject, as hypothesis strategies; TOML text.

The keys and what each accepts come from the settings metadata in streamer.config (the same
metadata the validator reads): for each leaf key, values of the wrong type, outside `min`/`max`,
or outside `choices`. tests/unit/test_bad_config.py checks the validator with them and
tests/integration/test_bad_input.py runs `chiplofi config check` on a sample.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any, get_args, get_origin, get_type_hints

from hypothesis import strategies as st

from streamer.config import Config

INT64 = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Leaf:
    path: tuple[str | int, ...]  # table keys, and indexes into arrays of tables
    kind: Any
    meta: dict[str, Any]

    @property
    def key(self) -> str:
        """How errors name it: render.lead.pan, schedule.program[0].cron"""
        return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in self.path).lstrip(".")


def _optional(kind: Any) -> Any:
    """`X | None` → X (TOML has no null: such a key is given or left out)."""
    args = [arg for arg in get_args(kind) if arg is not type(None)]
    return args[0] if type(None) in get_args(kind) and len(args) == 1 else kind


def _items(kind: Any) -> tuple[Any, str | int] | None:
    """tuple[Table, ...] (an array of tables) or dict[str, Table] (named tables): (Table, a path part)."""
    args = get_args(kind)
    if get_origin(kind) is tuple and args and dataclasses.is_dataclass(args[0]):
        return args[0], 0
    if get_origin(kind) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return args[1], "fuzzed"
    return None


def leaves(cls: type = Config, path: tuple[str | int, ...] = ()) -> list[Leaf]:
    """Every scalar key of the settings tree, from the dataclass fields and their metadata."""
    hints = get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        kind = _optional(hints[f.name])
        if dataclasses.is_dataclass(kind):
            found += leaves(kind, (*path, f.name))
        elif (items := _items(kind)) is not None:
            found += leaves(items[0], (*path, f.name, items[1]))
        else:
            found.append(Leaf((*path, f.name), kind, dict(f.metadata)))
    return found


def tables(cls: type = Config, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path that must hold a table (or an array / a table of tables)."""
    hints = get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        kind = _optional(hints[f.name])
        if dataclasses.is_dataclass(kind):
            found.append((*path, f.name))
            found += tables(kind, (*path, f.name))
        elif (items := _items(kind)) is not None:
            found.append((*path, f.name))
            found.append((*path, f.name, items[1]))
            found += tables(items[0], (*path, f.name, items[1]))
    return found


def dotted(path: tuple[str | int, ...]) -> str:
    return Leaf(path, None, {}).key


LEAVES = leaves()
TABLES = tables()


# TOML's value types (no null): what a config file or a CHIPLOFI_* variable can hold.
toml_scalars = st.one_of(st.booleans(), st.integers(-INT64 - 1, INT64), st.floats(allow_nan=True),
                         st.text(max_size=30), st.datetimes(max_value=datetime.datetime(9999, 1, 1)))
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4)), max_leaves=12)


def _outside(low: float | None, high: float | None, integers: bool) -> st.SearchStrategy:
    parts = []
    number = st.integers(-INT64 - 1, INT64) if integers else st.floats(allow_nan=False, allow_infinity=True)
    if low is not None:
        parts.append(number.filter(lambda v: v < low))
    if high is not None:
        parts.append(number.filter(lambda v: v > high))
    return st.one_of(parts) if parts else st.nothing()


def invalid_values(leaf: Leaf) -> st.SearchStrategy:
    """Values `leaf` must reject, drawn from its type and metadata."""
    kind, meta = leaf.kind, leaf.meta
    choices = meta.get("choices")
    not_scalar = st.one_of(st.lists(toml_scalars, max_size=3), st.dictionaries(st.text(max_size=5), toml_scalars,
                                                                               max_size=3))
    if kind is bool:
        return st.one_of(toml_values.filter(lambda v: not isinstance(v, bool)))
    if get_origin(kind) is tuple:  # a list of strings
        return st.one_of(toml_scalars, st.dictionaries(st.text(max_size=5), toml_scalars, min_size=1, max_size=3),
                         st.lists(toml_scalars, min_size=1, max_size=4).filter(
                             lambda v: not all(isinstance(item, str) for item in v)))
    if kind is str:
        wrong_type = st.one_of(st.booleans(), st.integers(), st.floats(), st.datetimes(), not_scalar)
        return st.one_of(wrong_type, st.text(max_size=20).filter(lambda v: v not in choices)) if choices \
            else wrong_type
    wrong_type = st.one_of(st.booleans(), st.text(max_size=20), st.datetimes(), not_scalar)
    if kind is int:
        wrong_type = st.one_of(wrong_type, st.floats())  # 3.0 is a float in TOML, not an integer
        if choices:
            return st.one_of(wrong_type, st.integers(-INT64 - 1, INT64).filter(lambda v: v not in choices))
        return st.one_of(wrong_type, _outside(meta.get("min"), meta.get("max"), integers=True))
    assert kind is float, leaf
    return st.one_of(wrong_type, st.sampled_from([math.nan, math.inf, -math.inf]),
                     _outside(meta.get("min"), meta.get("max"), integers=False),
                     _outside(meta.get("min"), meta.get("max"), integers=True))


def nest(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    for part in reversed(path):
        value = [value] if isinstance(part, int) else {part: value}
    return value


@st.composite
def leaf_and_invalid_value(draw: st.DrawFn) -> tuple[Leaf, Any]:
    leaf = draw(st.sampled_from(LEAVES))
    return leaf, draw(invalid_values(leaf))


def toml(value: Any) -> str:
    """A TOML value (inline tables and arrays; strings as basic strings with every escape)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08X}" for c in value) + '"'
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml(str(k))} = {toml(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    """One line per top-level key, nested tables and arrays of tables inline."""
    return "".join(f"{toml(str(key))} = {toml(value)}\n" for key, value in document.items())
