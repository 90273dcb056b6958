"""int8 linear layers for CPU inference: int8 weights, activations quantised per row on each call.

Where a CPU has no native bf16 (x86 with AVX2 but no AVX-512 bf16: most laptops), bf16 matmuls
are emulated and slower than float32, and float32 is the only fast float path. There the released
DiT's block linears run as :class:`Int8Linear` at sa3's default precision (``--fp32`` keeps float32):

- weights: int8, one symmetric scale per output channel (absmax / 127.5), packed once for
  fbgemm/oneDNN (``torch.ops.quantized.linear_prepack``);
- activations: each row (a token's features) divided by its own absmax first, so every token uses
  the quantiser's whole range; torch's dynamic int8 op then quantises the tensor with one affine
  scale, multiplies in int8 with int32 sums, and the row's absmax is multiplied back in with the
  bias. One scale per tensor (what ``torch.ao.quantization.quantize_dynamic`` does) moved the
  small DiT's velocity by 9.3 % of its RMS, one per row by 6.4 % (``sa3 bench int8_linears``);
- a Hadamard rotation first: each block of 64 input features is multiplied by an orthonormal
  Hadamard matrix H (and the weight's columns by the same H once, at packing, so the product is
  unchanged: W x = (W H) (H x), H symmetric). It spreads a feature's outlier over its block, so one
  large value no longer sets the row's scale for all the others: the velocity's error drops from
  6.4 % to 4.2 % of its RMS, the tiny released-layout fixtures' take from log-mel L1 0.0115 to
  0.006 against float32, for about 10 % of the int8 step's time. Trained models carry outlier
  features (the case rotations such as QuaRot's were made for) that random weights lack. A whole
  take moves far less than one velocity: correlation 0.99996, log-mel L1 0.0017 against float32
  on the released small shapes, as bf16 does where it is native (``sa3 bench precision``);
- ``reduce_range``: activations use 7 bits. Without VNNI the int8 kernels sum pairs of u8 x s8
  products in int16 (``vpmaddubsw``), which saturates for 8-bit activations: measured here, 26 %
  wrong outputs on large weights. With 7 bits no pair can overflow.

The int8 sums are exact, so the thread count does not move the result (float32 matmuls' sums
do move with it: MKL splits them differently).

:func:`int8_inference_copy` makes a copy of a model with chosen ``nn.Linear`` layers swapped; the
copy shares every other tensor with the model (nothing else is copied), and the model itself stays
float32 for saving, export and LoRA.
"""

from __future__ import annotations

import copy
import platform
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from .int8_cache import Int8Cache

_ROW_FLOOR = 1e-30  # an all-zero row stays zero instead of dividing by zero
ROTATION_BLOCK = 64  # features per Hadamard block (32 and 64 measured alike; 128 costs more)


def int8_supported() -> bool:
    """True where torch has an x86 int8 engine (fbgemm/oneDNN) for dynamic int8 linears."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    engines = torch.backends.quantized.supported_engines
    return ("fbgemm" in engines or "x86" in engines) and hasattr(torch.ops.quantized, "linear_dynamic")


def hadamard(size: int) -> torch.Tensor:
    """The orthonormal Hadamard matrix [size, size] (Sylvester's construction; ``size`` a power of 2)."""
    h = torch.ones(1, 1)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h / size**0.5


def rotation_block(in_features: int) -> int:
    """The largest power of two up to ROTATION_BLOCK that divides ``in_features`` (1: no rotation)."""
    block = ROTATION_BLOCK
    while in_features % block:
        block //= 2
    return block


def quantise(weight: torch.Tensor, rotation: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """float [out, in] -> (int8 [out, in], float64 scales [out]): the columns rotated by
    ``rotation`` [b, b] per block of b, one symmetric scale per output channel (absmax / 127.5)."""
    weight = weight.detach().float()
    if rotation is not None:
        block = rotation.shape[0]
        weight = (weight.view(weight.shape[0], -1, block) @ rotation).reshape(weight.shape)  # (out, in / b, b)
    scale = (weight.abs().amax(1) / 127.5).clamp_min(1e-12).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # torch marks its quantised tensor types deprecated; these are its int8 kernels
        warnings.simplefilter("ignore")
        return torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8).int_repr(), scale


def _prepack(int8: torch.Tensor, scale: torch.Tensor):
    """(int8 [out, in], float64 scales [out]) -> the kernel's packed weight."""
    zero = torch.zeros(int8.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch._make_per_channel_quantized_tensor(int8, scale, zero, 0)
        return torch.ops.quantized.linear_prepack(quantized, None)


def _pack(weight: torch.Tensor, rotation: torch.Tensor | None, cache: Int8Cache | None = None):
    """float [out, in] -> packed int8 weight (:func:`quantise`), the quantising taken from
    ``cache`` where it holds this weight (:mod:`sa3core.modules.int8_cache`) and stored there
    where it does not."""
    if cache is None:
        return _prepack(*quantise(weight, rotation))
    key = cache.key(weight, 1 if rotation is None else rotation.shape[0])
    stored = cache.get(key, *weight.shape)
    if stored is None:
        stored = quantise(weight, rotation)
        cache.put(key, *stored)
    return _prepack(*stored)


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights and per-row int8 activations; x [..., in] -> float32 [..., out]."""

    def __init__(
        self, packed, bias: torch.Tensor | None, rotation: torch.Tensor | None, in_features: int, out_features: int
    ) -> None:
        super().__init__()
        self.packed = packed
        self.bias = bias  # the float layer's own tensor, not a parameter of this one
        self.rotation = rotation  # [b, b] Hadamard, or None
        self.in_features, self.out_features = in_features, out_features
        self.source: tuple[torch.Tensor, int] | None = None  # the float weight packed, and its version
        self.lora = None  # the LoRA adapters kept apart on the float layer (sa3core.modules.lora.AdaptedWeight)

    def packs(self, linear: nn.Linear) -> bool:
        """Whether this layer was packed from ``linear``'s weight as it is now (same tensor, unchanged)."""
        return self.source is not None and self.source[0] is linear.weight and self.source[1] == linear.weight._version

    @classmethod
    def from_linear(cls, linear: nn.Linear, cache: Int8Cache | None = None) -> Int8Linear:
        """``linear`` packed (its quantised weight from ``cache`` where it holds it, see
        :mod:`sa3core.modules.int8_cache`: the same bits either way)."""
        block = rotation_block(linear.in_features)
        rotation = hadamard(block) if block > 1 else None
        bias = None if linear.bias is None else linear.bias.detach().float()
        layer = cls(_pack(linear.weight, rotation, cache), bias, rotation, linear.in_features, linear.out_features)
        layer.source = (linear.weight, linear.weight._version)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lora = self.lora
        if lora is not None and lora.stages:  # LoRA adapters kept apart: their stages beside the int8 product
            return lora.linear(x.float(), None, self.bias, product=self.product)
        y, row = self._scaled(x)
        return y.mul_(row) if self.bias is None else torch.addcmul(self.bias, y, row)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> x W^T [..., out], without the bias."""
        y, row = self._scaled(x)
        return y.mul_(row)

    def _scaled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the int8 product of x's rows each scaled to peak 1, the rows' peaks [..., 1])."""
        x = x.float()
        if self.rotation is not None:  # H x per block of b features: (..., in / b, b) @ (b, b)
            block = self.rotation.shape[0]
            x = (x.reshape(*x.shape[:-1], -1, block) @ self.rotation).reshape(x.shape)
        row = x.abs().amax(-1, keepdim=True).clamp_min(_ROW_FLOOR)  # (..., 1)
        return torch.ops.quantized.linear_dynamic(x / row, self.packed, reduce_range=True), row

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def int8_inference_copy(
    model: nn.Module,
    select: Callable[[str], bool],
    reuse: dict[str, Int8Linear] | None = None,
    workers: int | None = None,
    cache: Int8Cache | None = None,
) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers named by ``select(name)`` are
    :class:`Int8Linear`; every other tensor is shared with ``model`` (not copied), which stays as it
    was. A layer with LoRA adapters kept apart from its weight (:class:`AdaptedLinear`) packs its
    base weight and runs the adapters' stages beside the int8 product, in float32; at strength 0
    it has no stages and gives the plain int8 layer's bits. ``cache``: an
    :class:`sa3core.modules.int8_cache.Int8Cache` the quantised weights are read from and written
    to (the same bits as without it; trimmed to its size limit once the copy is made).

    Packing reads the float weights at about 0.1-0.2 GB/s per thread; ``workers`` threads (default
    torch's thread count) pack layers side by side: the released small DiT's 100 int8 layers
    (356 M weights) take 3-4.4 s on two cores. ``reuse``: the int8 layers of an earlier copy by
    name (:func:`int8_layers`); one packed from the same, unchanged weight is taken as it is (a
    daemon attaching another set of LoRA adapters kept apart repacks nothing)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and select(name)]
    linears = [model.get_submodule(name) for name in names]
    reuse = reuse or {}

    def int8(name: str, linear: nn.Linear) -> Int8Linear:
        earlier = reuse.get(name)
        layer = earlier if earlier is not None and earlier.packs(linear) else Int8Linear.from_linear(linear, cache)
        layer.lora = getattr(linear, "lora", None)  # a LoRA-adapted layer (the class swapped in place) keeps them
        return layer

    workers = max(1, workers or torch.get_num_threads())
    with ThreadPoolExecutor(workers) as pool:  # the packing ops release the GIL
        swapped = list(pool.map(int8, names, linears))
    if cache is not None:
        cache.trim()
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    result = copy.deepcopy(model, memo).eval()
    for name, layer in zip(names, swapped):
        parent, _, child = name.rpartition(".")
        setattr(result.get_submodule(parent) if parent else result, child, layer)
    return result


def int8_layers(model: nn.Module) -> dict[str, Int8Linear]:
    """The :class:`Int8Linear` layers of a copy, by name (``reuse`` for the next copy)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Int8Linear)}
