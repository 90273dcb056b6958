"""LoRA adapters for the HTTP contract: the ones in ``sa3 serve --lora-dir DIR``, by name.

An adapter is a ``*.safetensors`` file whose metadata carries a ``lora_config`` entry (a LoRA
file describes itself; the header is read with ``safetensors.safe_open``, nothing is unpickled
or loaded). Its name is the file's stem in lower case, as the clients send it. A file beside it,
``NAME.prompts.json`` (``{"dice": {"bucket": ["prompt", ...]}}``), gives ``/prompts`` that
adapter's own prompt ideas.

Applying adapters to a job is not wired yet: :attr:`LoraLibrary.can_apply` is False, and a job
that names an adapter with a strength other than 0 is refused with a line that says so. sa3's
LoRA library (issue #29, ``sa3core.lora``) is landing beside this; the seam for it: at start,
attach the folder's adapters that fit each served model, kept apart for per-request strengths
(``Pipeline.use_loras(stack, merge=False)``); carry the resolved ``(adapter, strength)`` pairs on
the :class:`~bridge.protocol.JobRequest` (:meth:`LoraLibrary.resolve` already maps names to
files); run the job inside ``with pipeline.lora_strengths([...])`` in :func:`bridge.render.render`
(0 for the adapters a job does not name); set ``can_apply``; re-attach on ``/reload``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from sa3core.errors import Sa3Error

log = logging.getLogger("sa3.serve")

LORA_CONFIG_KEY = "lora_config"
PROMPTS_SUFFIX = ".prompts.json"
MAX_LORAS = 16  # adapters one job may name


@dataclass(frozen=True)
class Adapter:
    index: int
    name: str  # the file's stem, lower case
    path: Path

    def as_json(self) -> dict:
        return {"index": self.index, "name": self.name, "path": str(self.path)}


@dataclass(frozen=True)
class LoraRequest:
    """One entry of a job's ``loras``: a name (lower case), a strength, the part of the sampling
    it acts in (0..1 of the schedule) and a layer filter, as the contract's clients send them."""

    name: str
    strength: float = 1.0
    interval_min: float = 0.0
    interval_max: float = 1.0
    layer_filter: str = ""

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "strength": self.strength,
            "interval": [self.interval_min, self.interval_max],
            "layer_filter": self.layer_filter,
        }


def is_adapter(path: Path) -> bool:
    """True when ``path`` is a safetensors file whose metadata has a ``lora_config`` entry."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # not a safetensors file, truncated, unreadable: not an adapter
        log.warning("skipping %s: not a readable safetensors file (%s)", path.name, type(err).__name__)
        return False
    return LORA_CONFIG_KEY in metadata


class LoraLibrary:
    """The adapters in ``folder`` (None: no folder, no adapters), read by :meth:`scan`."""

    can_apply = False  # sa3 cannot apply LoRAs to a job yet (issue #29)

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else None
        if self.folder is not None and not self.folder.is_dir():
            raise Sa3Error(f"--lora-dir {str(folder)!r} is not a folder; create it or point at the one with your LoRAs")
        self.adapters: list[Adapter] = []
        self.scan()

    def scan(self) -> list[Adapter]:
        """Read the folder again (``/reload``); returns the adapters, by name."""
        found: dict[str, Path] = {}
        if self.folder is not None:
            for path in sorted(self.folder.glob("*.safetensors"), key=lambda p: (p.name.lower(), p.name)):
                name = path.stem.lower()
                if name in found:
                    log.warning("skipping %s: another LoRA is already called %r", path.name, name)
                elif is_adapter(path):
                    found[name] = path
        self.adapters = [Adapter(i, name, path) for i, (name, path) in enumerate(found.items())]
        return self.adapters

    @property
    def names(self) -> list[str]:
        return [adapter.name for adapter in self.adapters]

    def resolve(self, requests: list[LoraRequest]) -> list[Adapter]:
        """The adapter of each request; Sa3Error naming an unknown one and the ones there are."""
        by_name = {adapter.name: adapter for adapter in self.adapters}
        for request in requests:
            if request.name not in by_name:
                there = ", ".join(by_name) if by_name else "none (start sa3 serve with --lora-dir DIR)"
                raise Sa3Error(f"unknown LoRA {request.name!r}; this server has: {there}")
        return [by_name[request.name] for request in requests]

    def prompt_pool(self, name: str) -> dict[str, list] | None:
        """The ``dice`` buckets of ``NAME.prompts.json`` in the folder, or None when there is none."""
        if self.folder is None or not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        path = self.folder / f"{name}{PROMPTS_SUFFIX}"
        try:
            dice = json.loads(path.read_text(encoding="utf-8")).get("dice")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(dice, dict):
            return None
        return {bucket: items for bucket, items in dice.items() if isinstance(bucket, str) and isinstance(items, list)}

    def pools(self) -> list[str]:
        """Names that have a prompt file in the folder."""
        if self.folder is None:
            return []
        return sorted(p.name[: -len(PROMPTS_SUFFIX)].lower() for p in self.folder.glob(f"*{PROMPTS_SUFFIX}"))


def parse_requests(body: dict) -> list[LoraRequest]:
    """A job's ``loras`` (``[{name, strength, interval_min, interval_max, layer_filter}]``; ``[]`` or
    absent: none), or the older single ``lora`` / ``lora_strength`` pair; Sa3Error naming what is wrong."""
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
        low, high = _number(entry, "interval_min", 0.0, name), _number(entry, "interval_max", 1.0, name)
        if not 0.0 <= low <= high <= 1.0:
            raise Sa3Error(
                f"LoRA {name!r}: interval_min {low:g} and interval_max {high:g} must satisfy 0 <= min <= max <= 1"
            )
        layer_filter = entry.get("layer_filter") or ""
        if not isinstance(layer_filter, str):
            raise Sa3Error(f"LoRA {name!r}: 'layer_filter' must be text")
        requests.append(LoraRequest(name, strength, low, high, layer_filter))
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
