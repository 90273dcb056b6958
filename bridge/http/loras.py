"""LoRA adapters for the HTTP contract: the server's LoRA folder (:class:`bridge.loras.LoraFolder`,
shared with the ZeroMQ side), the contract's ``loras`` field, and the folder's prompt ideas.

A job's ``loras`` (or the older ``lora`` + ``lora_strength``) become the request's (name, strength)
pairs; the engine resolves the names and runs the job with exactly those adapters, in order
(bridge/engine.py). The contract's per-adapter ``interval_min``/``interval_max`` (a part of the
noise schedule) and ``layer_filter`` have no counterpart in sa3's LoRA library (docs/lora.md: not
implemented from the official inference UI), so a value other than the default is refused (400)
rather than ignored. A file beside an adapter, ``NAME.prompts.json``
(``{"dice": {"bucket": ["prompt", ...]}}``), gives ``/prompts`` that adapter's own prompt ideas.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from sa3core.errors import Sa3Error

from .. import protocol as P
from ..loras import FolderLora

PROMPTS_SUFFIX = ".prompts.json"
MAX_LORAS = P.MAX_LORAS  # adapters one job may name, as on the ZeroMQ side
DEFAULT_FILTERS = ("", "all")  # layer_filter values that select every layer: the only ones sa3 takes


def listing(adapter: FolderLora) -> dict:
    """An adapter as ``/loras`` and ``/health`` list it: the contract's index, name and path, and
    sa3's rank, adapter type and the served models it fits."""
    return {
        "index": adapter.index,
        "name": adapter.name,
        "path": str(adapter.path),
        "rank": adapter.rank,
        "adapter_type": adapter.adapter_type,
        "fits": list(adapter.fits),
    }


@dataclass(frozen=True)
class LoraRequest:
    """One entry of a job's ``loras``: a name (lower case) and a strength (-2..2), as the
    contract's clients send them."""

    name: str
    strength: float = 1.0

    def as_json(self) -> dict:
        return {"name": self.name, "strength": self.strength, "interval": [0.0, 1.0], "layer_filter": ""}


def prompt_pool(folder: Path | None, name: str) -> dict[str, list] | None:
    """The ``dice`` buckets of ``NAME.prompts.json`` in ``folder``, or None when there is none."""
    if folder is None or not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = folder / f"{name}{PROMPTS_SUFFIX}"
    try:
        dice = json.loads(path.read_text(encoding="utf-8")).get("dice")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(dice, dict):
        return None
    return {bucket: items for bucket, items in dice.items() if isinstance(bucket, str) and isinstance(items, list)}


def pools(folder: Path | None) -> list[str]:
    """Names that have a prompt file in ``folder``."""
    if folder is None:
        return []
    return sorted(p.name[: -len(PROMPTS_SUFFIX)].lower() for p in folder.glob(f"*{PROMPTS_SUFFIX}"))


def parse_requests(body: dict) -> list[LoraRequest]:
    """A job's ``loras`` (``[{name, strength, interval_min, interval_max, layer_filter}]``; ``[]`` or
    absent: none), or the older single ``lora`` / ``lora_strength`` pair; Sa3Error naming what is
    wrong (a strength outside -2..2, a name twice, an interval or layer filter sa3 cannot apply)."""
    entries = body.get("loras")
    if entries is None:
        single = body.get("lora")
        if single is None or (isinstance(single, str) and single.strip().lower() in ("", "none")):
            return []
        entries = [{"name": single, "strength": body.get("lora_strength", 1.0)}]
    if not isinstance(entries, list):
        raise Sa3Error("field 'loras' must be a list of {name, strength} objects ([] for none)")
    if len(entries) > MAX_LORAS:
        raise Sa3Error(f"field 'loras' names {len(entries)} LoRAs; the limit is {MAX_LORAS}")
    requests = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise Sa3Error("each entry of 'loras' must be an object with a 'name'")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Sa3Error("each entry of 'loras' needs a 'name' (text)")
        name = name.strip().lower()
        strength = _number(entry, "strength", 1.0, name)
        if abs(strength) > P.MAX_LORA_STRENGTH:
            raise Sa3Error(f"LoRA {name!r}: strength {strength:g} is outside -2..2; use -2 to 2 (1 = as trained)")
        low, high = _number(entry, "interval_min", 0.0, name), _number(entry, "interval_max", 1.0, name)
        if not 0.0 <= low <= high <= 1.0:
            raise Sa3Error(
                f"LoRA {name!r}: interval_min {low:g} and interval_max {high:g} must satisfy 0 <= min <= max <= 1"
            )
        if (low, high) != (0.0, 1.0):
            raise Sa3Error(
                f"LoRA {name!r}: interval_min {low:g} / interval_max {high:g}: sa3 applies an adapter for the whole "
                "sampling, not part of it; send 0 and 1 (or leave them out)"
            )
        layer_filter = entry.get("layer_filter") or ""
        if not isinstance(layer_filter, str):
            raise Sa3Error(f"LoRA {name!r}: 'layer_filter' must be text")
        if layer_filter.strip().lower() not in DEFAULT_FILTERS:
            raise Sa3Error(
                f"LoRA {name!r}: layer_filter {layer_filter[:40]!r}: sa3 applies an adapter to every layer its file "
                'adapts; send "" (or leave it out)'
            )
        if any(seen.name == name for seen in requests):
            raise Sa3Error(f"field 'loras' names {name!r} twice; give each LoRA once")
        requests.append(LoraRequest(name, strength))
    return requests


def _number(entry: dict, key: str, default: float, name: str) -> float:
    value = entry.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise Sa3Error(f"LoRA {name!r}: {key!r} must be a number, got {value[:20]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Sa3Error(f"LoRA {name!r}: {key!r} must be a finite number")
    return float(value)
