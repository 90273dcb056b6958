"""Trainable LoRA adapters on a frozen model: the eight official types as weight parametrizations.

Each adapted Linear / Conv1d gets a :class:`TrainableAdapter` registered with
``torch.nn.utils.parametrize`` on its ``weight``: the layer computes with ``adapter(W)``, the
adapted weight, exactly as the official training does (Stability-AI/stable-audio-3,
``LoRAParametrization``; read, not copied). With W the frozen weight as ``[out, in * kernel]``,
``c = alpha / rank`` and ``D = B @ A`` (``U @ M_xs @ V^T`` for the ``-xs`` types):

- ``lora`` / ``lora-xs``: ``W + c * D``;
- ``dora-rows(-xs)``: ``V = W + c * D`` with each row scaled to unit norm (+1e-12), times
  ``magnitude`` [out]; ``dora-cols(-xs)`` the same per column, ``magnitude`` [in];
- ``bora(-xs)``: rows normalised and scaled by ``magnitude_r`` [out], then columns by
  ``magnitude_c`` [in].

Initial values, as the official code makes them, so training starts from the base model:
``lora_A`` [rank, in] Kaiming-uniform (a = sqrt 5), ``lora_B`` [out, rank] zeros, ``M_xs``
[rank, rank] zeros, magnitudes the base weight's row / column norms; ``U`` [out, rank] and
``V`` [in, rank] the top singular vectors of the base weight (float32 SVD on the CPU), signs
fixed so each U column's largest-magnitude entry is positive (what sa3core.lora recomputes on
loading). ``dropout`` multiplies the columns of ``lora_A`` by a dropout mask (train mode only,
non-``-xs`` types), the official form of dropout on the layer input.

The parameters carry the file's names (``lora_A``, ``lora_B``, ``M_xs``, ``magnitude``,
``magnitude_r``, ``magnitude_c``), so :func:`adapter_tensors` hands
:func:`sa3core.lora.save_lora` a file the official loader takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from sa3core.errors import Sa3Error
from sa3core.lora import ADAPTER_TYPES, LoraConfig

_EPS = 1e-12  # added to every norm, as the official parametrization does
ADAPTED_TYPES = (nn.Linear, nn.Conv1d)  # what the official add_lora adapts


def svd_bases(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U [out, rank], V [in, rank]) of ``weight`` viewed as [out, in * kernel], float32, CPU SVD,
    each U column's largest-magnitude entry made positive (V's matching row flipped with it)."""
    U, _, Vh = torch.linalg.svd(weight.detach().reshape(weight.shape[0], -1).cpu().float(), full_matrices=False)
    where = U.abs().argmax(dim=0)
    signs = U[where, torch.arange(U.shape[1])].sign()
    signs[signs == 0] = 1
    U, Vh = U * signs.unsqueeze(0), Vh * signs.unsqueeze(1)
    return U[:, :rank].contiguous(), Vh[:rank].T.contiguous()


class TrainableAdapter(nn.Module):
    """One layer's adapter; ``forward(W) -> adapted W`` (a parametrization). See the module docstring."""

    def __init__(self, config: LoraConfig, weight: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__()
        kind = config.kind
        self.kind, self.scaling, self.dropout = kind, config.scaling, config.dropout
        base = weight.detach().reshape(weight.shape[0], -1).float()  # (out, in * kernel)
        fan_out, fan_in = base.shape
        rank = config.rank
        device = weight.device
        # The official strength is a buffer multiplied in; kept (at 1) so the products round alike.
        self.register_buffer("strength", torch.tensor(1.0, device=device), persistent=False)
        if kind.xs:
            U, V = svd_bases(weight, rank)
            self.register_buffer("U", U.to(device))
            self.register_buffer("V", V.to(device))
            self.M_xs = nn.Parameter(torch.zeros(rank, rank, device=device))
        else:
            lora_A = torch.empty(rank, fan_in)
            _kaiming_uniform(lora_A, a=math.sqrt(5), generator=generator)
            self.lora_A = nn.Parameter(lora_A.to(device))
            self.lora_B = nn.Parameter(torch.zeros(fan_out, rank, device=device))
        if kind.row is not None:  # "magnitude" or "magnitude_r": per output row
            setattr(self, kind.row, nn.Parameter(base.norm(dim=1).clone()))
        if kind.col is not None:  # "magnitude" or "magnitude_c": per input column
            setattr(self, kind.col, nn.Parameter(base.norm(dim=0).clone()))

    def delta(self) -> torch.Tensor:
        """D [out, in * kernel] in the official product order (dropout on A's columns in training)."""
        if self.kind.xs:
            return self.U @ self.M_xs.to(self.U.dtype) @ self.V.T
        A = self.lora_A
        if self.dropout > 0:
            A = A * F.dropout(torch.ones_like(A[:1]), self.dropout, self.training)  # (1, in) mask
        return self.lora_B @ A

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        coefficient = self.scaling * self.strength
        row = None if self.kind.row is None else getattr(self, self.kind.row)
        col = None if self.kind.col is None else getattr(self, self.kind.col)
        if row is None and col is None:  # lora, lora-xs
            return weight + (coefficient * self.delta().view(weight.shape)).to(weight.dtype)
        v = weight.view(weight.shape[0], -1).float() + coefficient * self.delta()  # (out, in * kernel)
        if row is not None:
            v = v / (v.norm(dim=1, keepdim=True) + _EPS) * row.unsqueeze(1)
        if col is not None:
            v = v / (v.norm(dim=0, keepdim=True) + _EPS) * col.unsqueeze(0)
        return v.view(weight.shape).to(weight.dtype)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The file's tensors of this layer, by the file's parameter names."""
        return {name: getattr(self, name).detach() for name in self.kind.params}


def _kaiming_uniform(tensor: torch.Tensor, a: float, generator: torch.Generator) -> None:
    """``nn.init.kaiming_uniform_(tensor, a)`` (fan_in mode, leaky_relu gain) drawing from ``generator``."""
    fan_in = tensor.shape[1]
    gain = math.sqrt(2.0 / (1 + a**2))
    bound = math.sqrt(3.0) * gain / math.sqrt(fan_in)
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


def selected_layers(roots: Mapping[str, nn.Module], config: LoraConfig) -> dict[str, nn.Module]:
    """The Linear and Conv1d layers under ``roots`` (key prefix -> module) that ``config``'s
    include/exclude select, by their file names (prefix + module name), in module order."""
    return {
        prefix + name: module
        for prefix, root in roots.items()
        for name, module in root.named_modules()
        if isinstance(module, ADAPTED_TYPES) and config.selects(prefix + name)
    }


def attach_adapters(
    roots: Mapping[str, nn.Module], config: LoraConfig, generator: torch.Generator
) -> dict[str, TrainableAdapter]:
    """Register a trainable adapter on every layer ``config`` selects (the base stays frozen);
    returns them by layer name. One-line Sa3Errors: no layer selected; a ``-xs`` rank larger than
    a selected layer allows."""
    if config.adapter_type not in ADAPTER_TYPES:
        raise Sa3Error(f"adapter type {config.adapter_type!r} is unknown; sa3 trains {', '.join(ADAPTER_TYPES)}")
    layers = selected_layers(roots, config)
    if not layers:
        raise Sa3Error(
            f"include {list(config.include or [])} / exclude {list(config.exclude or [])} select no layer of this "
            "model; layer names look like model.transformer.layers.0.self_attn.to_qkv or "
            "conditioners.seconds_total.embedder.embedding.1"
        )
    adapters = {}
    for name, module in layers.items():
        weight = module.weight
        if config.kind.xs and config.rank > min(weight.shape[0], weight[0].numel()):
            raise Sa3Error(
                f"rank {config.rank} is more than layer {name} ({weight.shape[0]}x{weight[0].numel()}) allows "
                f"for {config.adapter_type}; lower the rank or exclude the layer"
            )
        adapter = TrainableAdapter(config, weight, generator)
        parametrize.register_parametrization(module, "weight", adapter, unsafe=True)
        adapters[name] = adapter
    return adapters


def adapter_tensors(adapters: Mapping[str, TrainableAdapter]) -> dict[str, dict[str, torch.Tensor]]:
    """``{layer: {param: tensor}}`` for :func:`sa3core.lora.save_lora`."""
    return {name: adapter.tensors() for name, adapter in adapters.items()}
