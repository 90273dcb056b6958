"""A few bars through a warm daemon, request to audio: ``python -m bench.daemon_bars``.

    python -m bench.daemon_bars [--model DIR] [--bars 4] [--bpm 120] [--meter 4/4] [--fp32-too]

What a producer waits for when the plugin asks a running ``sa3 serve`` for a loop: a real daemon
subprocess on loopback serves ``--model`` (by default random weights of the released small
shapes, :mod:`bench.released_shapes`; nothing is downloaded) at its default precision; after
one warm-up request, ``--repeats`` requests of ``--bars`` bars at ``--bpm`` (the protocol's
``bars``/``bpm`` fields, the model's default steps) are timed in the client from sending the
request to holding the decoded audio. The daemon's own ``seconds_elapsed`` (its time in the model)
is reported beside it, so the rest is queueing and transport. Each repeat asks twice, as released
(6 s of headroom) and with ``exact_length`` (protocol 1.6): the second row is what a producer's
"exact length" toggle saves, at the cost of another take. Every timed request has a prompt of
its own: another take of a prompt the daemon has encoded skips the text encoder
(``sa3core.released.text.EncodedPrompts``), which these figures leave out. The issue's target for
released small: 4 bars at 120 bpm in at most 4 s.

Where the default precision is int8, the daemons get an int8 weight cache of the bench's own,
filled first (:class:`bench.common.Int8CacheForChildren`): "daemon ready" is a start after a
user's first command with the model, which packed it once.

``--fp32-too`` starts a second daemon with ``--fp32`` beside the first, and every repeat asks both
in turn: what the default precision gains over float32, paired on a machine whose speed drifts
over the minutes this takes (the idle daemon's threads sleep while the other works).

``--write-docs`` replaces the table in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from . import common

PROMPT = "deep house groove with warm chords and a rolling bassline, 122 BPM"


def _default_precision(model: Path) -> str:
    """What ``sa3 serve`` runs the model at on this CPU without ``--fp32`` (as its backends decide)."""
    import torch

    from sa3core.backends import cpu_has_bf16
    from sa3core.released.backend import default_int8

    released = (Path(model) / "model_config.json").is_file()
    int8 = released and default_int8(torch.device("cpu"), None)
    precision = "bf16" if cpu_has_bf16() else "int8" if int8 else "float32"
    return f"default ({precision})"


def _stop(process) -> None:
    process.terminate()
    process.wait(timeout=30)


def main() -> int:
    p = common.parser("daemon_bars", __doc__)
    p.add_argument("--model", type=Path, help="model folder (default: random weights, released small shapes)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the default checkpoint is built")
    p.add_argument("--bars", type=float, default=4.0)
    p.add_argument("--bpm", type=float, default=120.0)
    p.add_argument("--meter", default="4/4")
    p.add_argument("--fp32-too", action="store_true", help="also a `sa3 serve --fp32` daemon, asked in turn")
    p.add_argument("--write-docs", action="store_true", help="replace the table in docs/benchmarks.md")
    args = p.parse_args()
    threads = args.threads or common.physical_cores()
    if args.model is None:
        from .released_shapes import build

        model, label = build("small", common.REPO / args.shapes_dir), "released small shapes (random)"
    else:
        model, label = args.model, args.model.name
    repeats = args.repeats or (2 if args.quick else 5)

    from bridge.client import Client
    from sa3core import timebase

    info = common.machine()
    precisions = {_default_precision(model): ()} | ({"--fp32": ("--fp32",)} if args.fp32_too else {})
    daemons: dict[str, tuple] = {}  # precision -> (process, endpoint, ready_s)
    modes = {"as released": {}, "exact length": {"exact_length": True}}
    walls = {(precision, mode): [] for precision in precisions for mode in modes}
    inside = {key: [] for key in walls}
    first_s: dict[str, float] = {}
    clients = {}
    with contextlib.ExitStack() as cleanup:
        cache = common.Int8CacheForChildren(model, threads)  # the daemons pack from it, as after a first command
        cleanup.callback(cache.cleanup)
        info["int8_cache_fill_s"] = cache.fill_s
        for precision, options in precisions.items():
            started = time.perf_counter()
            process, endpoint = common.start_serve("--model", str(model), "--threads", str(threads), *options)
            daemons[precision] = (process, endpoint, time.perf_counter() - started)
            cleanup.callback(_stop, process)
            clients[precision] = cleanup.enter_context(Client(endpoint, silence=300.0))
        fields = {"bars": args.bars, "bpm": args.bpm, "meter": args.meter}
        for precision, client in clients.items():
            first = time.perf_counter()
            client.generate(PROMPT, seed=0, **fields)
            first_s[precision] = time.perf_counter() - first
            client.generate(PROMPT, seed=0, exact_length=True, **fields)  # its shapes warmed too
        for k in range(repeats):
            for precision, client in clients.items():
                for mode, extra in modes.items():
                    sent = time.perf_counter()
                    # a new prompt each request: a take of a prompt already asked for skips the text encoder
                    result = client.generate(f"{PROMPT}, take {k + 1} {mode}", seed=k + 1, **fields, **extra)
                    walls[precision, mode].append(time.perf_counter() - sent)
                    inside[precision, mode].append(result.header["seconds_elapsed"])
                    print(
                        f"request {k + 1}, {precision}, {mode}: {walls[precision, mode][-1]:.2f} s "
                        f"(model {inside[precision, mode][-1]:.2f} s)",
                        flush=True,
                    )
    seconds = timebase.bars_to_seconds(args.bars, args.bpm, args.meter)
    rows = [
        {
            "model": label,
            "mode": mode,
            "bars": args.bars,
            "bpm": args.bpm,
            "meter": args.meter,
            "seconds": seconds,
            "precision": precision,
            "daemon_ready_s": daemons[precision][2],
            "first_request_s": first_s[precision],
            "median_s": statistics.median(walls[precision, mode]),
            "model_median_s": statistics.median(inside[precision, mode]),
            "walls": walls[precision, mode],
            "repeats": repeats,
        }  # fmt: skip
        for precision in precisions
        for mode in modes
    ]
    path = common.write_json(args.out, "daemon_bars", rows, info)
    request = f"{args.bars:g} bars at {args.bpm:g} bpm ({args.meter})"
    text = "\n".join(
        [
            f"Machine: {info['cpu_model']}, {info['physical_cores']} cores, {threads} torch threads in the daemon, "
            f"torch {info['torch']}, load {info['load_average']} at the start. Checkpoint: {label}, the "
            f"model's default steps; `sa3 serve` on loopback, times in the client, medians of {repeats} after a "
            "warm-up request of each kind"
            + (", the two daemons asked in turn." if args.fp32_too else ".")
            + (
                f" The int8 weight cache was filled first ({info['int8_cache_fill_s']:.1f} s, as a user's first "
                "command with the model); the daemons pack from it."
                if info.get("int8_cache_fill_s") is not None
                else ""
            ),
            "",
            "| request | audio | made as | precision | daemon ready (s) | first request (s) | warm request to audio (s) | of which in the model (s) |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {request} | {seconds:g} s | {row['mode']} | {row['precision']} | {row['daemon_ready_s']:.1f} "
                f"| {row['first_request_s']:.2f} | {row['median_s']:.2f} | {row['model_median_s']:.2f} |"
                for row in rows
            ),
        ]
    )
    common.publish("daemon_bars", text, path, args.write_docs, per_cpu_class=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
