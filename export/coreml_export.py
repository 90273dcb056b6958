"""``sa3 export coreml``: a Core ML ML-program package for the DiT step.

Conversion goes through ``torch.export`` (coremltools' TorchScript path fails with numpy 2.4).
``dit_step.mlpackage`` takes the ONNX step graph's inputs with the batch fixed at 2 (the
conditional and unconditional rows of one CFG step), masks as float32 (Core ML has no bool
inputs) and the keys flattened to ``[depth, 2*heads, splits, context, qk_dim]`` (Core ML
tensors have rank 5 at most). Latent length (1 .. the model's maximum) and context length
(3 .. 258) are ``ct.RangeDim`` axes; weights and compute stay float32 so that results can be
compared with torch. On Linux the package is written without loading it (prediction needs macOS).

Not done yet: the SAME decoder. coremltools 9 cannot convert its window arithmetic (it has no
symbolic ``mod``, pads only by constants, and types symbolic floor-divided sizes as floats in
``expand``); see docs/export.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sa3core import timebase
from sa3core.config import to_dict
from sa3core.errors import Sa3Error
from sa3core.models.dit import Condition

from . import graphs
from .manifest import Manifest, PartSpec, prepare_output, write_manifest

MINIMUM_TARGET = "macOS15"
COREML_BATCH = 2


class CoreMLStepGraph(nn.Module):
    """The DiT step with float masks (Core ML inputs cannot be bool) and keys flattened to
    [depth, B*H, splits, S, qk_dim] (Core ML tensors have rank 5 at most)."""

    def __init__(self, dit) -> None:
        super().__init__()
        self.dit = dit

    def forward(self, x, t, duration, context_mask, keys, values, inpaint_latents, inpaint_mask, frame_mask):
        B, H = x.shape[0], self.dit.config.heads
        per_block = [
            k.reshape(B, H, k.shape[1], k.shape[2], k.shape[3]) for k in keys.unbind(0)
        ]  # (B, H, splits, S, qk)
        cond = Condition(duration=duration, mask=context_mask > 0.5, keys=per_block, values=list(values.unbind(0)))
        return self.dit(x, t, cond, inpaint_latents, inpaint_mask, frame_mask > 0.5)


def _convert(graph, args, flexible: dict[int, dict[int, tuple[int, int]]], names: list[str], path: Path):
    """torch.export with the flexible axes, then ct.convert with a RangeDim per flexible axis."""
    import coremltools as ct
    from torch.export import Dim

    dynamic = tuple({axis: Dim.DYNAMIC for axis in flexible.get(i, {})} for i in range(len(args)))
    with graphs.exporting(), torch.no_grad():
        program = torch.export.export(graph, args, dynamic_shapes=dynamic).run_decompositions()
    inputs = []
    for i, (name, arg) in enumerate(zip(names, args)):
        shape = [
            ct.RangeDim(*flexible[i][axis], default=size) if axis in flexible.get(i, {}) else size
            for axis, size in enumerate(arg.shape)
        ]
        inputs.append(ct.TensorType(name=name, shape=ct.Shape(shape), dtype=arg.numpy().dtype))
    model = ct.convert(
        program,
        inputs=inputs,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, MINIMUM_TARGET),
        compute_precision=ct.precision.FLOAT32,
        skip_model_load=True,
    )
    model.save(str(path))
    return model


def export_coreml(autoencoder, dit, settings, output, force: bool = False, progress=print) -> Manifest:
    """Write dit_step.mlpackage, model.json and a manifest into ``output``."""
    try:
        import coremltools  # noqa: F401
    except ModuleNotFoundError:
        raise Sa3Error("Core ML export needs coremltools; install it with `pip install sa3[export-coreml]`") from None
    out = prepare_output(output, force)
    c = dit.config
    max_frames = timebase.samples_to_frames(timebase.seconds_to_samples(settings.max_seconds))
    gen = torch.Generator().manual_seed(0)
    parts = {}

    parts.update(_export_dit(dit, out, max_frames, gen, progress))
    (out / "model.json").write_text(json.dumps(to_dict(settings), indent=2) + "\n")
    manifest = Manifest(
        runtime="coreml",
        model=to_dict(settings),
        dit=to_dict(c),
        same=to_dict(autoencoder.config),
        parts=parts,
        codec={"chunk_frames": autoencoder.config.chunk_frames, "receptive_frames": autoencoder.receptive_frames},
        minimum_target=MINIMUM_TARGET,
        versions={"torch": torch.__version__, "coremltools": __import__("coremltools").__version__},
    )
    write_manifest(out, manifest)
    return manifest


def _export_dit(dit, out: Path, max_frames: int, gen: torch.Generator, progress) -> dict[str, PartSpec]:
    from .onnx_export import inputs_at, part_specs

    specs = part_specs(dit.config, "hash")
    parts = {}
    progress("exporting dit_step ...")
    args = inputs_at("dit_step", dit, COREML_BATCH, 11, 5, gen)
    args = tuple(a.float() if a.dtype == torch.bool else a for a in args)  # masks as float
    keys = args[4]  # (depth, B, H, splits, S, qk) -> (depth, B*H, splits, S, qk)
    args = (*args[:4], keys.reshape(keys.shape[0], -1, *keys.shape[3:]), *args[5:])
    inputs, outputs = specs["dit_step"]
    names = [s.name for s in inputs]
    flexible = {
        0: {2: (1, max_frames)},
        3: {1: (3, 258)},
        4: {3: (3, 258)},
        5: {3: (3, 258)},
        6: {2: (1, max_frames)},
        7: {2: (1, max_frames)},
        8: {1: (1, max_frames)},
    }
    _convert(CoreMLStepGraph(dit).eval(), args, flexible, names, out / "dit_step.mlpackage")
    inputs[4].shape = [dit.config.depth, COREML_BATCH * dit.config.heads, *inputs[4].shape[3:]]
    inputs[4].units = "dit_condition keys with batch and heads merged"
    for spec in inputs:
        spec.shape = [COREML_BATCH if size == "batch" else size for size in spec.shape]
        spec.dtype = "float32" if spec.dtype == "bool" else spec.dtype
    parts["dit_step"] = PartSpec(file="dit_step.mlpackage", inputs=inputs, outputs=outputs)
    return parts
