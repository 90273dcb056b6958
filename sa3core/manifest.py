"""The export manifest: the contract between an exported folder and whoever runs it (reading it;
``export.manifest`` writes it).

``manifest.json`` sits next to the exported files and says, as data (no code):
- ``format``: :data:`EXPORT_FORMAT`; readers refuse any other value.
- ``runtime``: ``"onnx"`` or ``"coreml"``; ``opset`` (ONNX) or ``minimum_target`` (CoreML).
- ``model``: the model folder's ``model.json`` settings; ``dit`` / ``same``: the part configs.
- ``timebase``: sample rate, samples per latent frame, latent channels (so a C++ or Swift host
  never re-derives them).
- ``codec``: how the backend chunks long audio (``chunk_frames``, ``receptive_frames``).
- ``semitones``: where the latents hold measured semitone energies (``low_note``, per channel
  ``mean`` and ``std`` of the normaliser), for the scale lock (:mod:`sa3core.scale_lock`);
  empty for an autoencoder without them.
- ``parts``: one entry per file: ``file``, ``inputs`` and ``outputs`` (name, dtype, shape
  with symbolic axes such as ``"batch"`` and ``"frames"``, units), and the largest difference
  from torch that the export's self-check measured.
- ``tolerance``: the largest absolute difference from torch the self-check accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import timebase
from .config import from_dict
from .errors import Sa3Error

EXPORT_FORMAT = 1
MANIFEST_NAME = "manifest.json"


@dataclass
class TensorSpec:
    """One graph input or output. ``shape`` holds ints (fixed) or axis names (dynamic)."""

    name: str
    dtype: str
    shape: list[Any]
    units: str = ""


@dataclass
class PartSpec:
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    checked_max_abs_diff: float = -1.0  # measured by the export's self-check; -1 = not checked (no runtime here)


@dataclass
class Manifest:
    runtime: str
    model: dict[str, Any]
    dit: dict[str, Any]
    same: dict[str, Any]
    parts: dict[str, PartSpec]
    codec: dict[str, int | None]
    format: int = EXPORT_FORMAT
    opset: int = 0
    minimum_target: str = ""
    tolerance: float = 0.0
    timebase: dict[str, int] = field(
        default_factory=lambda: {
            "sample_rate": timebase.SAMPLE_RATE,
            "samples_per_frame": timebase.SAMPLES_PER_FRAME,
            "latent_channels": timebase.LATENT_CHANNELS,
            "channels": timebase.CHANNELS,
        }
    )
    versions: dict[str, str] = field(default_factory=dict)
    semitones: dict[str, Any] = field(default_factory=dict)


def read_manifest(folder: str | Path, runtime: str | None = None) -> Manifest:
    """Read and check ``folder/manifest.json``; Sa3Error for a missing file, bad JSON, another
    format version or another runtime."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        raise Sa3Error(f"{str(folder)!r} has no {MANIFEST_NAME}; export the model first with `sa3 export onnx`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise Sa3Error(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise Sa3Error(
            f"{str(path)!r} has export format {found!r}; this sa3 reads format {EXPORT_FORMAT} (re-export the model)"
        )
    parts = {}
    for name, part in dict(data.pop("parts", {}) or {}).items():
        where = f"{path} parts.{name}"
        tensors = {
            key: [from_dict(TensorSpec, t, where=f"{where}.{key}") for t in part.get(key, [])]
            for key in ("inputs", "outputs")
        }
        parts[name] = from_dict(PartSpec, {**part, **tensors}, where=where)
    manifest = from_dict(Manifest, {**data, "parts": {}}, where=str(path))
    manifest.parts = parts
    if runtime is not None and manifest.runtime != runtime:
        raise Sa3Error(f"{str(folder)!r} holds a {manifest.runtime!r} export, not {runtime!r}; export it for {runtime}")
    return manifest
