"""The LoRA folder of ``sa3 serve``: the adapters it holds, by name, and which served models each fits.

One folder per server (``--lora-dir DIR``, else :func:`sa3core.lora.default_lora_dir`), shared by
both front ends (ZeroMQ ``capabilities.loras``, HTTP ``/loras``) and by tools that list it. An
adapter is a ``*.safetensors`` file whose metadata has a ``lora_config`` entry (the header tells,
nothing is unpickled); its name is the file's stem in lower case, as clients send it, and names
match in any case. :meth:`LoraFolder.scan` reads each adapter once (:func:`sa3core.lora.read_lora`:
the format, its rank and type) and checks it against every served model
(:func:`sa3core.lora.check_fit`, which changes nothing), keeping the one line that says why it
does not fit where it does not; the tensors are not kept (a job's swap reads its files again).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sa3core.errors import Sa3Error

log = logging.getLogger("sa3.serve")

LORA_CONFIG_KEY = "lora_config"


@dataclass(frozen=True)
class FolderLora:
    """One adapter of the folder. ``rank`` and ``adapter_type`` are None, and ``problem`` says
    why, for a file sa3 cannot use at all; ``misfits`` maps each served model it does not fit to
    the library's one line (the layer and both shapes)."""

    index: int
    name: str  # the file's stem, lower case
    path: Path
    rank: int | None = None
    adapter_type: str | None = None
    fits: tuple[str, ...] = ()  # served models it adapts, in serving order
    misfits: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def describe(self) -> dict[str, Any]:
        """As ``capabilities.loras`` lists it (docs/protocol.md 4.1)."""
        return {
            "name": self.name,
            "file": self.path.name,
            "rank": self.rank,
            "adapter_type": self.adapter_type,
            "fits": list(self.fits),
        }

    def why_not(self, model: str) -> str | None:
        """None when it can run on ``model``; else one line that says why not."""
        if self.problem is not None:
            return f"LoRA {self.name!r} cannot be used: {self.problem}"
        if model in self.fits:
            return None
        reason = self.misfits.get(model, f"LoRA {self.name!r} was not checked against this model")
        return f"on model {model!r}: {reason}"


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


def check_folder(folder: str | Path | None, flag: str = "--lora-dir") -> Path | None:
    """``folder`` as a Path (None stays None); an Sa3Error when it is not a folder."""
    if folder is None:
        return None
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise Sa3Error(f"{flag} {str(folder)!r} is not a folder; create it or point at the one with your LoRAs")
    return path


class LoraFolder:
    """``LoraFolder(folder, models)``: the adapters in ``folder`` (None: no folder, no adapters),
    checked against ``models`` (served name -> Pipeline; may be empty). Read at construction and
    again by :meth:`scan`."""

    def __init__(self, folder: str | Path | None, models: Mapping[str, Any] | None = None) -> None:
        self.folder = check_folder(folder)
        self.models = dict(models or {})
        self.adapters: list[FolderLora] = []
        self.scan()

    def scan(self) -> list[FolderLora]:
        """Read the folder again and check every adapter against every model; returns the adapters
        by name. The list is replaced at once, so readers on other threads see the old or the new."""
        from sa3core.lora import check_fit, read_lora

        found: dict[str, Path] = {}
        if self.folder is not None:
            for path in sorted(self.folder.glob("*.safetensors"), key=lambda p: (p.stem.lower(), p.name)):
                name = path.stem.lower()
                if name in found:
                    log.warning("skipping %s: another LoRA is already called %r", path.name, name)
                elif is_adapter(path):
                    found[name] = path
        adapters = []
        for index, (name, path) in enumerate(found.items()):
            try:
                lora = read_lora(path)
            except Sa3Error as err:
                log.warning("LoRA %s cannot be used: %s", path.name, err)
                adapters.append(FolderLora(index, name, path, problem=str(err)))
                continue
            fits, misfits = [], {}
            for model, pipeline in self.models.items():
                try:
                    check_fit(pipeline, lora)
                    fits.append(model)
                except Sa3Error as err:
                    misfits[model] = str(err)
            config = lora.config
            adapters.append(FolderLora(index, name, path, config.rank, config.adapter_type, tuple(fits), misfits))
        self.adapters = adapters
        return adapters

    @property
    def names(self) -> list[str]:
        return [adapter.name for adapter in self.adapters]

    def find(self, name: str) -> FolderLora | None:
        """The adapter called ``name`` (any case), or None."""
        wanted = name.strip().lower()
        return next((adapter for adapter in self.adapters if adapter.name == wanted), None)

    def unknown(self, name: str) -> str:
        """The one line for a name the folder has not: it and the adapters there are."""
        shown = name if len(name) <= 80 else name[:77] + "..."
        if not self.adapters:
            where = (
                "this server has no LoRA folder" if self.folder is None else f"its LoRA folder {self.folder} is empty"
            )
            return f"unknown LoRA {shown!r}: {where} (start sa3 serve with --lora-dir DIR)"
        return f"unknown LoRA {shown!r}; this server has: {', '.join(self.names)}"

    def summary(self) -> str:
        """One line for the server's start: the folder, its adapters, and those that fit no model."""
        if self.folder is None:
            return "no LoRA folder (--lora-dir DIR, or SA3_LORA_DIR)"
        unfit = [a.name for a in self.adapters if not a.fits]
        tail = f"; fitting no served model: {', '.join(unfit)}" if unfit and self.models else ""
        return f"LoRA folder {self.folder}: {len(self.adapters)} adapter(s){tail}"
