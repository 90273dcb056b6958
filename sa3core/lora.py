"""LoRA adapters for every model family: the file format, the adapter math, stacking and strengths.

**The file** (the official Stable Audio 3 format; ``docs/lora.md``): safetensors whose metadata
``lora_config`` is JSON ``{rank, alpha, adapter_type, dropout, include, exclude}`` and whose tensors
(float16 as written) are named ``<layer>.parametrizations.weight.0.<param>``, where ``<layer>`` is a
module name under one of the family's *roots* (key prefix -> module; the released family:
``model.`` -> the DiT, ``conditioners.`` -> the conditioners). Keys the file leaves out of
``lora_config`` take the official loader's values (``adapter_type`` "lora", ``rank`` from the
tensors, ``alpha`` = rank); the legacy type "dora" is read as the official loader reads it. A
file's ``include`` / ``exclude`` patterns (substrings, ``[a-b]`` ranges expanded) select the
Linear and Conv1d layers it adapts; the file must hold exactly those layers. Pickled ``.ckpt``
files are refused: sa3 never unpickles.

**The math** (W the base weight as [out, in*kernel], c = alpha / rank, s the strength,
D = B·A, or U·M_xs·Vᵀ for the ``-xs`` types, U and V the top-``rank`` singular vectors of the base
weight with each U column's largest-magnitude entry positive, recomputed when first used):
``lora``/``lora-xs`` give W + c·s·D; ``dora-rows(-xs)`` scale each row of V = W + c·s·D to unit
norm (+1e-12) and then by ``magnitude``; ``dora-cols(-xs)`` the same per column; ``bora(-xs)``
rows by ``magnitude_r``, then columns by ``magnitude_c``. Files stack in order, each adapting the
previous one's result (order matters for the DoRA family); -xs bases always come from the base.
A strength of 0 leaves a file out entirely (the official DoRA rule, here for every type), so
strengths of 0 give the base model bit for bit.

**Merged or not.** :meth:`LoraStack.attach` with ``merge=True`` writes the adapted weights into
the modules once, computed as the official parametrization computes them: no cost per step, and
the strengths are fixed. ``merge=False`` keeps the base weights and the adapters apart: each
adapted layer computes ``W x`` plus the low-rank terms on its input (DoRA's row and column
scales are vectors, worked out once per strength setting), so strengths can change per request
(:meth:`LoraStack.using`) at a small cost per step and no copy of the weights. The two agree to
float rounding. The layers that compute all this are :mod:`sa3core.modules.lora`.

API (what the pipeline uses; :meth:`sa3core.pipeline.Pipeline.use_loras`):

    stack = LoraStack.read([("style.safetensors", 0.7), ("drums.safetensors", 1.0)])
    stack.attach({"model.": dit, "conditioners.": conditioners}, merge=False)
    with stack.using([0.5, 1.0]):   # this request's strengths, one per file, each in [-2, 2]
        ...                          # the adapted modules run with them; restored afterwards
    save_lora(path, layers, config)  # a file the official loader reads (training writes these)

``using`` changes state shared by the adapted modules: one request at a time per stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import Sa3Error
from .modules.lora import ADAPTED, ADAPTER_TYPES, AdaptedWeight, Adapter, AdapterType

MAX_STRENGTH = 2.0
CONFIG_KEY = "lora_config"
_KEY = re.compile(r"(?P<layer>.+)\.parametrizations\.weight\.(?P<index>\d+)\.(?P<param>[A-Za-z_]+)")
_PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}
_PICKLE_MAGIC = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))  # pickle protocols 2-5
_CONFIG_FIELDS = ("rank", "alpha", "adapter_type", "dropout", "include", "exclude")


# ----------------------------------------------------------------------------- config and file
def expand_pattern(pattern: str) -> list[str]:
    """``"layers.[0-2].ff"`` -> ``["layers.0.ff", "layers.1.ff", "layers.2.ff"]``; ranges are
    inclusive, may count down, and several multiply out."""
    parts = re.split(r"\[(\d+)-(\d+)\]", pattern)
    pools = []
    for first, last in zip(parts[1::3], parts[2::3]):
        first, last = int(first), int(last)
        step = 1 if last >= first else -1
        pools.append([str(n) for n in range(first, last + step, step)])
    return ["".join(lit + num for lit, num in zip(parts[0::3], (*combo, ""))) for combo in product(*pools)]


def _matches(layer: str, patterns: tuple[str, ...]) -> bool:
    return any(p in layer for pattern in patterns for p in expand_pattern(pattern.strip()))


@dataclass(frozen=True)
class LoraConfig:
    """A file's ``lora_config``. ``include`` None selects every Linear/Conv1d layer, a tuple those
    whose name contains one of its patterns; ``exclude`` then drops matches. ``dropout`` only
    matters in training."""

    rank: int
    alpha: float
    adapter_type: str
    dropout: float = 0.0
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None

    @property
    def kind(self) -> AdapterType:
        return ADAPTER_TYPES[self.adapter_type]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def selects(self, layer: str) -> bool:
        if self.include is not None and not _matches(layer, self.include):
            return False
        return self.exclude is None or not _matches(layer, self.exclude)

    def to_json(self) -> dict:
        lists = {k: None if v is None else list(v) for k, v in (("include", self.include), ("exclude", self.exclude))}
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "adapter_type": self.adapter_type,
            "dropout": self.dropout,
        } | lists

    @staticmethod
    def from_json(raw: object, layers: Mapping[str, Mapping[str, torch.Tensor]], where: str) -> LoraConfig:
        """Checked; keys left out take the official loader's values (module docstring)."""
        if not isinstance(raw, dict):
            raise Sa3Error(f"{where}: lora_config is not a JSON object; is it a LoRA file?")
        unknown = sorted(set(raw) - set(_CONFIG_FIELDS))
        if unknown:
            raise Sa3Error(
                f"{where}: lora_config has {unknown[0]!r}, which sa3 does not know ({', '.join(_CONFIG_FIELDS)})"
            )
        kind = raw.get("adapter_type", "lora")
        if kind == "dora":  # legacy: the magnitude's 2-D shape says which (the official rule), else rows
            shapes = [t[p].shape for t in layers.values() for p in t if p == "magnitude"]
            kind = "dora-cols" if shapes and len(shapes[0]) == 2 and shapes[0][0] == 1 else "dora-rows"
        if kind not in ADAPTER_TYPES:
            raise Sa3Error(f"{where}: adapter type {kind!r} is unknown; sa3 reads {', '.join(ADAPTER_TYPES)}")
        rank = raw.get("rank")
        if rank is None:  # the official loader infers it from the first low-rank tensor
            cores = [
                (p, t) for params in layers.values() for p, t in params.items() if p in ("lora_A", "lora_B", "M_xs")
            ]
            if not cores:
                raise Sa3Error(f"{where} is not a LoRA file: it holds no lora_A, lora_B or M_xs tensor")
            rank = cores[0][1].shape[1] if cores[0][0] == "lora_B" else cores[0][1].shape[0]
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise Sa3Error(f"{where}: rank {rank!r} is not a whole number of 1 or more")
        alpha = raw.get("alpha", rank)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            raise Sa3Error(f"{where}: alpha {alpha!r} is not a number")
        dropout = raw.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise Sa3Error(f"{where}: dropout {dropout!r} is not a number from 0 up to 1")
        filters = {}
        for key in ("include", "exclude"):
            value = raw.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(p, str) for p in value)):
                raise Sa3Error(f"{where}: {key} {value!r} is not a list of layer-name patterns")
            filters[key] = None if value is None else tuple(value)
        return LoraConfig(rank, alpha, kind, float(dropout), **filters)


@dataclass(frozen=True)
class LoraFile:
    """A read LoRA file: ``layers`` maps each layer's name (the file's) to its float32 tensors."""

    path: Path
    config: LoraConfig
    layers: dict[str, dict[str, torch.Tensor]]
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def read_lora(path: str | os.PathLike) -> LoraFile:
    """Read and check a LoRA file (format and consistency; fit to a model is checked on attach)."""
    path = Path(path)
    where = repr(str(path))
    if not path.is_file():
        raise Sa3Error(f"no LoRA file {where}")
    with path.open("rb") as handle:
        head = handle.read(9)
    safetensors_like = len(head) == 9 and head[8:9] == b"{"  # an 8-byte header length, then JSON
    if path.suffix.lower() in _PICKLE_SUFFIXES or (not safetensors_like and head[:2] in (b"PK", *_PICKLE_MAGIC)):
        raise Sa3Error(
            f"{where} is a pickled (.ckpt) LoRA, which sa3 never loads (a pickle can run code); convert it once with "
            "the official convert_lora_ckpt_to_safetensors where you trust the file, then use the .safetensors"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Sa3Error(f"{where} is not a LoRA file (not safetensors: {reason})") from None
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None or not tensor.is_floating_point():
            raise Sa3Error(
                f"{where} is not a LoRA file: it holds {key!r}, not <layer>.parametrizations.weight.0.<param>"
            )
        if match["index"] != "0":
            raise Sa3Error(
                f"{where}: {key!r} is the adapter at stack position {match['index']}; a LoRA file holds one (0)"
            )
        layers.setdefault(match["layer"], {})[match["param"]] = tensor.float()  # float16 -> float32 exactly
    if not layers:
        raise Sa3Error(f"{where} is not a LoRA file: it holds no tensors")
    if CONFIG_KEY not in metadata:
        raise Sa3Error(f"{where} is not a LoRA file: its metadata has no {CONFIG_KEY}")
    try:
        raw_config = json.loads(metadata[CONFIG_KEY])
    except json.JSONDecodeError as err:
        raise Sa3Error(f"{where}: {CONFIG_KEY} is not valid JSON ({err})") from None
    config = LoraConfig.from_json(raw_config, layers, where)
    for params in layers.values():  # legacy 2-D magnitudes, squeezed as the official loader does
        for param, tensor in params.items():
            if param.startswith("magnitude") and tensor.dim() == 2 and 1 in tensor.shape:
                params[param] = tensor.reshape(-1)
    _check_layers(layers, config, where)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return LoraFile(path, config, layers, digest.hexdigest())


def _check_layers(layers: Mapping[str, Mapping[str, torch.Tensor]], config: LoraConfig, where: str) -> None:
    """Each layer holds exactly its type's tensors, of the config's rank and the right ranks of dims."""
    kind, r = config.kind, config.rank
    for layer, params in layers.items():
        for param in kind.params:
            if param not in params:
                raise Sa3Error(f"{where}: {layer} lacks {param}, which a {kind.name} adapter needs")
        for param, tensor in params.items():
            if param not in kind.params:
                raise Sa3Error(
                    f"{where}: {layer} holds {param}, which a {kind.name} adapter has not; is its type right?"
                )
            dims = 2 if param in ("lora_A", "lora_B", "M_xs") else 1
            if tensor.dim() != dims:
                raise Sa3Error(f"{where}: {layer}.{param} has shape {tuple(tensor.shape)}; it should have {dims} dims")
        ranks = tuple(params["M_xs"].shape) if kind.xs else (params["lora_A"].shape[0], params["lora_B"].shape[1])
        if any(rank != r for rank in ranks):
            names = "M_xs" if kind.xs else "lora_A/lora_B"
            raise Sa3Error(
                f"{where}: {layer}.{names} has rank {next(n for n in ranks if n != r)}, lora_config says {r}"
            )


def save_lora(path: str | os.PathLike, layers: Mapping[str, Mapping[str, torch.Tensor]], config: LoraConfig) -> Path:
    """Write a LoRA file as the official writer does (float16 tensors, ``lora_config`` metadata),
    atomically. ``layers``: layer name (with its root's prefix) -> {param: tensor}. The official
    loader reads a file by its ``.safetensors`` suffix, so that suffix is required."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise Sa3Error(
            f"a LoRA file must end in .safetensors (the official loader unpickles anything else): {str(path)!r}"
        )
    if config.adapter_type not in ADAPTER_TYPES:
        raise Sa3Error(f"adapter type {config.adapter_type!r} is unknown; sa3 writes {', '.join(ADAPTER_TYPES)}")
    _check_layers(layers, config, repr(str(path)))
    tensors = {
        f"{layer}.parametrizations.weight.0.{param}": t.detach().to("cpu", torch.float16).contiguous()
        for layer, params in layers.items()
        for param, t in params.items()
    }
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={CONFIG_KEY: json.dumps(config.to_json())})
    os.replace(partial, path)
    return path


def check_strength(value: object, what: str = "LoRA strength") -> float:
    """A strength: a finite number from -MAX_STRENGTH to MAX_STRENGTH."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Sa3Error(f"{what} must be a number from {-MAX_STRENGTH:g} to {MAX_STRENGTH:g} (got {value!r})")
    if abs(value) > MAX_STRENGTH:
        raise Sa3Error(f"{what} {value:g} is outside {-MAX_STRENGTH:g}..{MAX_STRENGTH:g}")
    return float(value)


def parse_spec(text: str) -> tuple[Path, float]:
    """``FILE[:STRENGTH]`` (the command line's form) -> (path, strength); strength 1 when absent.
    Only a last ``:`` followed by a number splits, so ``C:\\loras\\a.safetensors`` stays a path."""
    head, sep, tail = text.rpartition(":")
    try:
        strength = float(tail) if sep else None
    except ValueError:
        strength = None
    if strength is None:
        return Path(text), 1.0
    return Path(head), check_strength(strength, f"LoRA strength for {head!r}")


# ----------------------------------------------------------------------------- the stack
class LoraStack:
    """LoRA files applied in order, each with a strength (module docstring)."""

    def __init__(self, files: Sequence[LoraFile], strengths: Sequence[float]) -> None:
        if len(files) != len(strengths):
            raise ValueError(f"{len(files)} LoRA files, {len(strengths)} strengths")
        self.files = list(files)
        self.strengths = tuple(check_strength(s, f"LoRA strength for {f.name!r}") for f, s in zip(files, strengths))
        self.merged: bool | None = None  # None until attached
        self._layers: dict[str, tuple[nn.Module, AdaptedWeight]] = {}

    @classmethod
    def read(cls, loras: Iterable[str | os.PathLike | tuple[str | os.PathLike, float]]) -> LoraStack:
        """Files (strength 1) or (file, strength) pairs, in the order they apply."""
        pairs = [(item, 1.0) if isinstance(item, (str, os.PathLike)) else tuple(item) for item in loras]
        return cls([read_lora(path) for path, _ in pairs], [s for _, s in pairs])

    def describe(self) -> list[dict[str, object]]:
        """What a take records: each file's name, content hash, type, rank and current strength."""
        return [
            {"file": f.name, "sha256": f.sha256, "adapter_type": f.config.adapter_type, "rank": f.config.rank,
             "strength": s}
            for f, s in zip(self.files, self.strengths)
        ]  # fmt: skip

    def attach(self, roots: Mapping[str, nn.Module], merge: bool = True) -> None:
        """Adapt the Linear and Conv1d layers under ``roots`` (key prefix -> module) that the files
        select. Every file is checked against the model before any module changes: a layer the
        file names that the model lacks, a selected layer it lacks, a shape that does not fit
        (a LoRA for another base model) are one-line Sa3Errors naming the layer."""
        if self.merged is not None:
            raise Sa3Error("these LoRAs are already applied to a model; read them again for another")
        modules = {
            prefix + name: module
            for prefix, root in roots.items()
            for name, module in root.named_modules()
            if type(module) in ADAPTED
        }
        adapters: dict[str, list[tuple[int, Adapter]]] = {}
        with torch.no_grad():
            for index, lora in enumerate(self.files):
                for name, adapter in self._fit(lora, modules):
                    adapters.setdefault(name, []).append((index, adapter))
            for name, found in adapters.items():
                module = modules[name]
                layer = AdaptedWeight(module, found)
                if merge:  # the layer goes: nothing keeps the base weight alive
                    if any(self.strengths[i] != 0 for i, _ in found):
                        module.weight = nn.Parameter(layer.merged(self.strengths), requires_grad=False)
                    continue
                layer.prepare(self.strengths)
                module.__class__ = ADAPTED[type(module)]
                module.lora = layer
                self._layers[name] = (module, layer)
        self.merged = merge

    def _fit(self, lora: LoraFile, modules: Mapping[str, nn.Module]) -> list[tuple[str, Adapter]]:
        where, config = repr(lora.name), lora.config
        selected = [name for name in modules if config.selects(name)]
        for name in lora.layers:
            if name not in modules:
                raise Sa3Error(f"LoRA {where} adapts {name}, which this model has not; is it for another model?")
            if not config.selects(name):
                raise Sa3Error(f"LoRA {where} holds {name}, which its own include/exclude leave out")
        if not selected:
            raise Sa3Error(
                f"LoRA {where} selects no layer of this model (include {config.include}, exclude {config.exclude})"
            )
        fitted = []
        for name in selected:
            if name not in lora.layers:
                raise Sa3Error(f"LoRA {where} lacks {name}, which its include/exclude select; is it for another model?")
            weight = modules[name].weight
            out_features, in_features = weight.shape[0], weight[0].numel()
            if config.kind.xs and config.rank > min(out_features, in_features):
                raise Sa3Error(
                    f"LoRA {where}: rank {config.rank} is more than {name} ({out_features}x{in_features}) has"
                )
            expected = {"lora_A": (config.rank, in_features), "lora_B": (out_features, config.rank),
                        "M_xs": (config.rank, config.rank), config.kind.row: (out_features,),
                        config.kind.col: (in_features,)}  # fmt: skip
            expected.pop(None, None)  # the magnitude a type has not
            for param, tensor in lora.layers[name].items():
                if tuple(tensor.shape) != expected[param]:
                    raise Sa3Error(
                        f"LoRA {where}: {name}.{param} has shape {tuple(tensor.shape)}, this model's layer needs "
                        f"{expected[param]}; the LoRA is for another base model"
                    )
            fitted.append((name, Adapter(config.kind, config.scaling, config.rank, lora.layers[name], weight)))
        return fitted

    def detach(self) -> None:
        """Give unmerged layers their plain forward back (merged weights cannot be taken back)."""
        if self.merged:
            raise Sa3Error("merged LoRAs are part of the weights; load the model again without them")
        for module, layer in self._layers.values():
            module.__class__ = next(base for base, adapted in ADAPTED.items() if adapted is type(module))
            del module.lora
            layer.stages, layer.weight = [], None  # copies made meanwhile (the bf16 DiT) run plain too
        self._layers, self.merged = {}, None

    def check_strengths(self, strengths: Sequence[float]) -> tuple[float, ...]:
        if len(strengths) != len(self.files):
            raise Sa3Error(f"{len(strengths)} LoRA strengths given for {len(self.files)} LoRA files; give one per file")
        return tuple(check_strength(s, f"LoRA strength for {f.name!r}") for f, s in zip(self.files, strengths))

    @contextlib.contextmanager
    def using(self, strengths: Sequence[float]) -> Iterator[None]:
        """Run with these strengths (one per file) inside the block; the previous ones come back after.
        Merged files take only the strengths they were merged with."""
        strengths = self.check_strengths(strengths)
        if self.merged and strengths != self.strengths:
            raise Sa3Error(
                f"these LoRAs are merged into the weights at strengths {list(self.strengths)}; load them unmerged "
                "(merge_loras=False) to change strengths per request"
            )
        previous = self.strengths
        self._set(strengths)
        try:
            yield
        finally:
            self._set(previous)

    def _set(self, strengths: tuple[float, ...]) -> None:
        if strengths == self.strengths:
            return
        with torch.no_grad():
            for _, layer in self._layers.values():
                layer.prepare(strengths)
        self.strengths = strengths


# ----------------------------------------------------------------------------- for servers and tools
def default_lora_dir() -> Path | None:
    """The LoRA folder tools use when none is named: ``$SA3_LORA_DIR`` (an Sa3Error when it is set
    but not a folder: it was asked for), else ``$XDG_DATA_HOME/sa3/loras``, else
    ``~/.local/share/sa3/loras``; those two only when they exist, None otherwise."""
    named = os.environ.get("SA3_LORA_DIR")
    if named:
        folder = Path(named).expanduser()
        if not folder.is_dir():
            raise Sa3Error(f"SA3_LORA_DIR={named!r} is not a folder; create it, or unset SA3_LORA_DIR")
        return folder
    data = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    folder = Path(data).expanduser() / "sa3" / "loras"
    return folder if folder.is_dir() else None


class _FitChecked(Exception):
    """Raised by :class:`_FitCheck` once its files fit: nothing has been changed."""


class _FitCheck(LoraStack):
    """A stack whose attach only checks. It runs attach's checks on the modules the family hands
    it (layers adapted by a set attached apart count as their plain selves) and then raises
    :class:`_FitChecked`, so the family's attach path stops before it changes anything (the
    released backend remakes its bf16 DiT copy after attaching)."""

    def attach(self, roots: Mapping[str, nn.Module], merge: bool = True) -> None:
        kinds = set(ADAPTED) | set(ADAPTED.values())
        modules = {
            prefix + name: module
            for prefix, root in roots.items()
            for name, module in root.named_modules()
            if type(module) in kinds
        }
        for lora in self.files:
            self._fit(lora, modules)
        raise _FitChecked


def check_fit(pipeline, lora: LoraFile) -> None:
    """An Sa3Error with the line attaching ``lora`` to ``pipeline``'s model would raise (the layer
    and both shapes, or a family that takes no LoRA) when it does not fit; the model is not
    changed either way. For servers that list which of their models each adapter fits."""
    try:
        pipeline.family.attach_loras(pipeline.backend, _FitCheck([lora], [1.0]), merge=False)
    except _FitChecked:
        return
    raise Sa3Error(f"this model ({pipeline.family.name} family) did not check LoRA {lora.name!r}")
