"""SAME encode/decode speed and peak memory on this machine.

    python -m bench.codec_speed [--presets tiny small] [--seconds 10 60] [--peak-seconds 380]
                                [--threads N] [--out runs/bench/codec_speed.json]

Speed is seconds of audio per second of compute (higher is faster; >1 = faster than real
time), best of ``--repeats`` runs after one warm-up, random weights (speed does not depend on
them), float32, batch 1. Peak memory is the maximum resident set size of a fresh subprocess
that encodes and then decodes ``--peak-seconds`` of audio, next to the same process's RSS
before the audio is made (imports + model), read from /proc/self/status (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from sa3core.models.same import SAME, parameter_count, same_preset
from sa3core.timebase import SAMPLE_RATE, seconds_to_samples


def _rss_mib() -> float:
    """Peak resident set size of this process in MiB.

    /proc's VmHWM belongs to the current address space, so it starts fresh at exec; getrusage's
    ru_maxrss survives fork+exec and would report the parent benchmark's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_speed(preset: str, seconds: float, repeats: int) -> dict:
    torch.manual_seed(0)
    model = SAME(same_preset(preset)).eval()
    audio = 0.1 * torch.randn(1, 2, seconds_to_samples(seconds))
    model.decode(model.encode(audio[..., :SAMPLE_RATE]))  # warm-up on 1 s
    encode_times, decode_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        latents = model.encode(audio)
        encode_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.decode(latents)
        decode_times.append(time.perf_counter() - start)
    return {
        "preset": preset,
        "parameters": parameter_count(model),
        "seconds": seconds,
        "encode_s": min(encode_times),
        "decode_s": min(decode_times),
        "encode_x_realtime": seconds / min(encode_times),
        "decode_x_realtime": seconds / min(decode_times),
    }


def peak_child(preset: str, seconds: float) -> None:
    """Run in a fresh process: print JSON with RSS before and peak RSS after encode + decode."""
    torch.manual_seed(0)
    model = SAME(same_preset(preset)).eval()
    baseline = _rss_mib()
    audio = 0.1 * torch.randn(1, 2, seconds_to_samples(seconds))
    start = time.perf_counter()
    latents = model.encode(audio)
    decoded = model.decode(latents)
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "preset": preset,
                "seconds": seconds,
                "latent_frames": latents.shape[-1],
                "output_samples": decoded.shape[-1],
                "rss_before_audio_mib": round(baseline, 1),
                "peak_rss_mib": round(_rss_mib(), 1),
                "encode_plus_decode_s": round(elapsed, 2),
            }
        )
    )


def measure_peak(preset: str, seconds: float, threads: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench.codec_speed",
        "--peak-child",
        preset,
        str(seconds),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--peak-presets", nargs="*", help="presets for the peak-memory run (default: --presets)")
    parser.add_argument("--seconds", nargs="+", type=float, default=[10.0, 60.0])
    parser.add_argument("--peak-seconds", type=float, default=380.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/codec_speed.json")
    parser.add_argument("--peak-child", nargs=2, metavar=("PRESET", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.peak_child:
        peak_child(args.peak_child[0], float(args.peak_child[1]))
        return 0

    speeds = []
    print(f"{'preset':<6} {'params':>8} {'audio s':>8} {'encode x RT':>12} {'decode x RT':>12}")
    for preset in args.presets:
        for seconds in args.seconds:
            row = measure_speed(preset, seconds, args.repeats)
            speeds.append(row)
            print(
                f"{preset:<6} {row['parameters'] / 1e6:>7.1f}M {seconds:>8g} "
                f"{row['encode_x_realtime']:>12.2f} {row['decode_x_realtime']:>12.2f}",
                flush=True,
            )
    peaks = []
    if args.peak_seconds > 0:
        print(f"\npeak memory, encode + decode of {args.peak_seconds:g} s:")
        for preset in args.presets if args.peak_presets is None else args.peak_presets:
            row = measure_peak(preset, args.peak_seconds, args.threads)
            peaks.append(row)
            print(
                f"{preset:<6} peak RSS {row['peak_rss_mib']:.0f} MiB (before audio {row['rss_before_audio_mib']:.0f} MiB), "
                f"{row['encode_plus_decode_s']:.1f} s",
                flush=True,
            )
    result = {
        "threads": args.threads,
        "load_average_at_end": os.getloadavg(),
        "sample_rate": SAMPLE_RATE,
        "torch": torch.__version__,
        "speed": speeds,
        "peak_memory": peaks,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
