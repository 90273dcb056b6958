"""The benchmarks run in CI-sized settings and write JSON with the keys docs/benchmarks.md reads;
the FLOP counts the efficiency bench divides by agree with torch's own FLOP counter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench import common, default_model, efficiency, length_scaling, memory, steps
from sa3core import timebase
from sa3core.backends import cpu_has_bf16
from sa3core.models.dit import DiT, dit_preset
from sa3core.models.same import SAME, SAMEConfig


def read(path) -> dict:
    document = json.loads(path.read_text())
    assert {"bench", "command", "machine", "results"} <= set(document)
    assert document["machine"]["physical_cores"] >= 1 and document["machine"]["torch"] == torch.__version__
    assert len(document["machine"]["load_average_end"]) == 3
    return document


def test_dit_flops_match_torch_flop_counter():
    torch.manual_seed(0)
    config = dit_preset("tiny")
    model = DiT(config).eval()
    frames = 40
    with torch.inference_mode():
        cond = model.encode_condition(
            torch.randn(1, 12, config.text_dim), torch.ones(1, 12, dtype=torch.bool), torch.tensor([3.0])
        )
        counter = FlopCounterMode(display=False)
        # the math kernel is plain matmuls, which the counter sees (it does not count the fused CPU kernel)
        with counter, sdpa_kernel(SDPBackend.MATH):
            model(torch.randn(1, 256, frames), torch.tensor([0.5]), cond)
        kept = FlopCounterMode(display=False)
        with kept, sdpa_kernel(SDPBackend.MATH):
            model(
                torch.randn(1, 256, frames),
                torch.tensor([0.5]),
                cond,
                torch.randn(1, 256, frames),
                torch.ones(1, 1, frames),
            )
    # torch also counts the timestep MLP and the modulation (a few width^2 per request), the formula does not
    counted = efficiency.dit_flops(config, frames, text_tokens=12)
    assert counted <= counter.get_total_flops() < counted * 1.02
    counted = efficiency.dit_flops(config, frames, text_tokens=12, kept=True)
    assert counted <= kept.get_total_flops() < counted * 1.02


def test_decoder_flops_match_torch_flop_counter_with_chunks():
    torch.manual_seed(0)
    config = SAMEConfig(width=64, heads=2, encoder_layers=1, decoder_layers=2, mlp_hidden=128, chunk_frames=8)
    model = SAME(config).eval()
    for frames in (5, 21):  # one pass, and three chunks with context
        counter = FlopCounterMode(display=False)
        with counter, sdpa_kernel(SDPBackend.MATH):
            model.decode(torch.randn(1, 256, frames))
        assert counter.get_total_flops() == efficiency.same_decode_flops(config, frames)


def test_measure_reports_medians_of_the_runs():
    calls = []
    timing = common.measure(lambda: calls.append(sum(range(20000))), repeats=3, warmup=2)
    assert len(calls) == 5 and len(timing.walls) == 3
    assert sorted(timing.walls)[1] == timing.wall_s and timing.cpu_s >= 0


def test_efficiency_quick(tmp_path):
    out = tmp_path / "efficiency.json"
    efficiency.main(["--quick", "--seconds", "1", "--matmul-size", "256", "--emulated-bf16", "--out", str(out)])
    document = read(out)
    assert set(document["matmul_peak"]) == {"fp32", "bf16"}
    rows = document["results"]
    variants = ["fp32", "bf16-autocast", "bf16"]
    assert [(r["part"], r["precision"]) for r in rows] == [("dit-tiny", v) for v in variants] + [
        ("same-tiny-decoder", v) for v in variants
    ]
    for row in rows:
        assert row["gflop"] > 0 and row["wall_s"] > 0 and row["percent_of_peak_cpu"] > 0
        if row["precision"] != "fp32":  # bf16 stays close to fp32: the DiT's velocities, the decoder's spectra
            assert row["relative_rms" if row["part"].startswith("dit") else "relative_rms_spectrum"] < 0.05


def test_efficiency_times_fp32_only_where_bf16_is_emulated(tmp_path, monkeypatch, capsys):
    """Without native bf16 the bf16 variants are left out unless asked for (emulated, they took
    over 18 minutes at 30 s on an AVX2-only CPU); with it they run."""
    out = tmp_path / "efficiency.json"
    command = ["--quick", "--seconds", "1", "--matmul-size", "256", "--out", str(out)]
    for native, expected in ((False, ["fp32"]), (True, ["fp32", "bf16-autocast", "bf16"])):
        monkeypatch.setattr(efficiency, "cpu_has_bf16", lambda native=native: native)
        efficiency.main(command)
        document = read(out)
        assert [r["precision"] for r in document["results"] if r["part"] == "dit-tiny"] == expected
        assert document["settings"]["bf16_variants"] is native
        assert set(document["matmul_peak"]) == {"fp32", "bf16"}
        assert ("fp32 variants only" in capsys.readouterr().out) is not native


def test_length_scaling_quick(tmp_path):
    out = tmp_path / "length_scaling.json"
    length_scaling.main(["--quick", "--lengths", "1", "2", "--window", "3", "--steps", "1", "--out", str(out)])
    rows = read(out)["results"]
    assert [r["seconds"] for r in rows] == [1.0, 2.0]
    for row in rows:
        assert row["frames"] == timebase.seconds_to_frames(row["seconds"]) and row["padded_measured"]
        assert row["padded_cpu_s"] > 0 and row["ratio_padded_cpu"] > 0


def test_padded_generate_returns_the_requested_samples():
    from sa3core.pipeline import Pipeline

    pipeline = Pipeline.random("tiny", seed=0, text_encoder="hash")
    audio = length_scaling.padded_generate(pipeline, 5000, window_frames=4, steps=1)
    assert audio.shape == (1, 2, 5000) and torch.isfinite(audio).all()


def test_steps_quick(tmp_path):
    out = tmp_path / "steps.json"
    steps.main(["--quick", "--seconds", "1", "--steps", "1", "2", "--reference-steps", "4", "--out", str(out)])
    document = read(out)
    rows = document["results"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("dpmpp", 4), ("pingpong", 1), ("pingpong", 2)]
    assert rows[0]["relative_distance_to_reference"] == 0.0
    assert all(r["relative_distance_to_reference"] > 0 for r in rows[1:])
    assert document["settings"]["model"] == "random tiny"


@pytest.mark.slow  # fresh processes: about 14 s
def test_codec_search_quick_times_each_step_in_a_fresh_process(tmp_path):
    from bench import codec_search

    out = tmp_path / "codec_search.json"
    codec_search.main(["--quick", "--threads", "1", "--out", str(out)])
    (row,) = read(out)["results"]
    assert row["seconds"] == 5.0 and row["frames"] == 54 and row["chunks"] == 1 and row["steps_run"] == 2
    assert row["step_wall_s"] > 0 and row["peak_mib"] >= row["rss_before_search_mib"] > 50


@pytest.mark.slow
def test_memory_quick_in_fresh_processes(tmp_path):
    out = tmp_path / "memory.json"
    memory.main(["--quick", "--lengths", "1", "--backends", "torch-fp32", "--out", str(out)])
    (row,) = read(out)["results"]
    assert row["backend"] == "torch-fp32" and row["samples"] == timebase.seconds_to_samples(1.0)
    assert row["peak_mib"] >= row["loaded_peak_mib"] > 50  # torch alone is more than 50 MiB


def test_peak_rss_is_the_childs_own_and_follows_an_allocation():
    code = "import sys, numpy; from bench.common import peak_rss_mib; a = numpy.ones(int(sys.argv[1]) * 2**17); print(peak_rss_mib())"

    def child_peak(mib: int) -> float:
        done = subprocess.run(
            [sys.executable, "-c", code, str(mib)], cwd=common.REPO, capture_output=True, text=True, check=True
        )
        return float(done.stdout)

    assert child_peak(256) - child_peak(0) > 200  # 256 MiB of float64 ones, touched
    upper_bound, stdout = common.run_child("bench.common", [])  # imports torch: over 50 MiB
    assert upper_bound > 50 and stdout == ""


def test_the_sa3_console_script_finds_the_benches_from_any_folder(tmp_path):
    """A console script's sys.path holds neither the checkout nor the working directory."""
    sa3 = Path(sys.executable).with_name("sa3")
    done = subprocess.run([str(sa3), "bench", "codec_search", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--seconds" in done.stdout


def test_sa3_bench_dispatches_and_names_unknown_benches(tmp_path, capsys):
    from sa3.cli import main
    from sa3.cli.bench import BENCHES

    assert main(["bench", "no_such_bench"]) == 2
    assert "unknown benchmark 'no_such_bench'" in capsys.readouterr().err
    for name in BENCHES.names():
        assert (common.REPO / "bench" / f"{BENCHES.get(name)}.py").exists() or name == "backends"
    out = tmp_path / "e.json"
    assert main(["bench", "efficiency", "--quick", "--seconds", "1", "--matmul-size", "128", "--out", str(out)]) == 0
    assert read(out)["bench"] == "efficiency"


def test_run_all_commands_pass_quick_and_skip_missing_benches(tmp_path, monkeypatch):
    from bench import run_all

    quick = run_all.command("length_scaling", tmp_path, quick=True, threads=1)
    assert quick[1:] == ["-m", "bench.length_scaling", "--out", str(tmp_path / "length_scaling.json"), "--quick"] + [
        "--threads",
        "1",
    ]
    daemon = run_all.command("daemon", tmp_path, quick=True, threads=0)
    assert daemon[2] == "bench.daemon_overhead" and "--quick" not in daemon and "--duration" in daemon
    monkeypatch.setattr(run_all.common, "REPO", tmp_path)  # a checkout without bench/*.py
    assert run_all.command("efficiency", tmp_path, quick=False, threads=0) is None


@pytest.mark.slow  # over 10 s; .ci/run runs the slow tests
def test_default_model_bench_times_the_cli_and_the_warm_parts(tmp_path):
    """The issue's end-to-end target: 4 bars at 120 bpm on the shipped model, cold and warm."""
    out = tmp_path / "default_model.json"
    default_model.main(["--repeats", "1", "--threads", "1", "--out", str(out)])
    document = read(out)
    results = document["results"]
    assert results["request"]["samples"] == 352_800 and document["model"] == "shipped default"
    assert len(results["cli_walls"]) == 1 and results["cli_wall_s"] > 0
    warm = results["warm"]
    assert {"text", "condition", "dit_step", "decode", "whole"} <= set(warm)
    # the whole call does at least the sampler steps and the decode it is made of
    assert warm["whole"]["cpu_s"] > 0.5 * warm["decode"]["cpu_s"] + 0.5 * warm["steps"] * warm["dit_step"]["cpu_s"]


def test_doc_sections_are_kept_per_cpu_class(tmp_path, monkeypatch):
    """Benches whose ratios depend on the CPU class (AMX against AVX-512 bf16) write their table
    into that class's section of docs/benchmarks.md and leave the other class's table alone."""
    assert (common.cpu_class() == "other") == (not cpu_has_bf16())
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.parent.mkdir()
    sections = "".join(f"<!-- t.{c}:start -->\nold {c}\n<!-- t.{c}:end -->\n" for c in ("amx", "avx512-bf16", "other"))
    doc.write_text(sections)
    monkeypatch.setattr(common, "REPO", tmp_path)
    common.write_doc_section("t", "new table", per_cpu_class=True)
    text = doc.read_text()
    assert f"<!-- t.{common.cpu_class()}:start -->\nnew table\n" in text
    assert text.count("new table") == 1 and text.count("old ") == 2


@pytest.mark.slow  # eight fresh processes, four of them beside a busy core
def test_threads_quick_runs_every_variant_in_a_fresh_process(tmp_path, tiny_model_dir):
    out = tmp_path / "threads.json"
    command = [sys.executable, "-m", "bench.threads", "--quick", "--model", str(tiny_model_dir), "--counts", "1"]
    command += ["--threads", "2", "--wait-policies", "--busy", "1", "--out", str(out)]
    done = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read(out)["results"]
    variants = [
        (n, policy, busy) for busy in (0, 1) for n, policy in ((1, None), (2, None), (2, "PASSIVE"), (2, "ACTIVE"))
    ]
    assert [(r["threads"], r["policy"], r["busy"]) for r in rows] == variants
    # each child ran with the thread count and the OpenMP policy it was given
    assert [(r["runs"][0]["threads"], r["runs"][0]["wait_policy"]) for r in rows] == [(n, p) for n, p, _ in variants]
    defaults = [r for r in rows if r["default"]]
    assert [(r["threads"], r["policy"], r["busy"]) for r in defaults] == [(2, None, 0), (2, None, 1)]
    assert all(r["speedup"] == 1.0 and r["max_difference"] == 0.0 for r in defaults[:1])
    assert all(r["take_s"] > r["dit_step_s"] > 0 and r["decode_s"] > 0 for r in rows)
    assert all(r["max_difference"] < 1e-4 for r in rows)  # the thread count moves the last bits at most
    assert "| 2 threads, OMP_WAIT_POLICY=PASSIVE, beside 1 busy core |" in done.stdout


def test_threads_bench_refuses_a_thread_count_below_one(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.threads", "--counts", "0", "2", "--out", str(tmp_path / "t.json")],
        cwd=common.REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.strip() == "error: --counts 0 2: every count must be 1 or more"


def test_linear_kernels_quick_checks_every_variant_against_the_plain_product(tmp_path):
    out = tmp_path / "linear_kernels.json"
    command = [sys.executable, "-m", "bench.linear_kernels", "--quick", "--threads", "1", "--out", str(out)]
    done = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    results = read(out)["results"]
    assert [(item["layer"], item["rows_count"]) for item in results] == [("ff input", 12), ("ff input", 76)]
    for item in results:
        by = {row["variant"]: row for row in item["rows"]}
        assert by["plain"]["speedup"] == 1.0 and by["plain"]["gflops"] > 0
        assert by["weight-first"]["relative_error"] < 1e-6  # the same product, at most summed in another order
        if "mkl-packed" in by:
            assert by["mkl-packed"]["relative_error"] < 1e-6 and by["mkl-packed"]["pack_gb_per_s"] > 0
        if "fp16-weights" in by:  # float16 weights round at about 2^-11: the bench must see it
            assert 1e-5 < by["fp16-weights"]["relative_error"] < 1e-3 and not by["fp16-weights"]["identical"]
    assert "| ff input (8192 × 1024) | 76 |" in done.stdout
