"""sa3 against the official Stable Audio 3 code on the same checkpoint: ``python -m bench.versus_official``.

    python -m bench.versus_official --official /path/to/stable-audio-3 \\
        --official-python /path/to/venv/bin/python [--model DIR] [--seconds 10 30 120]

Every row is one fresh process (so "cold" is what a user waits for from the shell), running one
implementation on one request length: import, load, the first generate and its WAV file (cold),
then ``--repeats`` more generates of the same length (warm, medians), each with a prompt of its own
so that sa3's cache of encoded prompts helps neither side. Within the warm runs the
parts are timed where each implementation spends them:

- ``text``: prompt to conditioning (T5Gemma encoder + conditioners);
- ``dit_step``: one DiT forward at the request's length (the median over all steps);
- ``decode``: SAME decode of the latents;
- ``e2e``: the whole generate plus writing the WAV file.

Rows: ``official`` (its CPU path as it runs: float32, the +6 s padding), ``sa3`` (sa3's default
precision, named in the row: bf16 matmuls on CPUs with native bf16, int8 DiT block and SAME
transformer linears on other x86 CPUs) and ``sa3 --fp32`` (the numerics the parity
tests check against the official code). All rows use 8 steps (the post-trained default), seed 0,
batch 1, ``--threads`` torch threads, and the same checkpoint: by default a random-weight
checkpoint of the released small shapes built by :mod:`bench.released_shapes` (nothing is
downloaded; ``--model`` takes any released-layout folder, e.g. a real download).

The official code is never part of sa3: this bench imports it from ``--official DIR`` (a checkout
of Stability-AI/stable-audio-3) in a child run by ``--official-python`` (an interpreter that has
its dependencies: transformers >= 5.8, einops, einops-exts; a torchaudio that does not import is
stubbed, as scripts/released/make_fixtures.py does). Without ``--official`` only the sa3 rows run.

On a CPU where sa3's default is int8, its quantised weights are kept in an int8 weight cache
between processes (:mod:`sa3core.modules.int8_cache`). The bench gives the sa3 rows a cache folder
of its own and fills it first in a process of its own (what a user's first command with a model
does once; its time is printed and written to the JSON), so each sa3 row's cold run packs from
the cache, as a user's later commands do.

Peak RSS of each child (VmHWM) comes with its row. ``--write-docs`` replaces the
"sa3 against the official code" table in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import common

PROMPT = "deep house groove with warm chords and a rolling bassline, 122 BPM"
IMPLEMENTATIONS = ("official", "sa3", "sa3-fp32")


# ----------------------------------------------------------------------------- timing hooks
class Parts:
    """Wall seconds spent in named calls; ``wrap(obj, attr, name)`` times ``obj.attr``."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self.active = False

    def wrap(self, obj, attr: str, name: str) -> None:
        inner = getattr(obj, attr)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                if self.active:
                    self.calls.setdefault(name, []).append(time.perf_counter() - started)

        setattr(obj, attr, timed)

    def take(self) -> dict[str, list[float]]:
        calls, self.calls = self.calls, {}
        return calls


def _child_sa3(model: Path, seconds: float, fp32: bool, parts: Parts):
    from sa3core.allocator import keep_freed_memory

    keep_freed_memory()  # as the sa3 command does at start
    from sa3core.audio import save_audio
    from sa3core.pipeline import Pipeline
    from sa3core.timebase import seconds_to_samples

    pipeline = Pipeline.load(model, bf16=False if fp32 else None)  # None: the default, bf16 only where native
    backend = pipeline.backend
    parts.wrap(backend, "context", "text")
    parts.wrap(backend, "velocity", "dit_step")
    parts.wrap(backend, "decode_latents", "decode")

    def run(path: Path, prompt: str) -> None:
        audio = pipeline.generate(prompt, seconds_to_samples(seconds), steps=8, seed=0)
        save_audio(path, audio[0], bit_depth="24", overwrite=True)

    run.precision = backend.precision
    return run


def _child_official(model: Path, seconds: float, official: Path, parts: Parts):
    import contextlib
    import io

    sys.path.insert(0, str(common.REPO / "scripts" / "released"))
    from make_fixtures import local_config, stub_torchaudio

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    stub_torchaudio()
    sys.path.insert(0, str(official))
    import soundfile
    import torch

    with contextlib.redirect_stdout(io.StringIO()):
        import stable_audio_3.loading_utils as loading_utils
        import stable_audio_3.model as model_module

        config = local_config(json.loads((model / "model_config.json").read_text()), model.resolve())
        wrapper = loading_utils.load_diffusion_cond(config, str(model / "model.safetensors"), device="cpu")
    wrapper.eval()
    handle = model_module.StableAudioModel(wrapper, config, "cpu", False)
    parts.wrap(wrapper.conditioner, "forward", "text")
    parts.wrap(wrapper.model, "forward", "dit_step")
    parts.wrap(wrapper.pretransform, "decode", "decode")

    def run(path: Path, prompt: str) -> None:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            audio = handle.generate(prompt=prompt, duration=seconds, steps=8, seed=0)
        soundfile.write(str(path), audio[0].T.numpy(), 44100, subtype="PCM_24")

    return run


def child(implementation: str, model: Path, seconds: float, repeats: int, threads: int, official: Path | None):
    """In the fresh process: cold run, then ``repeats`` warm runs; print one JSON line."""
    import tempfile

    import torch

    spawned = float(os.environ["SA3_BENCH_SPAWNED"])
    torch.set_num_threads(threads)
    parts = Parts()
    if implementation == "official":
        run = _child_official(model, seconds, official, parts)
    else:
        run = _child_sa3(model, seconds, implementation == "sa3-fp32", parts)
    loaded = time.time() - spawned
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "take.wav"
        run(out, PROMPT)
        cold = time.time() - spawned
        walls, calls = [], {}
        parts.active = True
        for take in range(repeats):
            started = time.perf_counter()
            run(out, f"{PROMPT}, take {take + 2}")  # a new prompt each run: sa3's prompt cache helps neither side
            walls.append(time.perf_counter() - started)
            for name, times in parts.take().items():
                calls.setdefault(name, []).append(times)
    report = {
        "implementation": implementation,
        "seconds": seconds,
        "load_s": round(loaded, 3),
        "cold_s": round(cold, 3),
        "e2e_s": round(statistics.median(walls), 3),
        "e2e_runs": [round(w, 3) for w in walls],
        # per run the sum of the part's calls (text, decode: one call each); dit_step: every call
        "text_s": round(statistics.median(sum(r) for r in calls.get("text", [[0.0]])), 4),
        "dit_step_s": round(statistics.median(t for r in calls.get("dit_step", [[0.0]]) for t in r), 4),
        "dit_calls": len(calls.get("dit_step", [[]])[0]),
        "decode_s": round(statistics.median(sum(r) for r in calls.get("decode", [[0.0]])), 4),
        "peak_rss_mib": round(common.peak_rss_mib(), 1),
        "precision": getattr(run, "precision", "float32"),
    }
    print(json.dumps(report))


# ----------------------------------------------------------------------------- parent
def run_row(python: str, implementation: str, args, model: Path, seconds: float, repeats: int) -> dict:
    command = [python, "-m", "bench.versus_official", "--child", implementation, "--model", str(model)]
    command += ["--seconds", str(seconds), "--repeats", str(repeats), "--threads", str(args.threads)]
    if args.official:
        command += ["--official", str(args.official)]
    env = {**os.environ, "SA3_BENCH_SPAWNED": repr(time.time()), "PYTHONPATH": str(common.REPO)}
    result = subprocess.run(command, cwd=common.REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{implementation} at {seconds:g} s failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], info: dict, model_label: str, threads: int) -> str:
    lines = [
        f"Machine: {info['cpu_model']}, {info['physical_cores']} cores, {threads} torch threads, torch {info['torch']}, "
        f"load {info['load_average']} at the start and {info.get('load_average_end')} at the end. "
        f"Checkpoint: {model_label}. 8 steps, seed 0, batch 1; warm figures are medians."
        + (
            f" sa3's int8 weight cache filled first ({info['int8_cache_fill_s']:.1f} s in a process of its own, as a "
            "user's first command with a model), so its cold runs pack from it."
            if info.get("int8_cache_fill_s") is not None
            else ""
        ),
        "",
        "| length | implementation | cold (s) | warm e2e (s) | text (s) | DiT step (s) | decode (s) | peak RSS (MiB) "
        "| warm speed-up vs official |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_length: dict[float, dict[str, dict]] = {}
    for row in rows:
        by_length.setdefault(row["seconds"], {})[row["implementation"]] = row
    for seconds, group in by_length.items():
        base = group.get("official")
        for name in IMPLEMENTATIONS:
            row = group.get(name)
            if row is None:
                continue
            speedup = (
                f"{base['e2e_s'] / row['e2e_s']:.2f}x (cold {base['cold_s'] / row['cold_s']:.2f}x)" if base else "-"
            )
            label = "sa3 --fp32" if name == "sa3-fp32" else f"sa3 ({row['precision']})" if name == "sa3" else name
            lines.append(
                f"| {seconds:g} s | {label} | {row['cold_s']:.1f} | {row['e2e_s']:.2f} | {row['text_s']:.3f} | "
                f"{row['dit_step_s']:.3f} | {row['decode_s']:.2f} | {row['peak_rss_mib']:.0f} | {speedup} |"
            )
    return "\n".join(lines)


def main() -> int:
    p = common.parser("versus_official", __doc__)
    p.add_argument("--official", type=Path, help="checkout of Stability-AI/stable-audio-3 (omit: sa3 rows only)")
    p.add_argument("--official-python", default=sys.executable, help="interpreter with the official dependencies")
    p.add_argument("--model", type=Path, help="released-layout folder (default: random weights, released small shapes)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the default checkpoint is built")
    p.add_argument("--seconds", type=float, nargs="+", default=[10.0, 30.0, 120.0])
    p.add_argument("--only", nargs="+", choices=IMPLEMENTATIONS, help="run these implementations only")
    p.add_argument("--write-docs", action="store_true", help="replace the table in docs/benchmarks.md")
    p.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse_hidden())
    args = p.parse_args()
    threads = args.threads or common.physical_cores()
    if args.child:
        child(args.child, args.model, args.seconds[0], args.repeats or 1, threads, args.official)
        return 0
    if args.official and not (args.official / "stable_audio_3" / "model.py").is_file():
        raise SystemExit(f"{args.official} is not a checkout of the official code (no stable_audio_3/model.py)")
    args.threads = threads
    if args.model is None:
        from .released_shapes import build

        model, label = build("small", common.REPO / args.shapes_dir), "random weights, released small shapes"
    else:
        model, label = args.model, str(args.model)
    info = common.machine()
    names = args.only or [n for n in IMPLEMENTATIONS if n != "official" or args.official]
    rows = []
    cache = common.Int8CacheForChildren(model, threads, fill="sa3" in names)
    info["int8_cache_fill_s"] = cache.fill_s
    for seconds in args.seconds:
        repeats = args.repeats or (1 if args.quick or seconds > 60 else 3)
        for name in names:
            python = args.official_python if name == "official" else sys.executable
            row = run_row(python, name, args, model, seconds, repeats)
            rows.append(row)
            print(
                f"{seconds:>6g} s  {name:<9} cold {row['cold_s']:7.1f}  warm {row['e2e_s']:7.2f}  text {row['text_s']:.3f}"
                f"  step {row['dit_step_s']:.3f} x{row['dit_calls']}  decode {row['decode_s']:.2f}"
                f"  rss {row['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    cache.cleanup()
    path = common.write_json(args.out, "versus_official", rows, info, model=label)
    info["load_average_end"] = common.load_average()
    text = markdown(rows, info, label, threads)
    common.publish("versus_official", text, path, args.write_docs, per_cpu_class=True)
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
