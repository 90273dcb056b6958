"""The released-model benches (#30): FLOP counts against torch's own counter on the released
fixtures, and CI-sized runs of bench.precision, bench.exact_length, bench.efficiency --released,
bench.daemon_bars and bench.int8_linears that write the JSON docs/benchmarks.md reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench import efficiency
from sa3core.released.backend import load

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "released"


def counted_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter, sdpa_kernel(SDPBackend.MATH):  # the math kernel is visible matmuls
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("folder", ["small", "medium"])  # medium: differential attention
def test_released_dit_flops_match_torch_flop_counter(folder):
    backend = load(FIXTURES / folder, bf16=False)
    frames = 20
    context, global_cond = backend.context(["x"], torch.tensor([1.0]))
    cond = backend.condition(context, global_cond)
    x, t, mask = torch.randn(1, backend.latent_channels, frames), torch.tensor([0.5]), torch.ones(1, frames, dtype=bool)
    measured = counted_flops(lambda: backend.velocity(x, t, cond, None, mask))
    # torch also counts the timestep and global MLPs (a few width^2 per call); the formula does not
    counted = efficiency.released_dit_flops(backend.dit.config, frames, context.shape[1])
    assert counted <= measured < counted * 1.03, (counted, measured)
    local = torch.randn(1, backend.dit.config.local_add_cond_dim, frames)
    measured = counted_flops(lambda: backend.velocity(x, t, cond, local, mask))
    counted = efficiency.released_dit_flops(backend.dit.config, frames, context.shape[1], kept=True)
    assert counted <= measured < counted * 1.03, (counted, measured)


@pytest.mark.parametrize("frames", [10, 300])  # one window; three windows of 128 (the last anchored to the end)
def test_released_same_s_decode_flops_match_torch_flop_counter(frames):
    backend = load(FIXTURES / "small", bf16=False)
    latents = torch.randn(1, backend.latent_channels, frames)
    measured = counted_flops(lambda: backend.decode_latents(latents, torch.Generator().manual_seed(0)))
    counted = efficiency.released_same_decode_flops(backend.autoencoder.config, frames)
    # the weight norm of the output mapping (a few out*D*kernel per window) is counted by torch only
    assert counted <= measured < counted * 1.01, (counted, measured)


@pytest.mark.slow  # two fresh processes loading two precisions each: over 10 s
def test_precision_and_exact_length_quick_on_a_released_folder(tmp_path):
    for name, extra in (("precision", []), ("exact_length", ["--long", "3", "--compare-seconds", "1"])):
        out = tmp_path / f"{name}.json"
        command = [sys.executable, "-m", f"bench.{name}", "--quick", "--model", str(FIXTURES / "small")]
        result = subprocess.run([*command, *extra, "--out", str(out)], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        document = json.loads(out.read_text())
        assert document["bench"] == name and document["machine"]["load_average_end"]
        if name == "precision":
            rows = document["results"]
            assert [r["part"] for r in rows] == ["end to end", "decode"]
            assert all(r["corr"] > 0.999 and r["log_mel_l1"] < 0.01 for r in rows)
        else:
            cost = {r["mode"]: r for r in document["results"]["cost"]}
            assert set(cost) == {"exact", "padded (released)"} and all(r["short_s"] > 0 for r in cost.values())
            assert document["results"]["change"][0]["seconds"] == 1.0


def test_efficiency_released_quick(tmp_path):
    out = tmp_path / "efficiency.json"
    efficiency.main(
        [
            "--quick",
            "--seconds",
            "1",
            "--matmul-size",
            "256",
            "--emulated-bf16",
            "--released",
            str(FIXTURES / "small"),
            "--out",
            str(out),
        ]  # fmt: skip
    )
    rows = [r for r in json.loads(out.read_text())["results"] if r["part"].startswith("released")]
    assert [(r["part"], r["precision"]) for r in rows] == [
        ("released-dit", "fp32"),
        ("released-same-decoder", "fp32"),
        ("released-dit", "bf16"),
        ("released-same-decoder", "bf16"),
    ]
    assert all(r["frames"] == 76 and r["gflop"] > 0 and r["percent_of_peak_cpu"] > 0 for r in rows)  # 1 s + 6 s
    assert all(r["relative_rms"] < 0.05 for r in rows if r["precision"] == "bf16")


def test_daemon_bars_quick(tmp_path):
    out = tmp_path / "daemon_bars.json"
    command = [sys.executable, "-m", "bench.daemon_bars", "--quick", "--model", str(FIXTURES / "small")]
    result = subprocess.run(
        [*command, "--bars", "1", "--fp32-too", "--out", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    assert [row["mode"] for row in rows] == ["as released", "exact length"] * 2
    assert rows[0]["precision"].startswith("default (") and rows[2]["precision"] == "--fp32"
    for row in rows:
        assert row["seconds"] == 2.0 and row["repeats"] == 2 and len(row["walls"]) == 2
        assert 0 < row["model_median_s"] <= row["median_s"]


@pytest.mark.slow  # two fresh processes, one quantising six copies of the DiT
def test_int8_linears_quick(tmp_path):
    out = tmp_path / "int8.json"
    command = [
        sys.executable,
        "-m",
        "bench.int8_linears",
        "--quick",
        "--model",
        str(FIXTURES / "small"),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    reference, int8 = rows[0], [r for r in rows if r["precision"].startswith("int8")]
    assert reference["precision"] == "float32" and reference["relative_rms"] == 0 and reference["int8_layers"] == 0
    assert reference["again_relative_rms"] == 0  # the quantised copies left the float32 DiT alone
    ours, theirs, groups = int8[0], int8[1], int8[2:]
    assert ours["precision"] == "int8, sa3 (per row, rotated)" and theirs["precision"] == "int8, torch (per tensor)"
    assert ours["layers"] == theirs["layers"] == "the layers `--int8` runs in int8" and len(groups) == 6
    # the groups split the blocks' Linear layers, each once; --int8 leaves the cross-attention output float32
    runs = sum(r["int8_layers"] for r in groups if r["layers"] != "cross-attention output")
    assert ours["int8_layers"] == theirs["int8_layers"] == runs > 0
    assert all(0 < r["relative_rms"] < 1 and r["step_s"] > 0 for r in int8)  # int8 moves the velocity, not wildly
    assert ours["made_s"] > 0
    kernels = json.loads(out.read_text())["kernels"]  # the ceiling table: float32, the int8 kernel, Int8Linear
    assert [k["kernel"].split(" ")[0] for k in kernels] == ["float32", "int8", "int8,"]
    assert all(k["gops"] > 0 and k["rows"] == kernels[0]["rows"] > 64 for k in kernels)
    packing = json.loads(out.read_text())["packing"]  # without the int8 cache, filling it, from it
    assert [r["packing"].split(" ")[0] for r in packing] == ["without", "the", "from"]
    assert all(r["seconds"] > 0 and r["layers"] == runs for r in packing) and packing[0]["cache_mb"] > 0
    bad = subprocess.run(
        [*command[:-2], "--engine", "nope", "--out", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: quantized engine 'nope'")
