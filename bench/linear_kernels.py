"""Float32 linear layers at few rows: ``python -m bench.linear_kernels`` (``sa3 bench linear_kernels``).

On a CPU without native bf16 sa3 runs the released DiT in float32, and a short take is few rows:
the 1 s exact-length take is 12 latent frames plus 64 memory tokens (76 rows), 4 bars at 120 bpm
as released 152 + 64. There the plain products run well below the matmul peak. This bench times
the DiT's Linear shapes (random weights) at row counts from ``--rows`` with four ways to compute
``x @ W.T + b``, all float32 arithmetic:

- ``plain``: ``torch.nn.functional.linear`` (MKL's sgemm on x86 wheels), what sa3 runs;
- ``weight-first``: ``(W @ x.T).T`` (``addmm`` with the bias as a column): the same product with
  the operands swapped, so MKL takes another kernel;
- ``mkl-packed``: the weight packed once into MKL's panel layout
  (``torch.ops.mkl._mkl_reorder_linear_weight``, then ``torch.ops.mkl._mkl_linear``);
- ``fp16-weights``: the weight stored as float16 and packed once by fbgemm
  (``torch.fbgemm_pack_gemm_matrix_fp16`` / ``torch.fbgemm_linear_fp16_weight``: half the weight
  traffic, float32 arithmetic).

Each variant's runs alternate with plain runs (a shared machine drifts), speed-up is the median
of the pairs' ratios, and each row says whether the output equals plain bit for bit (or its
relative error) and what packing cost. ``--write-docs`` replaces this CPU class's table in
docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from . import common

# (out, in) of the released small DiT's per-step linears, and how many a step runs
SHAPES = {"ff input": (8192, 1024), "ff output": (1024, 4096), "qkv": (3072, 1024), "square": (1024, 1024)}
VARIANTS = ("weight-first", "mkl-packed", "fp16-weights")


def _clock(fn, layers: int) -> float:
    started = time.perf_counter()
    for i in range(layers):
        fn(i)
    return time.perf_counter() - started


def measure_shape(out_features: int, in_features: int, rows: int, repeats: int, variants) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    # enough layers that the weights do not sit in the caches (~100 MB), as a DiT step's do not
    layers = max(2, (100 * 2**20) // (out_features * in_features * 4))
    weights = [torch.randn(out_features, in_features, generator=generator) / in_features**0.5 for _ in range(layers)]
    biases = [torch.randn(out_features, generator=generator) for _ in range(layers)]
    x = torch.randn(rows, in_features, generator=generator)
    flops = 2 * rows * out_features * in_features * layers

    def plain(i):
        return F.linear(x, weights[i], biases[i])

    runs = {"weight-first": lambda: (lambda i: torch.addmm(biases[i][:, None], weights[i], x.t()).t(), 0.0)}
    runs["mkl-packed"] = lambda: _packed(
        weights, lambda w: torch.ops.mkl._mkl_reorder_linear_weight(w, rows),
        lambda i, p: torch.ops.mkl._mkl_linear(x, p[i], weights[i], biases[i], rows),
    )  # fmt: skip
    runs["fp16-weights"] = lambda: _packed(
        weights, torch.fbgemm_pack_gemm_matrix_fp16, lambda i, p: torch.fbgemm_linear_fp16_weight(x, p[i], biases[i])
    )

    reference = [plain(i) for i in range(layers)]
    base_s = statistics.median(_clock(plain, layers) for _ in range(repeats))
    rows_out = [{"variant": "plain", "rows": rows, "seconds": base_s, "gflops": flops / base_s / 1e9, "speedup": 1.0,
                 "identical": True, "relative_error": 0.0, "pack_gb_per_s": None}]  # fmt: skip
    for name in variants:
        if name == "mkl-packed" and not torch.backends.mkl.is_available():
            continue
        if name == "fp16-weights" and "fbgemm" not in torch.backends.quantized.supported_engines:
            continue  # fbgemm is x86 only
        fn, pack_s = runs[name]()
        outputs = [fn(i) for i in range(layers)]
        identical = all(torch.equal(a, b) for a, b in zip(outputs, reference))
        error = max(float((a - b).norm() / b.norm()) for a, b in zip(outputs, reference))
        pairs = [(_clock(plain, layers), _clock(fn, layers)) for _ in range(repeats)]
        seconds = statistics.median(v for _, v in pairs)
        rows_out.append({
            "variant": name, "rows": rows, "seconds": seconds, "gflops": flops / seconds / 1e9,
            "speedup": statistics.median(b / v for b, v in pairs), "identical": identical, "relative_error": error,
            "pack_gb_per_s": (out_features * in_features * 4 * layers / pack_s / 1e9) if pack_s else None,
        })  # fmt: skip
    return rows_out


def _packed(weights, pack, call):
    """(the call on packed weights, seconds spent packing them all)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fbgemm's fp16 functions warn that they are deprecated
        started = time.perf_counter()
        packed = [pack(w) for w in weights]
        pack_s = time.perf_counter() - started

    def fn(i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call(i, packed)

    return fn, pack_s


def markdown(results: list[dict], info: dict, threads: int, repeats: int) -> str:
    lines = [
        f"Machine: {info['cpu_model']}, {info['physical_cores']} cores, {threads} torch threads, torch {info['torch']}, "
        f"load {info['load_average']} at the start; random weights of the released small DiT's linear shapes, "
        f"about 100 MB of layers per point (out of the caches), medians of {repeats}, each variant's runs paired "
        "with plain runs (speed-up: median of the pairs' ratios).",
        "",
        "| layer (out × in) | rows | plain GFLOP/s | weight-first | mkl-packed | fp16-weights |",
        "|---|---|---|---|---|---|",
    ]

    def cell(row):
        if row is None:
            return "–"
        same = "same bits" if row["identical"] else f"rel. error {row['relative_error']:.0e}"
        return f"{row['speedup']:.2f}x ({same})"

    for item in results:
        by = {r["variant"]: r for r in item["rows"]}
        lines.append(
            f"| {item['layer']} ({item['out']} × {item['in']}) | {item['rows_count']} | {by['plain']['gflops']:.0f} | "
            + " | ".join(cell(by.get(v)) for v in VARIANTS)
            + " |"
        )
    packs = {
        v: statistics.median(r["pack_gb_per_s"] for item in results for r in item["rows"] if r["variant"] == v)
        for v in ("mkl-packed", "fp16-weights")
        if any(r["variant"] == v for item in results for r in item["rows"])
    }
    lines += ["", "Packing: " + ", ".join(f"{v} {gbs:.2f} GB/s of float32 weights" for v, gbs in packs.items()) + "."]
    return "\n".join(lines)


def main() -> int:
    p = common.parser("linear_kernels", __doc__)
    p.add_argument("--rows", type=int, nargs="+", help="row counts (default 12 24 76 152 216 452; --quick 12 76)")
    p.add_argument("--layers", nargs="+", choices=list(SHAPES), help="which shapes (default: all)")
    p.add_argument("--write-docs", action="store_true", help="replace this CPU class's table in docs/benchmarks.md")
    args = p.parse_args()
    if args.rows and min(args.rows) < 1:
        print(f"error: --rows {' '.join(map(str, args.rows))}: every row count must be 1 or more", file=sys.stderr)
        return 2
    from sa3core.allocator import keep_freed_memory

    keep_freed_memory()
    threads = common.set_threads(args.threads)
    repeats = common.repeats(args)
    rows_list = args.rows or ([12, 76] if args.quick else [12, 24, 76, 152, 216, 452])
    layers = args.layers or (["ff input"] if args.quick else list(SHAPES))
    info = common.machine()
    results = []
    with torch.inference_mode():
        for layer in layers:
            out_features, in_features = SHAPES[layer]
            for rows in rows_list:
                measured = measure_shape(out_features, in_features, rows, repeats, VARIANTS)
                results.append({"layer": layer, "out": out_features, "in": in_features, "rows_count": rows,
                                "rows": measured})  # fmt: skip
                print(
                    f"{layer:<10} {rows:4d} rows: plain {measured[0]['gflops']:6.1f} GFLOP/s  "
                    + "  ".join(f"{r['variant']} x{r['speedup']:.2f}{'=' if r['identical'] else '~'}" for r in measured[1:]),
                    flush=True,
                )  # fmt: skip
    path = common.write_json(args.out, "linear_kernels", results, info, threads=threads)
    common.publish("linear_kernels", markdown(results, info, threads, repeats), path, args.write_docs, True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
