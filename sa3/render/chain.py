"""Effect chains built from pedalboard plugins, validated before anything renders.

A chain is a list of effects, each either ``{type: NAME, param: value, ...}`` where NAME is a
pedalboard effect class (found by introspecting the ``pedalboard`` module: only ``Plugin``
subclasses that are effects, not containers or plugin hosts) and the other keys are its
constructor's keyword arguments, or ``{vst3: PATH, params: {...}, plugin_name: NAME}`` for a
third-party VST3 loaded with ``pedalboard.load_plugin``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sa3core.errors import Sa3Error
from sa3core.registry import Registry
from sa3core.timebase import SAMPLE_RATE

# Classes that hold or host other plugins, or are abstract: not effects a sheet can name.
_NOT_EFFECTS = {
    "Plugin",
    "PluginContainer",
    "Pedalboard",
    "Chain",
    "Mix",
    "ExternalPlugin",
    "VST3Plugin",
    "AudioUnitPlugin",
}
VST3_KEYS = ("vst3", "params", "plugin_name")


@functools.lru_cache(maxsize=1)
def effects() -> Registry:
    """Registry of pedalboard effect classes by class name (built on first use)."""
    import pedalboard

    registry: Registry = Registry("effect")
    for name, cls in inspect.getmembers(pedalboard, inspect.isclass):
        if name.startswith("_") or name in _NOT_EFFECTS or not issubclass(cls, pedalboard.Plugin):
            continue
        if issubclass(cls, (pedalboard.PluginContainer, pedalboard.ExternalPlugin)):
            continue
        registry.register(name)(cls)
    return registry


def _split_top_level(text: str) -> list[str]:
    """Split ``a: int, b: Union[str, int] = 1`` at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{<":
            depth += 1
        elif char in ")]}>":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


@functools.cache
def _signature(cls: type) -> tuple[tuple[str, str], ...]:
    """(name, type text) of each keyword argument of a pedalboard class's constructor.

    pybind11 classes have no ``inspect.signature``; their ``__init__`` docstring starts with
    the signature (``__init__(self: X, room_size: float = 0.5, ...) -> None``), so read it there.
    """
    doc = (cls.__init__.__doc__ or "").strip()
    open_at = doc.find("(")
    if open_at < 0:
        return ()
    depth = 0
    for i in range(open_at, len(doc)):
        depth += {"(": 1, ")": -1}.get(doc[i], 0)
        if depth == 0:
            inside = doc[open_at + 1 : i]
            break
    else:
        return ()
    out = []
    for part in _split_top_level(inside):
        name, _, rest = part.partition(":")
        name = name.split("=")[0].strip()
        if name and name not in ("self", "*args", "**kwargs"):
            out.append((name, rest.split("=")[0].strip()))
    return tuple(out)


def effect_parameters(cls: type) -> tuple[str, ...]:
    """Keyword arguments of a pedalboard class's constructor, in order."""
    return tuple(name for name, _ in _signature(cls))


def _enum_type(type_text: str) -> Any:
    """The pybind11 enum a type text such as ``pedalboard_native.LadderFilter.Mode`` names, or None."""
    import pedalboard

    parts = type_text.split(".")
    if len(parts) < 2 or not parts[0].startswith("pedalboard"):
        return None
    target: Any = pedalboard
    for attribute in parts[1:]:
        target = getattr(target, attribute, None)
        if target is None:
            return None
    return target if hasattr(target, "__members__") else None


class EffectError(Sa3Error):
    """A bad effect entry; ``key`` is the entry's key at fault (``type``, a parameter, ``vst3``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; choose from {', '.join(choices)}"


def build_effect(item: Any, base_dir: Path = Path("."), load_vst3: Callable | None = None) -> Any:
    """One pedalboard plugin from a sheet entry; Sa3Error names the bad key or value.

    ``base_dir`` resolves relative VST3 paths; ``load_vst3`` defaults to ``pedalboard.load_plugin``.
    Error messages start with the offending key so callers can point at it.
    """
    if not isinstance(item, dict):
        raise EffectError("", f"an effect must be a mapping like {{type: Reverb, room_size: 0.5}}, got {item!r}")
    if "vst3" in item:
        return _build_vst3(item, base_dir, load_vst3)
    if "type" not in item:
        raise EffectError(
            "type", "an effect needs 'type' (a pedalboard effect such as Reverb) or 'vst3' (a plugin path)"
        )
    name = item["type"]
    registry = effects()
    if not isinstance(name, str) or name not in registry:
        raise EffectError("type", f"unknown effect {name!r}{_did_you_mean(str(name), registry.names())}")
    cls = registry.get(name)
    params = {k: v for k, v in item.items() if k != "type"}
    known = list(effect_parameters(cls))
    for key in params:
        if key not in known:
            hint = _did_you_mean(key, known) if known else f"; {name} takes no parameters"
            raise EffectError(key, f"{name} has no parameter {key!r}{hint}")
    types = dict(_signature(cls))
    for key, value in params.items():
        # File parameters (Convolution's impulse response) are relative to the sheet, like sources.
        if key.endswith("_filename") and isinstance(value, str) and not Path(value).expanduser().is_absolute():
            params[key] = str(base_dir / value)
        # Enum parameters (LadderFilter's mode, Resample's quality) are written by member name.
        enum = _enum_type(types.get(key, ""))
        if enum is not None:
            members = list(enum.__members__)
            if not isinstance(value, str) or value not in members:
                close = difflib.get_close_matches(str(value), members, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise EffectError(key, f"{name} {key} {value!r} is not one of {', '.join(members)}{hint}")
            params[key] = enum.__members__[value]
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        detail = str(err).splitlines()[0]
        if isinstance(err, TypeError):
            signature = ", ".join(f"{n}: {t}" for n, t in _signature(cls))
            detail = f"{name} takes ({signature}); check each value's type"
        first = next(iter(params), "type")
        raise EffectError(first, f"{name}({_fmt_params(params)}) was refused: {detail}") from None


def _build_vst3(item: dict, base_dir: Path, load_vst3: Callable | None) -> Any:
    unknown = [k for k in item if k not in VST3_KEYS]
    if unknown:
        raise EffectError(
            unknown[0], f"a vst3 effect takes only {', '.join(VST3_KEYS)}{_did_you_mean(unknown[0], list(VST3_KEYS))}"
        )
    path = Path(str(item["vst3"])).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    params = item.get("params") or {}
    if not isinstance(params, dict):
        raise EffectError("params", f"must be a mapping of plugin parameter names to values, got {params!r}")
    if not path.exists():
        raise EffectError("vst3", f"plugin {str(path)!r} does not exist; check the path")
    if load_vst3 is None:
        import pedalboard

        load_vst3 = pedalboard.load_plugin
    try:
        return load_vst3(str(path), parameter_values=params, plugin_name=item.get("plugin_name"))
    except Exception as err:  # plugin hosts raise ImportError, RuntimeError, ValueError, ...
        detail = str(err).strip().splitlines()
        raise EffectError(
            "vst3", f"plugin {str(path)!r} did not load: {detail[-1] if detail else type(err).__name__}"
        ) from None


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def build_chain(spec: list, base_dir: Path = Path(".")) -> Any:
    """A ``pedalboard.Pedalboard`` from a validated chain spec (see :func:`build_effect`)."""
    import pedalboard

    return pedalboard.Pedalboard([build_effect(item, base_dir) for item in spec])


def process(board: Any, audio: np.ndarray) -> np.ndarray:
    """Run ``audio`` [2, samples] through ``board`` from a clean state (same length out)."""
    out = board.process(np.ascontiguousarray(audio, dtype=np.float32), float(SAMPLE_RATE), reset=True)
    if not np.isfinite(out).all():
        raise Sa3Error("the effect chain produced NaN or infinite samples; check its parameters")
    return out.astype(np.float32, copy=False)
