"""``sa3 export onnx --model RELEASED_FOLDER``: a released Stable Audio 3 model as ONNX files.

A released folder (``model_config.json``, ``model.safetensors``, the T5Gemma folder) becomes,
in the output folder (docs/export.md, "Released models"):
- ``text_encoder.onnx``: token ids + mask -> T5Gemma's last hidden state (tokenisation stays
  in Python, ``tokenizer/`` holds the tokenizer files);
- ``dit_condition.onnx``: context + global condition -> global embed and every block's
  cross-attention keys/values, stacked (once per request);
- ``dit_step.onnx``: one velocity, dynamic batch and length;
- ``same_encoder.onnx`` / ``same_decoder.onnx``: one SAME window, dynamic frame count; the
  released long-input windows (128 latents overlapping 32) and their stitching stay in Python,
  and the random draws come in as inputs (export/released_graphs.py);
- ``conditioners.safetensors`` (the prompt's learned padding and the seconds conditioner: two
  small layers run in torch), a copy of ``model_config.json``, and ``manifest.json``.

Every graph traces the float32 modules. After writing, each file is reloaded in onnxruntime,
run at two lengths and batches other than the traced ones and compared to the eager float32
model; the measured differences go into the manifest, and a difference above
``TOLERANCE * (1 + max |torch|)`` fails the export with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.export import Dim

from sa3core import timebase
from sa3core.config import to_dict
from sa3core.errors import Sa3Error

from . import released_graphs as rg
from .manifest import Manifest, PartSpec, TensorSpec, staged_output, write_manifest
from .onnx_export import write_onnx

FAMILY = "released"
TOLERANCE = 1e-4  # |onnx - torch| <= TOLERANCE * (1 + max |torch|) per part, checked after every export
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
EXAMPLE_BATCH, EXAMPLE_FRAMES, EXAMPLE_TOKENS = 2, 11, 7
CHECKS = ((1, 5, 4), (3, 19, 9))  # (batch, frames, tokens) the self-check runs, none the traced ones


def load_released_for_export(folder: str | Path):
    """The float32 torch backend of a released folder (DiT, conditioners, SAME and T5Gemma in float32)."""
    from sa3core.released import backend as released_backend

    return released_backend.load(folder, bf16=False, text_dtype=torch.float32)


def _check_supported(backend) -> None:
    bottleneck = backend.autoencoder.bottleneck
    if bottleneck.running_std is None:
        raise Sa3Error("this SAME has no running_std (auto_scale false); sa3 exports only the released bottlenecks")


# ----------------------------------------------------------------------------- parts
def part_specs(backend) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """Inputs and outputs of every part, as the manifest records them."""
    c = backend.dit.config
    C, E, heads = c.io_channels, c.embed_dim, c.embed_dim // c.head_dim
    splits = 2 if c.attn_kwargs.differential else 1
    same = backend.autoencoder
    encoder, decoder = same.encoder.layers[0], same.decoder.layers[3]
    text_dim = backend.text_encoder.dim
    latents = lambda name, units: TensorSpec(name, "float32", ["batch", C, "frames"], units)  # noqa: E731
    keys = TensorSpec("keys", "float32", [c.depth, "batch", splits, heads, "context", c.head_dim], "normalised")
    values = TensorSpec("values", "float32", [c.depth, "batch", heads, "context", c.head_dim])
    global_embed = TensorSpec("global_embed", "float32", ["batch", E], "before the timestep is added")
    encoder_inputs = [
        TensorSpec("audio", "float32", ["batch", timebase.CHANNELS, "frames*4096"], "44.1 kHz, zero-padded")
    ]
    if encoder.mask_noise > 0:  # SAME-L: its encoder's learned tokens get noise too
        encoder_inputs.append(
            TensorSpec("token_noise", "float32", ["batch", "frames", 1, encoder.new_tokens.shape[-1]], "N(0, 1)")
        )
    return {
        "text_encoder": (
            [
                TensorSpec("input_ids", "int64", ["batch", "tokens"], "T5Gemma ids (tokenizer/tokenizer.json)"),
                TensorSpec("attention_mask", "bool", ["batch", "tokens"], "True = real token"),
            ],
            [TensorSpec("hidden", "float32", ["batch", "tokens", text_dim], "last hidden state")],
        ),
        "dit_condition": (
            [
                TensorSpec("context", "float32", ["batch", "context", c.cond_token_dim], "prompt tokens + seconds"),
                TensorSpec("global_cond", "float32", ["batch", c.global_cond_dim], "seconds conditioner"),
            ],
            [global_embed, keys, values],
        ),
        "dit_step": (
            [
                latents("x", "noisy latents x_t"),
                TensorSpec("t", "float32", ["batch"], "flow time in [0, 1], 1 = noise"),
                global_embed,
                keys,
                values,
                TensorSpec("local", "float32", ["batch", C + 1, "frames"], "concat(mask, mask * latents); 0 = none"),
                TensorSpec("frame_mask", "bool", ["batch", "frames"], "True = real frame"),
            ],
            [latents("velocity", "v = noise - x0")],
        ),
        "same_encoder": (encoder_inputs, [latents("latents", "crop to the real frames")]),
        "same_decoder": (
            [
                latents("latents", "zero past the real frames"),
                latents("bottleneck_noise", "N(0, 1), zero past the real frames"),
                TensorSpec(
                    "token_noise", "float32", ["batch", "frames", decoder.out_group, decoder.new_tokens.shape[-1]]
                ),
                TensorSpec("frame_valid", "float32", ["frames"], "1 = real frame, 0 = padding"),
            ],
            [TensorSpec("audio", "float32", ["batch", timebase.CHANNELS, "frames*4096"], "crop to the real frames")],
        ),
    }


def build_graph(part: str, backend) -> torch.nn.Module:
    builders = {
        "text_encoder": lambda: rg.T5GemmaGraph(backend.text_encoder.encoder),
        "dit_condition": lambda: rg.ReleasedConditionGraph(backend.dit),
        "dit_step": lambda: rg.ReleasedStepGraph(backend.dit),
        "same_encoder": lambda: rg.SameEncoderWindowGraph(backend.autoencoder),
        "same_decoder": lambda: rg.SameDecoderWindowGraph(backend.autoencoder),
    }
    return builders[part]().eval()


def unit_frames(backend) -> dict[str, int]:
    """Frames per padding unit of each SAME window graph (their frame counts are multiples of it)."""
    same = backend.autoencoder
    return {
        "same_encoder": same.encoder.layers[0].unit_frames(),
        "same_decoder": same.decoder.layers[3].unit_frames(),
    }


def codec_entry(backend) -> dict[str, int | None]:
    """The manifest's ``codec``: the released windows and what the backend draws per window."""
    from sa3core.released.same import OVERLAP_LATENTS, WINDOW_LATENTS

    same = backend.autoencoder
    encoder, decoder = same.encoder.layers[0], same.decoder.layers[3]
    units = unit_frames(backend)
    return {
        "chunked": int(backend.chunked),
        "window_latents": WINDOW_LATENTS,
        "overlap_latents": OVERLAP_LATENTS,
        "encoder_unit_frames": units["same_encoder"],
        "decoder_unit_frames": units["same_decoder"],
        "encoder_token_noise": int(encoder.mask_noise > 0),
        "encoder_width": int(encoder.new_tokens.shape[-1]),
        "bottleneck_noise": int(same.bottleneck.noise_regularize),
        "decoder_token_noise": int(decoder.mask_noise > 0),
        "decoder_out_group": int(decoder.out_group),
        "decoder_width": int(decoder.new_tokens.shape[-1]),
        # frames of context a run on part of a window needs each side (None: whole windows)
        "encoder_span_context": encoder.span_context(),
        "decoder_span_context": decoder.span_context(),
    }


def same_window(part: str, backend, batch: int, frames: int, generator: torch.Generator, seed: int):
    """Random audio or latents of ``frames`` -> (the window graph's feeds, their noise drawn by the
    backend's own helpers from a generator seeded ``seed``, and the input tensor)."""
    from sa3core.released.onnx_backend import decoder_window_feeds, encoder_window_feeds

    codec, draws = codec_entry(backend), torch.Generator().manual_seed(seed)
    if part == "same_encoder":
        audio = torch.randn(batch, timebase.CHANNELS, frames * timebase.SAMPLES_PER_FRAME, generator=generator) * 0.3
        return encoder_window_feeds(audio, codec, draws)[0], audio
    latents = torch.randn(batch, backend.dit.config.io_channels, frames, generator=generator)
    return decoder_window_feeds(latents, codec, draws)[0], latents


def copy_tokenizer(backend, out: Path) -> None:
    """The released text encoder's tokenizer files into ``out/tokenizer`` (tokenising stays in the host)."""
    text_folder = backend.folder.text_encoder_dir()
    (out / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
        if (text_folder / name).is_file():
            shutil.copyfile(text_folder / name, out / "tokenizer" / name)


def inputs_at(part: str, backend, batch: int, frames: int, tokens: int, generator: torch.Generator):
    """Example inputs (random, valid) for one part. SAME frame counts are rounded up to whole units."""
    randn = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    c = backend.dit.config
    C = c.io_channels
    if part == "text_encoder":
        vocab = backend.text_encoder.encoder.config.vocab_size
        ids = torch.randint(3, vocab, (batch, tokens), generator=generator)
        mask = torch.ones(batch, tokens, dtype=torch.bool)
        mask[-1, : tokens // 2] = False  # a shorter prompt, left-padded as Gemma pads
        ids[~mask] = 0
        return ids, mask
    if part == "dit_condition":
        return randn(batch, tokens, c.cond_token_dim), randn(batch, c.global_cond_dim)
    if part == "dit_step":
        with torch.no_grad():
            cond = backend.dit.encode_condition(randn(batch, tokens, c.cond_token_dim), randn(batch, c.global_cond_dim))
        frame_mask = torch.ones(batch, frames, dtype=torch.bool)
        frame_mask[-1, frames - frames // 3 :] = False  # a shorter item padded to the batch's length
        keep = (torch.rand(batch, 1, frames, generator=generator) > 0.5).float()
        local = torch.cat([keep, randn(batch, C, frames) * keep], dim=1)
        x, t = randn(batch, C, frames), torch.rand(batch, generator=generator)
        return x, t, cond.global_embed, torch.stack(cond.keys), torch.stack(cond.values), local, frame_mask
    feeds = same_window(part, backend, batch, frames, generator, seed=0)[0]
    return tuple(torch.from_numpy(feeds[spec.name]) for spec in part_specs(backend)[part][0])
    raise ValueError(f"unknown part {part!r}")


def _dynamic_shapes(part: str, inputs: list[TensorSpec], unit: int | None):
    """Named axes are dynamic; the SAME windows' frames are ``unit * units`` (a derived dim), so
    every reshape into attention units is provably whole."""
    batch = Dim("batch", min=1, max=1024)
    if unit is None:
        return tuple(
            {axis: Dim.DYNAMIC for axis, size in enumerate(spec.shape) if isinstance(size, str)} for spec in inputs
        )
    units = Dim("units", min=1, max=4096)
    sizes = {"batch": batch, "frames": unit * units, "frames*4096": unit * timebase.SAMPLES_PER_FRAME * units}
    return tuple(
        {axis: sizes[size] for axis, size in enumerate(spec.shape) if isinstance(size, str)} for spec in inputs
    )


def export_part(part, graph, args, inputs, outputs, path: Path, opset: int, unit: int | None) -> None:
    with rg.exporting(), rg.onnxruntime_attention(), torch.no_grad():
        write_onnx(graph, args, inputs, outputs, path, opset, _dynamic_shapes(part, inputs, unit))


# ----------------------------------------------------------------------------- export
def export_released_onnx(
    folder: str | Path,
    output: str | Path,
    opset: int = 18,
    force: bool = False,
    check: bool = True,
    progress=print,
    parts: tuple[str, ...] | None = None,
) -> Manifest:
    """Export a released folder's parts into ``output`` (see the module docstring); with
    ``check``, reload and compare each to torch (Sa3Error if off). ``parts`` limits the export
    (tests and benchmarks; a backend needs all five)."""
    folder = Path(folder)
    backend = load_released_for_export(folder)
    _check_supported(backend)
    with staged_output(output, force) as out:
        return _export_into(out, folder, backend, opset, check, progress, parts)


def _export_into(out: Path, folder: Path, backend, opset, check, progress, only) -> Manifest:
    import onnx
    import onnxruntime
    from safetensors.torch import save_file

    specs = part_specs(backend)
    units = unit_frames(backend)
    generator = torch.Generator().manual_seed(0)
    parts = {}
    for part, (inputs, outputs) in specs.items():
        if only is not None and part not in only:
            continue
        progress(f"exporting {part} ...")
        path = out / f"{part}.onnx"
        args = inputs_at(part, backend, EXAMPLE_BATCH, EXAMPLE_FRAMES, EXAMPLE_TOKENS, generator)
        export_part(part, build_graph(part, backend), args, inputs, outputs, path, opset, units.get(part))
        parts[part] = PartSpec(file=path.name, inputs=inputs, outputs=outputs)
    state = {k: v.detach().float().contiguous() for k, v in backend.conditioners.state_dict().items()}
    save_file(state, str(out / "conditioners.safetensors"))
    shutil.copyfile(folder / "model_config.json", out / "model_config.json")
    copy_tokenizer(backend, out)
    c, same = backend.dit.config, backend.autoencoder
    manifest = Manifest(
        runtime="onnx",
        model={"family": FAMILY, "name": folder.name, "text_max_length": backend.text_encoder.tokenizer.max_length},
        dit=json.loads(json.dumps(to_dict(c), default=str)),
        same=json.loads(json.dumps(to_dict(same.config), default=str)),
        parts=parts,
        codec=codec_entry(backend),
        opset=opset,
        tolerance=TOLERANCE,
        versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    )
    if check:
        progress("checking the export against torch at two lengths ...")
        verify(out, manifest, backend)
    write_manifest(out, manifest)  # last: a folder with a manifest is a finished, checked export
    return manifest


# ----------------------------------------------------------------------------- self-check
def torch_reference(part: str, backend, inputs) -> list[np.ndarray]:
    """The eager float32 model's outputs for ``inputs`` (through the modules' own forward)."""
    with torch.inference_mode():
        if part == "text_encoder":
            outs = [backend.text_encoder.encoder(*inputs).float()]
        elif part == "dit_condition":
            cond = backend.dit.encode_condition(*inputs)
            outs = [cond.global_embed, torch.stack(cond.keys), torch.stack(cond.values)]
        elif part == "dit_step":
            from sa3core.released.dit import ReleasedCondition

            x, t, global_embed, keys, values, local, frame_mask = inputs
            cond = ReleasedCondition(global_embed, list(keys.unbind(0)), list(values.unbind(0)))
            outs = [backend.dit(x, t, cond, local, frame_mask)]
        else:
            raise ValueError(f"{part!r}: SAME windows are checked by same_reference")
    return [o.detach().numpy() for o in outs]


def same_reference(part: str, same, x: torch.Tensor, seed: int) -> np.ndarray:
    """The eager SAME window (``encode_window`` / ``decode_window``) of ``x``, drawing its noise
    from a generator seeded ``seed``: what the graph must give on the real frames."""
    with torch.inference_mode():
        generator = torch.Generator().manual_seed(seed)
        if part == "same_encoder":
            return same.encode_window(x, generator).numpy()
        return same.decode_window(x, generator).numpy()


def compare(part: str, got: list[np.ndarray], want: list[np.ndarray], tolerance: float, where: str) -> float:
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            raise Sa3Error(f"export check failed: {part} {where} gives shape {g.shape}, torch {w.shape}; re-export")
        diff = float(np.abs(g.astype(np.float64) - w).max()) if w.size else 0.0
        if not np.isfinite(diff) or diff > tolerance * (1.0 + float(np.abs(w).max())):
            raise Sa3Error(f"export check failed: {part} {where} differs from torch by {diff:.3g} (> {tolerance:g})")
        worst = max(worst, diff)
    return worst


def verify(folder: Path, manifest: Manifest, backend) -> None:
    """Run every exported part at :data:`CHECKS` (batch, frames, tokens); record the differences."""
    from sa3core.onnx_backend import open_session

    generator = torch.Generator().manual_seed(1)
    for part, spec in manifest.parts.items():
        session = open_session(Path(folder) / spec.file)
        worst = 0.0
        for batch, frames, tokens in CHECKS:
            if part.startswith("same_"):
                feeds, x = same_window(part, backend, batch, frames, generator, seed=frames)
                want = [same_reference(part, backend.autoencoder, x, seed=frames)]
                got = [o[..., : want[0].shape[-1]] for o in session.run(None, feeds)]  # the real frames
            else:
                inputs = inputs_at(part, backend, batch, frames, tokens, generator)
                feeds = {s.name: t.numpy() for s, t in zip(spec.inputs, inputs, strict=True)}
                got = session.run(None, feeds)
                want = torch_reference(part, backend, inputs)
            worst = max(worst, compare(part, got, want, manifest.tolerance, f"at batch {batch}, {frames} frames"))
        spec.checked_max_abs_diff = worst
