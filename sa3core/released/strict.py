"""Strict building of the released configs' dataclasses from JSON: unknown keys, missing required
keys and wrong types are one-line :class:`~sa3core.errors.Sa3Error`\\ s that name the key (the
released model config and the SAME autoencoder config both build through it)."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, TypeVar

from ..errors import Sa3Error

T = TypeVar("T")


def build(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from a JSON mapping. Unknown keys, missing required keys and wrong
    types are one-line :class:`Sa3Error`\\ s that name the key; nested dataclasses recurse."""
    if not isinstance(data, dict):
        raise Sa3Error(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(fields))}"
            raise Sa3Error(f"unknown key {key!r} in {where}{hint}")
    for name, spec in fields.items():
        if name not in data and spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise Sa3Error(f"{where} is missing the key {name!r}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _value(value, hints[name], f"{where}.{name}") for name, value in data.items()})


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a mapping"}
_LISTS = {int: "a list of whole numbers", float: "a list of numbers", str: "a list of texts"}


def _value(value: Any, hint: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise Sa3Error(f"{where} must be {_LISTS.get(args[0], 'a list')}, got {value!r}")
        return tuple(_value(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise Sa3Error(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise Sa3Error(f"{where} must be {_KINDS[hint]}, got {value!r}")
    return float(value) if hint is float else value
