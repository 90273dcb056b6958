"""Exact-length mode on a released model: what it saves and what it changes: ``python -m bench.exact_length``.

    python -m bench.exact_length [--model DIR] [--write-docs]

The released generate makes every take 6 s longer than asked (the headroom the models were
trained with) and cuts it; ``--exact-length`` (``exact_length=True``) makes the length asked
for. Two measurements, in one process at sa3's default precision, 8 steps, seed 0:

- **cost**: warm end-to-end seconds (prompt to audio in memory: text, sampling, decode; medians)
  of a short and a long request in both modes, and the short one's share of the long one. The
  issue's target: a 1 s request costs at most 1/20 of a 60 s one.
- **change**: the same request in both modes compared over the request (correlation, log-mel L1
  as in :mod:`bench.precision`), beside the padded take against the next seed's padded take for
  scale. On the default random-weight checkpoint (:mod:`bench.released_shapes`) this bounds the
  numerical change only; how a trained model's ending sounds without its headroom needs the real
  weights (``--model``).

``--write-docs`` replaces the exact-length table in docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

from . import common
from .precision import PROMPT, compare


def main() -> int:
    p = common.parser("exact_length", __doc__)
    p.add_argument("--model", type=Path, help="released-layout folder (default: random weights, released small shapes)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the default checkpoint is built")
    p.add_argument("--short", type=float, default=1.0, help="short request, seconds (default 1)")
    p.add_argument("--long", type=float, default=None, help="long request, seconds (default 60; --quick 10)")
    p.add_argument("--compare-seconds", type=float, nargs="+", default=None, help="lengths compared (default 8 30)")
    p.add_argument("--write-docs", action="store_true", help="replace the table in docs/benchmarks.md")
    args = p.parse_args()
    threads = common.set_threads(args.threads)
    long = args.long or (10.0 if args.quick else 60.0)
    compared = args.compare_seconds or ([2.0] if args.quick else [8.0, 30.0])
    if args.model is None:
        from .released_shapes import build

        model, label = build("small", common.REPO / args.shapes_dir), "released small shapes (random)"
    else:
        model, label = args.model, args.model.name

    from sa3core.allocator import keep_freed_memory
    from sa3core.pipeline import Pipeline
    from sa3core.timebase import seconds_to_samples

    keep_freed_memory()  # as the sa3 command does at start
    info = common.machine()
    pipeline = Pipeline.load(model)
    repeats = common.repeats(args)
    cost = {}
    for exact in (False, True):
        for length in (args.short, long):
            n = seconds_to_samples(length)
            timing = common.measure(
                lambda n=n, e=exact: pipeline.generate(PROMPT, n, steps=8, seed=0, exact_length=e), repeats
            )
            cost[(exact, length)] = timing.wall_s
            print(f"{'exact' if exact else 'padded':<6} {length:>5g} s  {timing.wall_s:.2f} s", flush=True)
    rows = [
        {"mode": "exact" if exact else "padded (released)", "short_s": cost[(exact, args.short)],
         "long_s": cost[(exact, long)], "share": cost[(exact, args.short)] / cost[(exact, long)]}
        for exact in (False, True)
    ]  # fmt: skip
    changes = []
    for length in compared:
        n = seconds_to_samples(length)
        padded = pipeline.generate(PROMPT, n, steps=8, seed=0)[0]
        exact = pipeline.generate(PROMPT, n, steps=8, seed=0, exact_length=True)[0]
        other = pipeline.generate(PROMPT, n, steps=8, seed=1)[0]
        changes.append({"seconds": length, **compare(padded, exact),
                        **{f"other_take_{k}": v for k, v in compare(padded, other).items()}})  # fmt: skip
    path = common.write_json(args.out, "exact_length", {"cost": rows, "change": changes}, info, model=str(model))
    lines = [
        f"Machine: {info['cpu_model']}, {info['physical_cores']} cores, {threads} torch threads, torch {info['torch']}, "
        f"load {info['load_average']} at the start. Checkpoint: {label}; default precision ({pipeline.backend.precision}), 8 steps, seed 0; "
        f"warm end-to-end medians of {repeats} (text, sampling, decode; no file).",
        "",
        f"| mode | {args.short:g} s request (s) | {long:g} s request (s) | share |",
        "|---|---|---|---|",
        *(f"| {r['mode']} | {r['short_s']:.2f} | {r['long_s']:.2f} | 1/{1 / r['share']:.0f} |" for r in rows),
        "",
        "| length | exact vs padded: corr | log-mel L1 | padded vs next seed: corr / log-mel L1 |",
        "|---|---|---|---|",
        *(
            f"| {c['seconds']:g} s | {c['corr']:.4f} | {c['log_mel_l1']:.4f} | "
            f"{c['other_take_corr']:.3f} / {c['other_take_log_mel_l1']:.3f} |"
            for c in changes
        ),
    ]
    text = "\n".join(lines)
    common.publish("exact_length", text, path, args.write_docs, per_cpu_class=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
