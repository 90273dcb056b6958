"""Reading a released Stable Audio 3 folder: ``model_config.json`` + ``model.safetensors`` (+ the
text encoder's folder), as the Hugging Face repos publish them.

- The weights are memory-mapped with safetensors' ``safe_open``: each tensor is a view of the
  mapped file (pages are read when touched, copy-on-write if written), and the modules are built
  on the ``meta`` device and take those tensors as their parameters (``assign=True``), so no
  second copy of the weights is ever made.
- Keys are split strictly by prefix: ``model.model.`` (the DiT), ``conditioner.conditioners.``
  (the conditioners), ``pretransform.model.`` (the SAME autoencoder); the SAME repos hold the
  autoencoder alone, without a prefix. A key under no known prefix, a missing key, an unexpected
  key or a wrong shape is a one-line :class:`Sa3Error` naming it; nothing is skipped.
- A folder that is not a released checkpoint, a truncated weights file, unknown config keys and
  a missing text-encoder folder are one-line errors that say what to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import Sa3Error
from .conditioners import build_conditioners
from .config import ReleasedConfig
from .dit import ReleasedDiT

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
DIT_PREFIX = "model.model."
CONDITIONER_PREFIX = "conditioner.conditioners."
AUTOENCODER_PREFIX = "pretransform.model."
PARTS = {"dit": DIT_PREFIX, "conditioners": CONDITIONER_PREFIX, "autoencoder": AUTOENCODER_PREFIX}
# What the text encoder's folder must hold for sa3.released.text to load it.
TEXT_ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass
class ReleasedFolder:
    """An opened released folder: its config and its weights, split by part, memory-mapped.

    ``parts`` maps "dit", "conditioners", "autoencoder" to ``{key without prefix: tensor}``.
    """

    path: Path
    config: ReleasedConfig
    parts: dict[str, dict[str, torch.Tensor]]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    def text_encoder_dir(self) -> Path:
        """The T5Gemma folder named by the prompt conditioner's ``subfolder``; errors if incomplete."""
        if not self.config.is_dit:
            raise Sa3Error(f"{str(self.path)!r} holds an autoencoder alone; it has no text encoder")
        prompt = next((s for s in self.config.model.conditioning.configs if s.type == "t5gemma"), None)
        if prompt is None:
            raise Sa3Error(f"{str(self.path / CONFIG_FILE)!r} has no t5gemma prompt conditioner")
        sub = prompt.config.subfolder
        if not sub:
            raise Sa3Error(f"{str(self.path / CONFIG_FILE)!r}: the prompt conditioner names no text-encoder subfolder")
        folder = self.path / sub
        missing = [name for name in TEXT_ENCODER_FILES if not (folder / name).is_file()]
        if missing:
            what = f"no text-encoder folder {sub}/" if not folder.is_dir() else f"a {sub}/ folder without {missing[0]}"
            repo = prompt.config.repo_id or "the model's repository"
            raise Sa3Error(f"{str(self.path)!r} has {what}; download the whole of {repo}, {sub}/ included")
        return folder


def is_released_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding ``model_config.json`` (sa3's own folders do not)."""
    return (Path(path) / CONFIG_FILE).is_file()


def read_config(path: str | os.PathLike) -> ReleasedConfig:
    """The folder's ``model_config.json``, checked (see :mod:`sa3core.released.config`)."""
    path = Path(path)
    if not path.is_dir():
        raise Sa3Error(f"{str(path)!r} is not a folder; give the folder of a released Stable Audio 3 model")
    file = path / CONFIG_FILE
    if not file.is_file():
        raise Sa3Error(f"{str(path)!r} is not a released Stable Audio 3 checkpoint: it has no {CONFIG_FILE}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Sa3Error(f"{str(file)!r} is not valid JSON ({err}); download it again") from None
    return ReleasedConfig.from_dict(data, where=str(file))


def open_released(path: str | os.PathLike) -> ReleasedFolder:
    """Read the config and memory-map the weights of a released folder (a DiT or a SAME repo)."""
    path = Path(path)
    config = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise Sa3Error(f"{str(path)!r} has no {WEIGHTS_FILE}; download the whole repository")
    tensors = _map_weights(weights)
    if not config.is_dit:  # a SAME repo: the autoencoder alone, keys without a prefix
        return ReleasedFolder(path, config, {"dit": {}, "conditioners": {}, "autoencoder": tensors})
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in PARTS}
    for key, tensor in tensors.items():
        name = next((n for n, prefix in PARTS.items() if key.startswith(prefix)), None)
        if name is None:
            known = ", ".join(PARTS.values())
            raise Sa3Error(
                f"{str(weights)!r} holds {key!r}, which is under none of {known}; is it a released checkpoint?"
            )
        parts[name][key[len(PARTS[name]) :]] = tensor
    return ReleasedFolder(path, config, parts)


def _map_weights(weights: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the file as a view of its memory map (no copy)."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Sa3Error(
            f"{str(weights)!r} is truncated or not a safetensors file ({reason}); download it again"
        ) from None


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Give ``module`` (built on the meta device, or anywhere) the tensors of ``state`` as its own.

    Every key must match a parameter or persistent buffer by name and shape, and every one of
    those must be present; the first that does not is a one-line :class:`Sa3Error`. The tensors
    are assigned, not copied, so memory-mapped weights stay mapped."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise Sa3Error(f"{where} lacks {missing[0]!r} ({len(missing)} missing) for this config; is the file complete?")
    if unexpected:
        raise Sa3Error(f"{where} has {unexpected[0]!r} ({len(unexpected)} unexpected), which this config does not use")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise Sa3Error(
                f"{where}: {key!r} has shape {tuple(tensor.shape)}, the config expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def load_dit(folder: ReleasedFolder) -> ReleasedDiT:
    """The DiT of a released DiT folder, its weights memory-mapped."""
    if not folder.config.is_dit:
        raise Sa3Error(f"{str(folder.path)!r} holds an autoencoder alone; it has no DiT")
    with torch.device("meta"):
        dit = ReleasedDiT(folder.config.model.diffusion.config)
    return load_strict(dit, folder.parts["dit"], f"{str(folder.weights_path)!r} ({DIT_PREFIX}*)")


def load_conditioners(folder: ReleasedFolder) -> nn.ModuleDict:
    """The conditioners (by id: ``prompt``, ``seconds_total``) of a released DiT folder."""
    if not folder.config.is_dit:
        raise Sa3Error(f"{str(folder.path)!r} holds an autoencoder alone; it has no conditioners")
    with torch.device("meta"):
        conditioners = build_conditioners(folder.config.model.conditioning)
    return load_strict(
        conditioners, folder.parts["conditioners"], f"{str(folder.weights_path)!r} ({CONDITIONER_PREFIX}*)"
    )


def load_autoencoder(path: str | os.PathLike):
    """The SAME autoencoder of a released folder, float32, memory-mapped: a SAME repo's, or the
    pretransform of a DiT repo (whose DiT and text encoder are not loaded). Returns
    ``(autoencoder, identity)``; ``identity`` is :func:`autoencoder_identity`."""
    from .same import ReleasedAutoencoder

    folder = open_released(path)
    tensors = folder.parts["autoencoder"]
    autoencoder = ReleasedAutoencoder.from_state_dict(folder.config.autoencoder, tensors)
    return autoencoder, autoencoder_identity(folder.config.autoencoder, tensors)


def autoencoder_identity(config, tensors: dict[str, torch.Tensor]) -> str:
    """A short hash of an autoencoder's config and weights (names, shapes and float64 sums of the
    values): latents mean something only to the autoencoder that made them, whichever repo holds it
    (a SAME repo and a DiT repo with the same SAME give the same identity)."""
    import dataclasses
    import hashlib

    digest = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
    for key in sorted(tensors):
        tensor = tensors[key]
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.double().sum().item():.9e}".encode())
    return digest.hexdigest()[:16]
