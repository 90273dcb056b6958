"""Layers that run LoRA adapters (the file format and the stack: :mod:`sa3core.lora`).

- :class:`AdapterType`: what each of the eight types holds and normalises (``ADAPTER_TYPES``).
- :class:`Adapter`: one file's adapter on one weight, float32; :meth:`Adapter.apply` is the adapted
  weight exactly as the official parametrization computes it (same operations, same order).
- :class:`AdaptedWeight`: the adapters on one Linear/Conv1d weight, in file order, and what one
  strength setting needs when they are kept apart from the weight: per adapter a coefficient, its
  low-rank factors and DoRA's row/column scales as vectors (worked out from the adapted weight,
  one layer at a time), so ``y = row * (inner(col * x) + coef * up(down(col * x)))`` per adapter.
- :class:`AdaptedLinear`, :class:`AdaptedConv1d`: the module classes swapped in place (as torch's
  parametrize does) so a module keeps its name, parameters and state dict and runs its stages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-12  # added to every norm, as the official parametrization does


@dataclass(frozen=True)
class AdapterType:
    """One adapter type: ``xs`` (SVD bases and an ``M_xs`` core instead of ``lora_A``/``lora_B``)
    and the magnitude that scales rows (``row``) and/or columns (``col``), None for none."""

    name: str
    xs: bool
    row: str | None = None
    col: str | None = None

    @property
    def params(self) -> tuple[str, ...]:
        core = ("M_xs",) if self.xs else ("lora_A", "lora_B")
        return core + tuple(p for p in (self.row, self.col) if p is not None)


ADAPTER_TYPES: dict[str, AdapterType] = {
    t.name: t
    for xs in (False, True)
    for t in (
        AdapterType("lora-xs" if xs else "lora", xs),
        AdapterType("dora-rows-xs" if xs else "dora-rows", xs, row="magnitude"),
        AdapterType("dora-cols-xs" if xs else "dora-cols", xs, col="magnitude"),
        AdapterType("bora-xs" if xs else "bora", xs, row="magnitude_r", col="magnitude_c"),
    )
}


class Adapter:
    """One file's adapter on one weight, float32 on the weight's device."""

    def __init__(
        self, kind: AdapterType, scaling: float, rank: int, tensors: Mapping[str, torch.Tensor], base: torch.Tensor
    ) -> None:
        self.kind, self.scaling, self.rank, self.device = kind, scaling, rank, base.device
        if self.kind.xs:
            self.M = tensors["M_xs"].to(self.device)
            self._base: torch.Tensor | None = base  # its SVD is taken when first needed (not at strength 0)
        else:
            self.A, self.B = tensors["lora_A"].to(self.device), tensors["lora_B"].to(self.device)
        self.row = None if self.kind.row is None else tensors[self.kind.row].to(self.device)
        self.col = None if self.kind.col is None else tensors[self.kind.col].to(self.device)

    def _bases(self) -> None:
        """-xs: U, V as the official code makes them: SVD of the base on the CPU in float32, each U
        column's largest-magnitude entry made positive, the top ``rank`` kept."""
        if self._base is None:
            return
        base = self._base.detach().reshape(self._base.shape[0], -1).cpu().float()
        U, _, Vh = torch.linalg.svd(base, full_matrices=False)
        signs = U[U.abs().argmax(dim=0), torch.arange(U.shape[1])].sign()
        signs[signs == 0] = 1
        U, Vh = U * signs.unsqueeze(0), Vh * signs.unsqueeze(1)
        self.U = U[:, : self.rank].contiguous().to(self.device)  # (out, r)
        self.V = Vh[: self.rank].T.contiguous().to(self.device)  # (in, r)
        self._base = None

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(down [r, in*kernel], up [out, r]) with D = up @ down: (A, B), or (Vᵀ, U M_xs) for -xs."""
        if not self.kind.xs:
            return self.A, self.B
        self._bases()
        return self.V.T.contiguous(), self.U @ self.M

    @property
    def normalises(self) -> bool:
        return self.row is not None or self.col is not None

    def coefficient(self, strength: float) -> torch.Tensor:
        """alpha / rank * strength, as the official code multiplies them (a float32 scalar)."""
        return self.scaling * torch.tensor(strength, dtype=torch.float32, device=self.device)

    def delta(self) -> torch.Tensor:
        """D [out, in*kernel] in the official product order."""
        if not self.kind.xs:
            return self.B @ self.A
        self._bases()
        return self.U @ self.M @ self.V.T

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The adapted weight, computed as the official parametrization computes it."""
        coef = self.coefficient(strength)
        if not self.normalises:
            return weight + (coef * self.delta().view(weight.shape)).to(weight.dtype)
        v = weight.view(weight.shape[0], -1).float() + coef * self.delta()  # (out, in*kernel)
        if self.row is not None:
            v = v / (v.norm(dim=1, keepdim=True) + _EPS) * self.row.unsqueeze(1)
        if self.col is not None:
            v = v / (v.norm(dim=0, keepdim=True) + _EPS) * self.col.unsqueeze(0)
        return v.view(weight.shape).to(weight.dtype)


@dataclass
class _Stage:
    """One adapter at one strength, as the unmerged forward runs it: ``y = row * (inner(col * x)
    + coef * up(down(col * x)))``; row/col None when the type does not normalise that way."""

    coef: torch.Tensor
    down: torch.Tensor
    up: torch.Tensor
    row: torch.Tensor | None
    col: torch.Tensor | None


class AdaptedWeight:
    """A Linear or Conv1d weight and the adapters that target it, in file order."""

    def __init__(self, module: nn.Module, adapters: list[tuple[int, Adapter]]) -> None:
        self.base = module.weight  # float32; kept by the model itself
        self.adapters = adapters
        # Conv1d takes the low-rank path only as a 1x1 convolution; others get a weight per setting.
        self.low_rank = isinstance(module, nn.Linear) or (
            module.kernel_size == (1,)
            and module.groups == 1
            and module.stride == (1,)
            and module.padding in ((0,), "valid")
        )
        self.stages: list[_Stage] = []
        self.weight: torch.Tensor | None = None  # the adapted weight, where low_rank is False

    def __deepcopy__(self, memo) -> AdaptedWeight:
        return self  # shared by a module's copies (the bf16 inference copy), so strengths reach both

    def merged(self, strengths: Sequence[float]) -> torch.Tensor:
        weight = self.base
        for index, adapter in self.adapters:
            if strengths[index] != 0:
                weight = adapter.apply(weight, strengths[index])
        return weight

    def prepare(self, strengths: Sequence[float]) -> None:
        """Work out the per-setting values: the stages' coefficients and DoRA scales (or the weight)."""
        active = [(a, strengths[i]) for i, a in self.adapters if strengths[i] != 0]
        self.stages, self.weight = [], None
        if not active:
            return
        if not self.low_rank:
            self.weight = self.merged(strengths)
            return
        last = max((k for k, (a, _) in enumerate(active) if a.normalises), default=-1)
        w = self.base.view(self.base.shape[0], -1).float() if last >= 0 else None
        for k, (adapter, strength) in enumerate(active):
            coef, row, col = adapter.coefficient(strength), None, None
            if k <= last:  # its norms need the weight it adapts, made here once per setting
                w = w + coef * adapter.delta()
                if adapter.row is not None:
                    row = adapter.row / (w.norm(dim=1) + _EPS)
                    w = w * row.unsqueeze(1)
                if adapter.col is not None:
                    col = adapter.col / (w.norm(dim=0) + _EPS)
                    w = w * col.unsqueeze(0)
            self.stages.append(_Stage(coef, *adapter.factors(), row, col))

    def linear(
        self,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        product: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x [..., in] -> [..., out]: the base layer, then the stages (features on the last dim).
        ``product``: the base layer's product without its bias, where it is not ``F.linear`` with
        ``weight`` (the int8 layers of :mod:`sa3core.modules.int8`, which run without stages
        themselves)."""
        if not self.stages:
            return F.linear(x, weight, bias)
        inputs, u = [], x
        for stage in reversed(self.stages):  # stage k sees x scaled by the columns of k and after
            u = u if stage.col is None else u * stage.col
            inputs.append(u)
        y = F.linear(u, weight) if product is None else product(u)
        dtype = y.dtype
        for stage, u in zip(self.stages, reversed(inputs)):
            y = y + stage.coef * F.linear(F.linear(u, stage.down), stage.up)
            y = y if stage.row is None else y * stage.row
        y = y.to(dtype)
        return y if bias is None else y + bias


class AdaptedLinear(nn.Linear):
    """An nn.Linear whose forward runs its LoRA stages (the class is swapped in place, as torch's
    parametrize does, so the module keeps its name, parameters and state dict)."""

    lora: AdaptedWeight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora.linear(x, self.weight, self.bias)


class AdaptedConv1d(nn.Conv1d):
    """An nn.Conv1d whose forward runs its LoRA stages; x [B, in, T] -> [B, out, T]."""

    lora: AdaptedWeight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.lora
        if layer.weight is not None:
            return self._conv_forward(x, layer.weight.to(self.weight.dtype), self.bias)
        if not layer.stages:
            return self._conv_forward(x, self.weight, self.bias)
        y = layer.linear(x.transpose(1, 2), self.weight[..., 0], self.bias)  # a 1x1 conv is a Linear over channels
        return y.transpose(1, 2)


ADAPTED = {nn.Linear: AdaptedLinear, nn.Conv1d: AdaptedConv1d}
