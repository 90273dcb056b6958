"""``sa3 export coreml``: Core ML ML-program packages for the DiT step and the SAME decoder.

Conversion goes through ``torch.export`` (coremltools' TorchScript path fails with numpy 2.4).
- ``dit_step.mlpackage`` takes the ONNX step graph's inputs with the batch fixed at 2 (the
  conditional and unconditional rows of one CFG step), masks as float32 (Core ML has no bool
  inputs) and the keys flattened to ``[depth, 2*heads, splits, context, qk_dim]`` (Core ML
  tensors have rank 5 at most). Latent length and context length (3 .. 258) are ``RangeDim``s.
- ``same_decoder.mlpackage`` takes latents already cut into attention windows,
  ``[1, 256, windows, window_frames]`` (the host zero-pads the frames to whole windows), and
  ``frame_valid float [1, windows, window_frames]`` (1 = real frame). coremltools 9 converts
  no symbolic ``mod``, pads only by constants and types symbolic floor-divided sizes as floats,
  so the graph is written with products of the window count only: shifted layers pad half a
  window on each side (a constant) and reshape into ``windows + 1`` rows. Padded frames are
  masked as keys and reset to zero after every layer, so the real frames get the eager
  model's numbers (crop the audio to them). ``windows`` is a ``RangeDim``.

Weights and compute stay float32 so that results can be compared with torch. On Linux the
packages are written without loading them (predictions need macOS).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sa3core import timebase
from sa3core.config import to_dict
from sa3core.errors import Sa3Error
from sa3core.models.dit import Condition

from . import graphs
from .manifest import Manifest, PartSpec, TensorSpec, semitone_entry, staged_output, write_manifest

MINIMUM_TARGET = "macOS15"
COREML_BATCH = 2


class CoreMLStepGraph(nn.Module):
    """The DiT step with float masks (Core ML inputs cannot be bool) and keys flattened to
    [depth, B*H, splits, S, qk_dim] (Core ML tensors have rank 5 at most); ``music`` [B, 27]
    when the DiT has music conditioning."""

    def __init__(self, dit) -> None:
        super().__init__()
        self.dit = dit

    def forward(
        self, x, t, duration, context_mask, keys, values, inpaint_latents, inpaint_mask, frame_mask, music=None
    ):
        B, H = x.shape[0], self.dit.config.heads
        per_block = [
            k.reshape(B, H, k.shape[1], k.shape[2], k.shape[3]) for k in keys.unbind(0)
        ]  # (B, H, splits, S, qk)
        cond = Condition(duration, context_mask > 0.5, per_block, list(values.unbind(0)), music)
        return self.dit(x, t, cond, inpaint_latents, inpaint_mask, frame_mask > 0.5)


class CoreMLDecoderGraph(nn.Module):
    """latents [1, 256, windows, W], frame_valid float [1, windows, W] -> audio [1, 2, windows*W*4096]."""

    def __init__(self, same) -> None:
        super().__init__()
        self.same = same

    def forward(self, latents: torch.Tensor, frame_valid: torch.Tensor) -> torch.Tensor:
        s = self.same
        W, windows = s.decoder.window_frames, latents.shape[2]
        frames = windows * W
        x = s.decoder_tokens(latents.reshape(1, timebase.LATENT_CHANNELS, frames))  # (1, F, 1+stride, width)
        valid = frame_valid.reshape(1, frames)
        sequence = padded_local_transformer(s.decoder, x, valid, windows)
        refined = None
        if s.refiner is not None:
            refined = padded_local_transformer(s.refiner, s.refiner_in(sequence), valid, windows)
        flat = latents.reshape(1, timebase.LATENT_CHANNELS, frames)
        return s.tokens_to_audio(s.refined_tokens(sequence, refined), valid, flat)  # (1, 2, F*4096), silent past


def padded_local_transformer(module, x: torch.Tensor, valid: torch.Tensor, windows: int) -> torch.Tensor:
    """``module``'s blocks over x [1, F, T, width] whose frames past ``valid`` [1, F] (1 = real) are
    padding: they are masked out of every window and reset to zero after each block."""
    W = module.window_frames
    half, frames = W // 2, windows * W
    T, width = x.shape[2], x.shape[3]
    keep = valid.reshape(1, frames, 1, 1) > 0.5
    for index, block in enumerate(module.blocks):
        shifted = index % 2 == 1  # odd layers move the window grid by half a window
        if shifted:
            rows_in, mask, rows = F.pad(x, (0, 0, 0, 0, half, half)), F.pad(valid, (half, half)), windows + 1
        else:
            rows_in, mask, rows = x, valid, windows
        row_mask = mask.reshape(rows, W, 1).repeat(1, 1, T).reshape(rows, 1, 1, W * T) > 0.5
        out = block(rows_in.reshape(rows, W * T, width), module.cos, module.sin, row_mask)  # (rows, W*T, width)
        out = out.reshape(1, rows * W, T, width)
        if shifted:
            out = out[:, half : half + frames]  # (1, F, T, width)
        x = torch.where(keep, out, torch.zeros_like(out))  # a window of padding only gives NaN: reset to zero
    return x


def decoder_inputs(latents: torch.Tensor, window_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """latents [1, 256, frames] -> the Core ML decoder's (latents [1, 256, windows, W], frame_valid [1, windows, W])."""
    frames = latents.shape[-1]
    windows = -(-frames // window_frames)
    padded = F.pad(latents, (0, windows * window_frames - frames))
    valid = (torch.arange(windows * window_frames) < frames).float()
    return padded.reshape(1, -1, windows, window_frames), valid.reshape(1, windows, window_frames)


def _convert(
    graph, args, flexible: dict[int, dict[int, tuple[int, int]]], names: list[str], path: Path, outputs: list[str]
):
    """torch.export with the flexible axes, then ct.convert with a RangeDim per flexible axis."""
    from torch.export import Dim

    dynamic = tuple({axis: Dim.DYNAMIC for axis in flexible.get(i, {})} for i in range(len(args)))
    with graphs.exporting(), torch.no_grad():
        program = torch.export.export(graph, args, dynamic_shapes=dynamic).run_decompositions()
    return to_mlpackage(program, args, names, flexible, path, outputs)


def to_mlpackage(
    program, args, names: list[str], flexible: dict[int, dict[int, tuple[int, int]]], path: Path, outputs: list[str]
):
    """An exported program as an ML program package at ``path`` (float32, a RangeDim per flexible
    axis of the example ``args``), its inputs named ``names`` and its outputs ``outputs`` (the
    manifest's names: a host looks the prediction's arrays up by them; unnamed, coremltools calls
    them after the last op, ``add_11149``); also used by the released models' export."""
    import coremltools as ct

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
        outputs=[ct.TensorType(name=name) for name in outputs],
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, MINIMUM_TARGET),
        compute_precision=ct.precision.FLOAT32,
        skip_model_load=True,
    )
    model.save(str(path))
    return model


def export_coreml(autoencoder, dit, settings, output, force: bool = False, progress=print) -> Manifest:
    """Write same_decoder.mlpackage, dit_step.mlpackage, model.json and a manifest into ``output``
    (they appear there only once every part converted)."""
    try:
        import coremltools  # noqa: F401
    except ModuleNotFoundError:
        raise Sa3Error("Core ML export needs coremltools; install it with `pip install sa3[export-coreml]`") from None
    with staged_output(output, force) as out:
        return _export_into(out, autoencoder, dit, settings, progress)


def _export_into(out: Path, autoencoder, dit, settings, progress) -> Manifest:
    c = dit.config
    max_frames = timebase.samples_to_frames(timebase.seconds_to_samples(settings.max_seconds))
    gen = torch.Generator().manual_seed(0)
    W = autoencoder.config.window_frames
    max_windows = -(-max_frames // W)
    progress("exporting same_decoder ...")
    example = decoder_inputs(torch.randn(1, timebase.LATENT_CHANNELS, 3 * W, generator=gen), W)
    flexible = {0: {2: (1, max_windows)}, 1: {1: (1, max_windows)}}
    decoder = PartSpec(
        file="same_decoder.mlpackage",
        inputs=[
            TensorSpec("latents", "float32", [1, timebase.LATENT_CHANNELS, "windows", W], "frames zero-padded"),
            TensorSpec("frame_valid", "float32", [1, "windows", W], "1 = real frame, 0 = padding"),
        ],
        outputs=[TensorSpec("audio", "float32", [1, timebase.CHANNELS, "windows*W*4096"], "crop to real frames")],
    )
    names, outputs = [s.name for s in decoder.inputs], [s.name for s in decoder.outputs]
    _convert(CoreMLDecoderGraph(autoencoder).eval(), example, flexible, names, out / decoder.file, outputs)
    parts = {"same_decoder": decoder}

    parts.update(_export_dit(dit, out, max_frames, gen, progress))
    (out / "model.json").write_text(json.dumps(to_dict(settings), indent=2) + "\n")
    manifest = Manifest(
        runtime="coreml",
        model=to_dict(settings),
        dit=to_dict(c),
        same=to_dict(autoencoder.config),
        parts=parts,
        codec={"chunk_frames": autoencoder.config.chunk_frames, "receptive_frames": autoencoder.receptive_frames},
        semitones=semitone_entry(autoencoder),
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
    _convert(CoreMLStepGraph(dit).eval(), args, flexible, names, out / "dit_step.mlpackage", [s.name for s in outputs])
    inputs[4].shape = [dit.config.depth, COREML_BATCH * dit.config.heads, *inputs[4].shape[3:]]
    inputs[4].units = "dit_condition keys with batch and heads merged"
    for spec in inputs:
        spec.shape = [COREML_BATCH if size == "batch" else size for size in spec.shape]
        spec.dtype = "float32" if spec.dtype == "bool" else spec.dtype
    parts["dit_step"] = PartSpec(file="dit_step.mlpackage", inputs=inputs, outputs=outputs)
    return parts
