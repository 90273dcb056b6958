"""``sa3 export coreml --model RELEASED_FOLDER``: a released model's parts as Core ML ML programs.

Conversion goes through ``torch.export`` (as export/coreml_export.py) from the float32 modules,
through the graphs of export/released_graphs.py, reshaped where Core ML needs it:
- ``dit_condition.mlpackage``: context [B, S, 768], global [B, 768] -> global_embed and the
  keys/values flattened to rank 4 (``[depth, B*splits*heads, S, hd]``, ``[depth, B*heads, S, hd]``:
  Core ML tensors have rank 5 at most). Fixed shapes (the released context is always S tokens).
- ``dit_step.mlpackage``: the ONNX step's inputs with those keys/values and ``frame_mask`` as
  float32 (Core ML has no bool inputs); latent length a ``RangeDim(1, max frames)``. Batch is
  fixed: 1 for post-trained models (no guidance), 2 for base models (a CFG pair).
- ``text_encoder.mlpackage``: one prompt's token ids (int32) and mask (float32, 1 = real token),
  ``[1, max_length]``, -> T5Gemma's last hidden state ``[1, max_length, hidden]``; the tokenizer
  files go to ``tokenizer/`` (tokenising stays in the host, as with ONNX). Batch 1: a base model's
  CFG pair is two calls (the prompt and the empty negative). The embedding table, stored bf16 in
  the released files, is converted to float32 (Core ML has no bf16).
- ``same_decoder.mlpackage`` / ``same_encoder.mlpackage``: one SAME window with its frames cut
  into padding units, ``[.., units, unit]`` (``units`` a ``RangeDim``), so every length in the
  graph is a product of the unit count (coremltools converts no symbolic ``mod``); the random
  draws are inputs, as in ONNX. SAME-S only (SAME-L's band attention is not converted).
Weights and compute stay float32. On Linux the packages are written without loading them
(Core ML predicts only on macOS): the check here is each package's spec, and the tests tie the
reshaped torch graphs that are converted to the eager model.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from sa3core import timebase
from sa3core.config import to_dict
from sa3core.errors import Sa3Error

from . import released_graphs as rg
from .coreml_export import MINIMUM_TARGET, to_mlpackage
from .manifest import Manifest, PartSpec, TensorSpec, staged_output, write_manifest
from .released_export import (
    codec_entry,
    copy_tokenizer,
    inputs_at,
    load_released_for_export,
    same_window,
    unit_frames,
)


class CoreMLTextGraph(nn.Module):
    """input_ids int32 [B, L], attention_mask float32 [B, L] (1 = real) -> hidden float32 [B, L, W].

    Runs the encoder's own forward on a shallow copy whose embedding table is float32 (the
    released table is bf16, which Core ML cannot hold; the rows are upcast after the lookup in
    the eager model, so the numbers are the same)."""

    def __init__(self, encoder) -> None:
        super().__init__()
        table = encoder.embed_tokens.weight.detach()
        twin = copy.copy(encoder)
        twin._modules = dict(encoder._modules)
        twin._modules["embed_tokens"] = nn.Embedding(table.shape[0], table.shape[1], _weight=table.float())
        self.encoder = twin

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids.long(), attention_mask > 0.5).float()


class CoreMLConditionGraph(nn.Module):
    """context, global -> global_embed, keys [depth, B*splits*H, S, hd], values [depth, B*H, S, hd]."""

    def __init__(self, dit) -> None:
        super().__init__()
        self.part = rg.ReleasedConditionGraph(dit)

    def forward(self, context, global_cond):
        global_embed, keys, values = self.part(context, global_cond)
        depth, S, hd = keys.shape[0], keys.shape[-2], keys.shape[-1]
        return global_embed, keys.reshape(depth, -1, S, hd), values.reshape(depth, -1, S, hd)


class CoreMLStepGraph(nn.Module):
    """The step with rank-4 keys/values and a float frame mask (1 = real frame)."""

    def __init__(self, dit) -> None:
        super().__init__()
        self.step = rg.ReleasedStepGraph(dit)
        c = dit.config
        self.heads, self.splits = c.embed_dim // c.head_dim, 2 if c.attn_kwargs.differential else 1

    def forward(self, x, t, global_embed, keys, values, local, frame_mask):
        from sa3core.released.dit import ReleasedCondition

        B = x.shape[0]
        per_block_keys = [k.reshape(B, self.splits, self.heads, k.shape[1], k.shape[2]) for k in keys.unbind(0)]
        per_block_values = [v.reshape(B, self.heads, v.shape[1], v.shape[2]) for v in values.unbind(0)]
        cond = ReleasedCondition(global_embed, per_block_keys, per_block_values)
        return self.step.run(x, t, cond, local, frame_mask > 0.5)


class CoreMLDecoderGraph(nn.Module):
    """latents, bottleneck_noise [1, C, units, unit], token_noise [1, units, unit*16, D],
    frame_valid [units, unit] -> audio [1, 2, units*unit*4096] (crop to the real frames)."""

    def __init__(self, same) -> None:
        super().__init__()
        self.part = rg.SameDecoderWindowGraph(same)

    def forward(self, latents, bottleneck_noise, token_noise, frame_valid):
        B, C, units, unit = latents.shape
        frames = units * unit
        group, width = self.part.same.decoder.layers[3].out_group, token_noise.shape[-1]
        return self.part(
            latents.reshape(B, C, frames),
            bottleneck_noise.reshape(B, C, frames),
            token_noise.reshape(B, frames, group, width),
            frame_valid.reshape(frames),
        )


class CoreMLEncoderGraph(nn.Module):
    """audio [1, 2, units, unit*4096] (zero-padded) -> latents [1, C, units*unit] (crop to the real frames)."""

    def __init__(self, same) -> None:
        super().__init__()
        self.part = rg.SameEncoderWindowGraph(same)

    def forward(self, audio):
        B, channels, units, span = audio.shape
        frames = units * (span // timebase.SAMPLES_PER_FRAME)  # span is fixed: no symbolic division
        return self.part.encode(audio.reshape(B, channels, units * span), None, frames)


WINDOW_AXIS = {"audio": 2, "latents": 2, "bottleneck_noise": 2, "token_noise": 1, "frame_valid": 0}  # "units"


def coreml_window_inputs(part: str, feeds: dict, unit: int) -> tuple[torch.Tensor, ...]:
    """The ONNX window feeds (export.released_export.same_window) in the Core ML graphs' shapes."""
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    if part == "same_encoder":
        audio = t["audio"]
        return (audio.reshape(audio.shape[0], audio.shape[1], -1, unit * timebase.SAMPLES_PER_FRAME),)
    B, C, frames = t["latents"].shape
    units = frames // unit
    noise = t["token_noise"]
    return (
        t["latents"].reshape(B, C, units, unit),
        t["bottleneck_noise"].reshape(B, C, units, unit),
        noise.reshape(B, units, unit * noise.shape[2], noise.shape[3]),
        t["frame_valid"].reshape(units, unit),
    )


def _convert(graph, args, part: PartSpec, flexible: dict[int, dict[int, tuple[int, int]]], out: Path, shared: bool):
    """torch.export (one shared Dim for every flexible axis when ``shared``), then ct.convert into
    ``out / part.file``, its inputs and outputs named as ``part`` says."""
    from torch.export import Dim

    units = Dim("units", min=1, max=4096)
    dynamic = tuple(
        {axis: (units if shared else Dim.DYNAMIC) for axis in flexible.get(i, {})} for i in range(len(args))
    )
    with rg.exporting(), torch.no_grad():
        program = torch.export.export(graph.eval(), args, dynamic_shapes=dynamic).run_decompositions()
    inputs, outputs = [s.name for s in part.inputs], [s.name for s in part.outputs]
    to_mlpackage(program, args, inputs, flexible, out / part.file, outputs)


def export_released_coreml(folder: str | Path, output: str | Path, force: bool = False, progress=print) -> Manifest:
    """Write the packages above, ``model_config.json`` and a manifest (runtime ``coreml``) into
    ``output``; they appear there only once every part converted."""
    try:
        import coremltools  # noqa: F401
    except ModuleNotFoundError:
        raise Sa3Error("Core ML export needs coremltools; install it with `pip install sa3[export-coreml]`") from None
    folder = Path(folder)
    backend = load_released_for_export(folder)
    if backend.autoencoder.encoder.layers[0].window is not None:
        raise Sa3Error("Core ML export covers SAME-S models (the small ones); this model's SAME-L is ONNX only")
    with staged_output(output, force) as out:
        return _export_into(out, folder, backend, progress)


def _export_into(out: Path, folder: Path, backend, progress) -> Manifest:
    from sa3core.families.released import ReleasedFamily

    settings = ReleasedFamily.settings(folder, backend.folder.config)
    c, same = backend.dit.config, backend.autoencoder
    batch = 1 if settings.cfg == 1.0 else 2
    max_frames = int(-(-timebase.seconds_to_samples(settings.max_seconds) // timebase.SAMPLES_PER_FRAME))
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        context, global_cond = backend.context(["a prompt"] * batch, torch.full((batch,), 10.0))
    context, global_cond = context.clone(), global_cond.clone()
    S, heads = context.shape[1], c.embed_dim // c.head_dim
    splits = 2 if c.attn_kwargs.differential else 1
    f32 = lambda name, shape, units="": TensorSpec(name, "float32", shape, units)  # noqa: E731
    keys = f32("keys", [c.depth, batch * splits * heads, S, c.head_dim], "batch, splits and heads merged")
    values = f32("values", [c.depth, batch * heads, S, c.head_dim], "batch and heads merged")
    global_embed = f32("global_embed", [batch, c.embed_dim])
    parts = {}

    progress("exporting dit_condition ...")
    inputs = [f32("context", [batch, S, c.cond_token_dim]), f32("global_cond", [batch, c.global_cond_dim])]
    parts["dit_condition"] = PartSpec("dit_condition.mlpackage", inputs, [global_embed, keys, values])
    _convert(CoreMLConditionGraph(backend.dit), (context, global_cond), parts["dit_condition"], {}, out, shared=False)

    progress("exporting dit_step ...")
    with torch.inference_mode():
        _, k, v = CoreMLConditionGraph(backend.dit)(context, global_cond)
    frames, C = 11, c.io_channels
    args = (
        torch.randn(batch, C, frames, generator=gen),
        torch.rand(batch, generator=gen),
        torch.randn(batch, c.embed_dim, generator=gen),
        k.clone(),
        v.clone(),
        torch.randn(batch, C + 1, frames, generator=gen),
        torch.ones(batch, frames),
    )
    inputs = [
        f32("x", [batch, C, "frames"], "noisy latents"),
        f32("t", [batch], "flow time in [0, 1]"),
        global_embed,
        keys,
        values,
        f32("local", [batch, C + 1, "frames"], "concat(mask, mask * latents); zeros for none"),
        f32("frame_mask", [batch, "frames"], "1 = real frame"),
    ]
    flexible = {0: {2: (1, max_frames)}, 5: {2: (1, max_frames)}, 6: {1: (1, max_frames)}}
    parts["dit_step"] = PartSpec("dit_step.mlpackage", inputs, [f32("velocity", [batch, C, "frames"])])
    _convert(CoreMLStepGraph(backend.dit), args, parts["dit_step"], flexible, out, shared=False)

    progress("exporting text_encoder ...")
    text = backend.text_encoder
    length, width = text.tokenizer.max_length, text.encoder.config.hidden_size
    ids, mask = inputs_at("text_encoder", backend, 1, 0, length, gen)
    inputs = [
        TensorSpec("input_ids", "int32", [1, length], "token ids"),
        f32("attention_mask", [1, length], "1 = real"),
    ]
    parts["text_encoder"] = PartSpec("text_encoder.mlpackage", inputs, [f32("hidden", [1, length, width])])
    _convert(CoreMLTextGraph(text.encoder), (ids.int(), mask.float()), parts["text_encoder"], {}, out, shared=False)
    copy_tokenizer(backend, out)

    units = unit_frames(backend)
    for part, graph in (("same_decoder", CoreMLDecoderGraph(same)), ("same_encoder", CoreMLEncoderGraph(same))):
        progress(f"exporting {part} ...")
        unit = units[part]
        max_units = -(-128 // unit)  # one released window (128 latents) at most
        feeds, _ = same_window(part, backend, 1, 3 * unit, gen, seed=0)
        args = coreml_window_inputs(part, feeds, unit)
        names = list(feeds)
        inputs = [f32(n, [*a.shape[:axis], "units", *a.shape[axis + 1 :]]) for n, a, axis in
                  zip(names, args, (WINDOW_AXIS[n] for n in names))]  # fmt: skip
        flexible = {i: {WINDOW_AXIS[n]: (1, max_units)} for i, n in enumerate(names)}
        output = "audio" if part == "same_decoder" else "latents"
        parts[part] = PartSpec(f"{part}.mlpackage", inputs, [f32(output, [1, "...", "units*unit*..."], "crop")])
        _convert(graph, args, parts[part], flexible, out, shared=True)

    shutil.copyfile(folder / "model_config.json", out / "model_config.json")
    manifest = Manifest(
        runtime="coreml",
        model={
            "family": "released",
            "name": folder.name,
            "batch": batch,
            "context_tokens": S,
            "text_max_length": text.tokenizer.max_length,
        },
        dit=json.loads(json.dumps(to_dict(c), default=str)),
        same=json.loads(json.dumps(to_dict(same.config), default=str)),
        parts=parts,
        codec=codec_entry(backend),  # windows, draws, padding units and span contexts, as for ONNX
        minimum_target=MINIMUM_TARGET,
        versions={"torch": torch.__version__, "coremltools": __import__("coremltools").__version__},
    )
    write_manifest(out, manifest)
    return manifest
