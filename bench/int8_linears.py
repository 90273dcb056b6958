"""int8 linear layers in a released DiT: what they save and what they cost: ``python -m bench.int8_linears``.

    python -m bench.int8_linears [--model DIR] [--seconds 30] [--engine fbgemm]

Issue 30 lists int8 weights for the DiT's linear layers as a lever to measure. torch's CPU int8
path for inference is dynamic quantisation: int8 weights with one scale per output channel,
activations quantised on every call, int8 products accumulated in int32 (fbgemm: AVX2 and AVX-512
VNNI; onednn: also AMX). ``torch.ao.quantization.quantize_dynamic`` quantises each activation
tensor with one scale; sa3's int8 precision (:mod:`sa3core.modules.int8`, the default on x86 CPUs
without native bf16) rotates each block of 64 features by a Hadamard matrix and scales each row
by its own absmax first. This bench times one DiT forward (the sampler's step) at the frames a
``--seconds`` request makes (+6 s headroom), in one process, medians of ``--repeats`` after a
warm-up, and reports how far the velocity moves from the float32 one (relative RMS over the whole
output, and the largest difference over the largest value).

Rows: float32 (the reference, ``--fp32``); bf16 on CPUs that multiply it natively (their
default); sa3's int8 for the layers ``--int8`` runs in int8 (every Linear of the blocks but the
cross-attention output), with how long packing them took; torch's per-tensor int8 for the same
layers; then sa3's int8 for each group of the blocks' Linear layers alone (self-attention qkv and
output, cross-attention query and output, the feed-forward input and output projections). Each variant's timed runs alternate with float32 runs, and its speed-up is
the median of the pairs' ratios (a shared machine drifts over the minutes the bench takes). The
timestep, condition and in/out projections stay float32. What a whole take moves by is
``sa3 bench precision``'s part.

A third table times packing those layers three ways: without the int8 weight cache
(:mod:`sa3core.modules.int8_cache`), the first time with an empty cache (quantise and write it) and
from the cache (read the quantised weights, reorder them for the kernel), the entries in the page
cache as a user's next command finds them.

A second table gives the kernels' ceiling on this CPU: one Linear of the feed-forward input's shape
(1024 -> 8192) at the step's rows, in float32, as torch's int8 kernel alone (the activations
already scaled) and as sa3's whole :class:`Int8Linear` (rotation and row scaling included), in
GOP/s (two per multiply-add).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

from . import common

GROUPS = {
    "self-attention qkv": ("self_attn.to_qkv",),
    "self-attention output": ("self_attn.to_out",),
    "cross-attention query": ("cross_attn.to_q",),
    "cross-attention output": ("cross_attn.to_out",),
    "feed-forward input": ("ff.ff.0.proj",),
    "feed-forward output": ("ff.ff.2",),
}

LAYERS_OF_INT8 = "the layers `--int8` runs in int8"


def block_linears(dit, suffixes: tuple[str, ...]) -> set[str]:
    """Names of the Linear layers inside the transformer blocks whose names end with ``suffixes``."""
    import torch

    return {
        name
        for name, module in dit.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("transformer.layers.") and name.endswith(suffixes)
    }


def quantized(dit, names: set[str]):
    """A copy of ``dit`` with the Linear layers ``names`` dynamically quantised to int8 (per-channel weights)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch marks eager-mode quantisation deprecated; it is what it has on CPU
        warnings.simplefilter("ignore")
        copy = quantize_dynamic(dit, {name: per_channel_dynamic_qconfig for name in names}, inplace=False)
    swapped = int8_layers(copy)
    if swapped != len(names):
        raise RuntimeError(f"quantised {swapped} of {len(names)} Linear layers")
    return copy


def sa3_int8(dit, names: set[str]):
    """A copy of ``dit`` with the Linear layers ``names`` as sa3's :class:`Int8Linear` (per-row, rotated)."""
    from sa3core.modules.int8 import int8_inference_copy

    return int8_inference_copy(dit, names.__contains__)


def int8_layers(dit) -> int:
    from sa3core.modules.int8 import Int8Linear

    return sum(
        1
        for m in dit.modules()
        if isinstance(m, Int8Linear) or (type(m).__name__ == "Linear" and "quantized" in type(m).__module__)
    )


def layer_label(row: dict) -> str:
    return f"{row['layers']} ({row['int8_layers']})" if row["int8_layers"] else row["layers"] or "–"


def difference(output, reference) -> dict:
    return {
        "relative_rms": float((output - reference).norm() / reference.norm()),
        "max_err_over_max": float((output - reference).abs().max() / reference.abs().max()),
    }


def kernel_rows(rows: int, repeats: int) -> list[dict]:
    """float32, the int8 kernel alone and sa3's Int8Linear on one [rows, 1024] x [1024, 8192] product."""
    import torch

    from sa3core.modules.int8 import Int8Linear

    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(1024, 8192, bias=False)
    torch.nn.init.normal_(linear.weight, std=1024**-0.5, generator=generator)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(rows, 1024, generator=generator)
    scaled = x / x.abs().amax(-1, keepdim=True)
    ops = 2 * rows * 1024 * 8192
    kernels = {
        "float32 (torch)": lambda: linear(x),
        "int8 kernel alone (fbgemm, 7-bit activations)": lambda: torch.ops.quantized.linear_dynamic(
            scaled, layer.packed, reduce_range=True
        ),
        "int8, sa3's Int8Linear (rotation and row scales included)": lambda: layer(x),
    }
    out = []
    with torch.inference_mode():
        for name, run in kernels.items():
            seconds = common.measure(run, max(repeats, 5), 1).wall_s
            out.append({"kernel": name, "rows": rows, "seconds": seconds, "gops": ops / seconds / 1e9})
    for row in out:
        row["vs_float32"] = row["gops"] / out[0]["gops"]
        print(f"{row['kernel']:<58} {row['seconds'] * 1e3:8.2f} ms  {row['gops']:6.1f} GOP/s", flush=True)
    return out


def packing_rows(dit, names: set[str]) -> list[dict]:
    """Seconds to pack the Linear layers ``names`` of ``dit``: without the int8 weight cache, into
    an empty one, and from it."""
    import tempfile

    from sa3core.modules.int8 import int8_inference_copy
    from sa3core.modules.int8_cache import Int8Cache

    out = []
    with tempfile.TemporaryDirectory() as folder:
        ways = (("without the cache", None), ("the first time (quantise, write the cache)", Int8Cache(folder)),
                ("from the cache", Int8Cache(folder)))  # fmt: skip
        for way, cache in ways:
            started = time.perf_counter()
            int8_inference_copy(dit, names.__contains__, cache=cache)
            out.append({"packing": way, "seconds": time.perf_counter() - started})
            print(f"packing {len(names)} layers {way:<44} {out[-1]['seconds']:6.2f} s", flush=True)
        written = Int8Cache(folder).size_bytes()
    for row in out:
        row["layers"], row["cache_mb"] = len(names), written / 1e6
    return out


def main() -> int:
    p = common.parser("int8_linears", __doc__)
    p.add_argument("--model", type=Path, help="released-layout folder (default: random weights, released small shapes)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the default checkpoint is built")
    p.add_argument("--seconds", type=float, default=None, help="request length (default 30; --quick 1)")
    p.add_argument("--engine", default="fbgemm", help="torch.backends.quantized.engine (default fbgemm)")
    p.add_argument("--write-docs", action="store_true", help="replace the table in docs/benchmarks.md")
    args = p.parse_args()
    import torch

    if args.engine not in torch.backends.quantized.supported_engines:
        print(f"error: quantized engine {args.engine!r} is not in this torch "
              f"({', '.join(torch.backends.quantized.supported_engines)})", file=sys.stderr)  # fmt: skip
        return 2
    threads = common.set_threads(args.threads)
    seconds = args.seconds or (1.0 if args.quick else 30.0)
    if args.model is None:
        from .released_shapes import build

        model, label = build("small", common.REPO / args.shapes_dir), "released small shapes (random)"
    else:
        model, label = args.model, args.model.name

    from sa3core import timebase
    from sa3core.allocator import keep_freed_memory
    from sa3core.families.released import ReleasedFamily, padded_frames, valid_frames
    from sa3core.released.backend import load

    keep_freed_memory()  # as the sa3 command does at start
    torch.backends.quantized.engine = args.engine
    info = common.machine()
    repeats = common.repeats(args)

    backend = load(model, bf16=False, int8=False)
    settings = ReleasedFamily.settings(backend.folder.path, backend.folder.config)
    samples = timebase.seconds_to_samples(seconds)
    frames = padded_frames(samples, settings)
    mask = (torch.arange(frames) < valid_frames(samples, frames))[None]
    x = torch.randn(1, backend.latent_channels, frames, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.7])

    def step_of(run, bf16: bool):
        """One DiT step as the sampler calls it, on ``run`` (the backend's DiT swapped for the call)."""

        def set_run():
            backend._dit_run, backend.bf16 = run, bf16

        set_run()
        context, global_cond = backend.context(["a warm analog synth pad"], torch.tensor([seconds]))
        cond = backend.condition(context, global_cond)
        return lambda: (set_run(), backend.velocity(x, t, cond, None, mask))[1]

    variants = []
    if common.bf16_supported():
        from sa3core.backends import bf16_inference_copy

        variants.append(("bf16 (default here)", "", lambda: (bf16_inference_copy(backend.dit), True)))
    from sa3core.released.backend import INT8_LAYERS

    variants.append(("int8, sa3 (per row, rotated)", LAYERS_OF_INT8, lambda: (sa3_int8(backend.dit, block_linears(backend.dit, INT8_LAYERS)), False)))  # fmt: skip
    variants.append(("int8, torch (per tensor)", LAYERS_OF_INT8, lambda: (quantized(backend.dit, block_linears(backend.dit, INT8_LAYERS)), False)))  # fmt: skip
    for group, suffixes in GROUPS.items():
        variants.append(("int8, sa3", group, lambda s=suffixes: (sa3_int8(backend.dit, block_linears(backend.dit, s)), False)))  # fmt: skip

    kernels = kernel_rows(frames + backend.dit.config.num_memory_tokens, repeats)
    packing = packing_rows(backend.dit, block_linears(backend.dit, INT8_LAYERS))

    # A shared machine drifts over the minutes this takes, so each variant's runs alternate with
    # float32 runs and its speed-up is the median of the pairs' ratios.
    with torch.inference_mode():
        base = step_of(backend.dit, False)
        reference = base().float()
        rows = [{"precision": "float32", "layers": "", "int8_layers": 0, "step_s": common.measure(base, repeats, 0).wall_s,
                 "speedup": 1.0, "made_s": 0.0, **difference(reference, reference)}]  # fmt: skip
        for precision, layers, make in variants:
            started = time.perf_counter()
            run, bf16 = make()
            made_s = time.perf_counter() - started
            step = step_of(run, bf16)
            output = step().float()
            pairs = [(common.measure(base, 1, 0).wall_s, common.measure(step, 1, 0).wall_s) for _ in range(repeats)]
            row = {"precision": precision, "layers": layers, "int8_layers": int8_layers(run),
                   "step_s": statistics.median(v for _, v in pairs), "base_s": statistics.median(b for b, _ in pairs),
                   "speedup": statistics.median(b / v for b, v in pairs), "made_s": made_s,
                   **difference(output, reference)}  # fmt: skip
            rows.append(row)
            print(f"{precision:<26} {layers:<28} {row['step_s']:7.3f} s  x{row['speedup']:.2f}  "
                  f"rel RMS {row['relative_rms']:.4f}", flush=True)  # fmt: skip
            del run, step
        again = base().float()  # the quantised copies left the float32 DiT as it was
        rows[0]["again_relative_rms"] = difference(again, reference)["relative_rms"]

    path = common.write_json(args.out, "int8_linears", rows, info, model=str(model), seconds=seconds,
                             frames=frames, engine=args.engine, kernels=kernels, packing=packing)  # fmt: skip
    lines = [
        f"Machine: {info['cpu_model']}, {info['physical_cores']} cores, {threads} torch threads, torch {info['torch']}, "
        f"load {info['load_average']} at the start; quantized engine {args.engine}. Checkpoint: {label}; one DiT "
        f"forward at {seconds:g} s ({frames} frames), medians of {repeats}, each run paired with a float32 run "
        f"(speed-up: median of the pairs' ratios); velocity against float32.",
        "",
        "| precision | layers | made in (s) | step (s) | speed-up | velocity: relative RMS | max err / max |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['precision']} | {layer_label(r)} | {r['made_s']:.1f} | "
            f"{r['step_s']:.3f} | {r['speedup']:.2f}x | {r['relative_rms']:.4f} | {r['max_err_over_max']:.4f} |"
            for r in rows
        ),
        "",
        f"Kernels alone: one Linear 1024 -> 8192 (the feed-forward input's shape) at {kernels[0]['rows']} rows "
        f"(the step's frames and memory tokens), medians of {max(repeats, 5)}.",
        "",
        "| kernel | time (ms) | GOP/s | × float32 |",
        "|---|---|---|---|",
        *(f"| {k['kernel']} | {k['seconds'] * 1e3:.2f} | {k['gops']:.0f} | {k['vs_float32']:.2f}x |" for k in kernels),
        "",
        f"Packing the {packing[0]['layers']} int8 layers, {threads} threads; the cache's entries take "
        f"{packing[0]['cache_mb']:.0f} MB (read from the page cache, as a user's next command finds them).",
        "",
        "| packing | time (s) |",
        "|---|---|",
        *(f"| {r['packing']} | {r['seconds']:.2f} |" for r in packing),
    ]
    text = "\n".join(lines)
    common.publish("int8_linears", text, path, args.write_docs, per_cpu_class=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
