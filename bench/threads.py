"""Thread settings: ``python -m bench.threads`` (``sa3 bench threads``).

A lever of issue 30 ("thread settings"), and the measurement behind ``--threads N`` of the
commands that run a model: how long a take and its parts take at each thread count, and with
OpenMP's two wait policies, on this machine.

Each variant runs in a fresh process (OpenMP reads its environment once, at start): a thread
count from ``--counts`` (default 1, 2, 4, ... up to the logical CPUs, and the physical cores) with
the OpenMP environment as the user has it, and with ``--wait-policies`` the default count again
under ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once) and ``ACTIVE`` (they spin). The
child loads the model at sa3's default precision, makes one warm-up take, then ``--repeats``
takes of ``--seconds`` (8 steps, seed 0): whole take (text, sampling, decode), one DiT step
(median of the take's calls) and the decode. Variants run in rounds (``--rounds``), each round
every variant once, so a machine whose speed drifts over the minutes moves every variant alike;
each round starts one variant further on (no variant always follows the same one), and the
speed-up is the median over rounds of the default variant's take time over the variant's.
``--busy N`` runs every variant again beside N processes that keep a core busy each (a DAW
playing back, at worst): the rows beside busy cores compare with that load's default variant.
``--backend onnx`` runs the model's ONNX export; its ``--wait-policies`` add a variant with
onnxruntime's own spinning threads (``SA3_ORT_SPINNING=1``; sa3's sessions do not spin).

Every child also keeps its warm-up take (the same request everywhere): the table gives how far
each variant's take is from the default variant's. The thread count can move the last bits of a
take (MKL splits some small matrix products across threads differently); tests/cli/test_threads.py
holds that to 1e-4.

Model: by default random weights of the released small shapes (:mod:`bench.released_shapes`;
nothing is downloaded), ``--model`` any model folder (the shipped one: ``--model shipped``).
``--write-docs`` replaces this CPU class's table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import common

PROMPT = "dusty boom bap drums with a warm upright bass, 90 BPM"
POLICIES = ("PASSIVE", "ACTIVE")


def default_counts() -> list[int]:
    """1, 2, 4, ... up to the logical CPUs, with the physical cores and the logical count."""
    logical = common.usable_cpus()
    counts, n = {1, common.physical_cores(), logical}, 2
    while n < logical:
        counts.add(n)
        n *= 2
    return sorted(counts)


# ----------------------------------------------------------------------------- child
def child(model: str | None, seconds: float, repeats: int, threads: int, take_out: str, backend: str) -> None:
    """In the fresh process: load, one warm-up take, ``repeats`` timed takes; one JSON line."""
    import torch

    from sa3core.allocator import keep_freed_memory

    keep_freed_memory()  # as the sa3 command does at start
    torch.set_num_threads(threads)
    from sa3core.pipeline import Pipeline
    from sa3core.timebase import seconds_to_samples

    from .versus_official import Parts

    pipeline = Pipeline.load(None if model == "shipped" else model, backend=backend)
    parts = Parts()
    parts.wrap(pipeline.backend, "velocity", "dit_step")
    parts.wrap(pipeline.backend, "decode_latents", "decode")
    samples = seconds_to_samples(seconds)

    def take(prompt: str):
        return pipeline.generate(prompt, samples, steps=8, seed=0)

    np.save(take_out, take(PROMPT))  # warm-up; the parent compares it across variants
    parts.active = True
    walls, steps, decodes = [], [], []
    for k in range(repeats):
        started = time.perf_counter()
        take(f"{PROMPT}, take {k + 2}")  # a new prompt each time: the prompt cache helps no variant
        walls.append(time.perf_counter() - started)
        calls = parts.take()
        steps += calls.get("dit_step", [])
        decodes.append(sum(calls.get("decode", [0.0])))
    report = {
        "threads": torch.get_num_threads(),
        "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "ort_spinning": os.environ.get("SA3_ORT_SPINNING") == "1",
        "take_s": round(statistics.median(walls), 4),
        "dit_step_s": round(statistics.median(steps), 4),
        "decode_s": round(statistics.median(decodes), 4),
    }
    print(json.dumps(report))


# ----------------------------------------------------------------------------- parent
def run_variant(variant: dict, model: str, seconds: float, repeats: int, take_out: Path, backend: str) -> dict:
    command = [sys.executable, "-m", "bench.threads", "--child", "--model", model, "--take-out", str(take_out)]
    command += ["--backend", backend]
    command += ["--seconds", str(seconds), "--repeats", str(repeats), "--threads", str(variant["threads"])]
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    env.pop("OMP_WAIT_POLICY", None)  # no policy: the OpenMP runtime's own default
    env.pop("SA3_ORT_SPINNING", None)
    if variant["policy"] is not None:
        env["OMP_WAIT_POLICY"] = variant["policy"]
    if variant.get("ort_spinning"):
        env["SA3_ORT_SPINNING"] = "1"
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(variant["busy"])]
    try:
        result = subprocess.run(command, cwd=common.REPO, env=env, capture_output=True, text=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    if result.returncode != 0:
        raise SystemExit(f"{label(variant)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def label(variant: dict) -> str:
    policy, busy = variant["policy"], variant["busy"]  # no policy: the runtime's default (run_variant unsets it)
    return (
        f"{variant['threads']} thread{'s' if variant['threads'] > 1 else ''}"
        + (f", OMP_WAIT_POLICY={policy}" if policy else "")
        + (", onnxruntime spinning" if variant.get("ort_spinning") else "")
        + (f", beside {busy} busy core{'s' if busy > 1 else ''}" if busy else "")
    )


def markdown(rows: list[dict], info: dict, model_label: str, seconds: float, rounds: int, repeats: int) -> str:
    lines = [
        f"Machine: {info['cpu_model']}, {info['physical_cores']} physical cores, {info['logical_cpus']} logical CPUs, "
        f"torch {info['torch']}, load {info['load_average']} at the start and {info['load_average_end']} at the end. "
        f"Model: {model_label}, default precision; a {seconds:g} s take, 8 steps, each variant in a fresh process, "
        f"{rounds} rounds of every variant, medians of {repeats} takes a round after a warm-up take.",
        "",
        "| threads | take (s) | DiT step (s) | decode (s) | take speed-up vs the baseline (same load) "
        "| audio: max difference from the baseline's |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        mark = " (baseline)" if row["default"] else ""
        lines.append(
            f"| {row['label']}{mark} | {row['take_s']:.2f} | {row['dit_step_s']:.3f} | {row['decode_s']:.2f} "
            f"| {row['speedup']:.2f}x | {row['max_difference']:.1e} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = common.parser("threads", __doc__)
    p.add_argument("--model", help="model folder, or 'shipped' (default: random weights, released small shapes)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the default checkpoint is built")
    p.add_argument("--seconds", type=float, default=None, help="take length (default 8: 4 bars at 120 bpm; --quick 1)")
    p.add_argument("--counts", type=int, nargs="+", help="thread counts (default 1, 2, 4, ... up to the logical CPUs)")
    p.add_argument("--wait-policies", action="store_true", help="also the default count under each OMP_WAIT_POLICY")
    p.add_argument("--busy", type=int, default=0, help="also every variant beside N busy processes")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="the model's backend (default torch)")
    p.add_argument("--rounds", type=int, default=0, help="rounds of every variant (default 3, --quick 1)")
    p.add_argument("--write-docs", action="store_true", help="replace this CPU class's table in docs/benchmarks.md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--take-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 8.0)
    repeats = common.repeats(args)
    if args.child:
        child(args.model, seconds, repeats, args.threads, args.take_out, args.backend)
        return 0
    counts = args.counts or default_counts()
    if min(counts) < 1:
        print(f"error: --counts {' '.join(map(str, counts))}: every count must be 1 or more", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.quick else 3)
    if args.model is None:
        from .released_shapes import build

        model, model_label = str(build("small", common.REPO / args.shapes_dir)), "released small shapes (random)"
    else:
        model, model_label = args.model, ("the shipped model" if args.model == "shipped" else Path(args.model).name)
    default = args.threads or common.physical_cores()
    variants = []
    for busy in [0] + ([args.busy] if args.busy > 0 else []):
        variants += [{"threads": n, "policy": None, "busy": busy} for n in sorted(set(counts) | {default})]
        if args.wait_policies:
            variants += [{"threads": default, "policy": policy, "busy": busy} for policy in POLICIES]
            if args.backend == "onnx":
                variants.append({"threads": default, "policy": None, "busy": busy, "ort_spinning": True})
    info = common.machine()
    bases = {  # each load's default variant
        v["busy"]: i
        for i, v in enumerate(variants)
        if v["threads"] == default and v["policy"] is None and not v.get("ort_spinning")
    }
    base = bases[0]
    results: list[list[dict]] = [[] for _ in variants]
    with tempfile.TemporaryDirectory() as tmp:
        takes = [Path(tmp) / f"take-{i}.npy" for i in range(len(variants))]
        for r in range(rounds):
            for k in range(len(variants)):
                i = (k + r) % len(variants)  # each round one variant further on
                variant = variants[i]
                report = run_variant(variant, model, seconds, repeats, takes[i], args.backend)
                results[i].append(report)
                print(
                    f"round {r + 1}: {label(variant):<34} take {report['take_s']:7.2f} s  "
                    f"step {report['dit_step_s']:.3f} s  decode {report['decode_s']:.2f} s",
                    flush=True,
                )
        audio = [np.load(path) for path in takes]
    differences = [float(np.abs(a - audio[base]).max()) for a in audio]
    rows = []
    for i, variant in enumerate(variants):
        runs = results[i]
        rows.append(
            {
                **variant,
                "label": label(variant),
                "default": i in bases.values(),  # each load's baseline
                "take_s": statistics.median(r["take_s"] for r in runs),
                "dit_step_s": statistics.median(r["dit_step_s"] for r in runs),
                "decode_s": statistics.median(r["decode_s"] for r in runs),
                "speedup": statistics.median(
                    b["take_s"] / r["take_s"] for b, r in zip(results[bases[variant["busy"]]], runs)
                ),
                "max_difference": differences[i],
                "runs": runs,
            }
        )
    path = common.write_json(args.out, "threads", rows, info, model=model_label, seconds=seconds, rounds=rounds)
    info["load_average_end"] = common.load_average()
    if args.backend != "torch":
        model_label += f", {args.backend} backend"
    name = "threads" if args.backend == "torch" else f"threads_{args.backend}"  # a table of its own in the docs
    common.publish(name, markdown(rows, info, model_label, seconds, rounds, repeats), path, args.write_docs, True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
