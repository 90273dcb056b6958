"""Typed configs: dataclasses whose fields are the constructor's arguments.

Defaults live only in the dataclass. Files (YAML or JSON) hold overrides; an unknown key is
an error that names it, with the close matches, so a misspelling never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import Sa3Error

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise Sa3Error(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(fields))}"
        raise Sa3Error(f"unknown key {key!r} in {where}{hint}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{name}")
        else:
            value = _coerce(value, hint, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def from_attributes(cls: type[T], source: Any, **given: Any) -> T:
    """A ``cls`` dataclass whose fields come from ``source``'s attributes of the same names (for
    instance parsed command-line arguments), except those in ``given``; fields ``source`` lacks
    keep their defaults."""
    values = {f.name: getattr(source, f.name) for f in dataclasses.fields(cls) if hasattr(source, f.name)}
    return cls(**(values | given))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check simple scalar types (and lists -> tuples); leave anything fancier to the class."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise Sa3Error(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Sa3Error(f"{where} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Sa3Error(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise Sa3Error(f"{where} must be text, got {value!r}")
        return value
    if (hint is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file of overrides."""
    path = Path(path)
    if not path.exists():
        raise Sa3Error(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise Sa3Error(f"config file {str(path)!r}{line} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Sa3Error(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
