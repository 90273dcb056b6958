"""LoRA adapters through a real daemon (protocol 1.5): `sa3 serve --lora-dir` on loopback serving
the small released fixture (default) and the medium one, with copies of the fixture adapters.
Jobs are compared bit for bit with the library in this process (same precision, same threads)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge import protocol as P
from bridge.client import Client, DaemonError
from sa3core.audio import read_audio
from tests.conftest import run_sa3

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
LORA = FIXTURES / "lora"
MANIFEST = json.loads((LORA / "manifest.json").read_text())
CALL = MANIFEST["generate"]["call"]  # prompt, duration 0.1 s, 8 steps, seed 11
STACK = [(Path(file).stem, strength) for file, strength in MANIFEST["generate"]["stack"].items()]  # in order
THREADS = 2
SAMPLES = round(CALL["duration"] * 44_100)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Copies of three fixture adapters (the user's folder), and a file that says it is a LoRA but is not."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("loras")
    for name in ("dora-rows", "lora-xs", "lora"):
        shutil.copy(LORA / f"{name}.safetensors", folder / f"{name}.safetensors")
    save_file({"w": np.zeros(2, np.float32)}, str(folder / "fake.safetensors"), {"lora_config": json.dumps({})})
    return folder


@pytest.fixture(scope="module")
def daemon(folder):
    from tests.bridge.conftest import DaemonProcess

    process = DaemonProcess(
        "--threads", str(THREADS), "--lora-dir", str(folder), "--model", str(FIXTURES / "medium"),
        model=str(FIXTURES / "small"),
    )  # fmt: skip
    yield process.wait_ready()
    process.stop()


def job(daemon, loras=None, **fields):
    with Client(daemon.endpoint, silence=60.0) as client:
        return client.generate(CALL["prompt"], seconds=CALL["duration"], steps=CALL["steps"], seed=CALL["seed"],
                               loras=loras, **fields)  # fmt: skip


def in_process(loras=(), strengths=None) -> np.ndarray:
    """The library's take in this process: the small fixture, the files kept apart (as the daemon keeps them)."""
    from sa3core.pipeline import Pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        files = [(LORA / f"{name}.safetensors", strength) for name, strength in loras]
        pipeline = Pipeline.load(FIXTURES / "small", loras=files, merge_loras=False)
        with pipeline.lora_strengths(strengths):
            return pipeline.generate(CALL["prompt"], SAMPLES, CALL["steps"], None, CALL["seed"])
    finally:
        torch.set_num_threads(threads)


def test_capabilities_list_the_folder_with_the_models_each_fits(daemon, folder):
    with Client(daemon.endpoint) as client:
        told = client.hello()
    assert told["v"] == P.PROTOCOL_VERSION and told["max_loras"] == 8
    listed = {entry["name"]: entry for entry in told["loras"]}
    assert list(listed) == ["dora-rows", "fake", "lora", "lora-xs"]
    assert listed["dora-rows"] == {"name": "dora-rows", "file": "dora-rows.safetensors", "rank": 2,
                                   "adapter_type": "dora-rows", "fits": ["small"]}  # fmt: skip
    assert listed["lora"]["fits"] == ["small"]  # the medium fixture is wider: another base model
    assert listed["lora-xs"]["fits"] == ["small", "medium"]  # -xs adapters carry only r x r: the names decide
    assert listed["fake"] == {"name": "fake", "file": "fake.safetensors", "rank": None, "adapter_type": None,
                              "fits": []}  # fmt: skip
    assert f"LoRA folder {folder}: 4 adapter(s); fitting no served model: fake" in daemon.stderr()


def test_jobs_run_with_exactly_their_adapters(daemon):
    """Base, the stack, base again, other strengths, the other order, the stack again: each equals
    the library's take bit for bit; the daemon swaps only when the set or its order changes."""
    base = in_process()
    first = job(daemon)
    np.testing.assert_array_equal(first.audio[0], base[0])  # nothing attached yet: a daemon without LoRAs
    assert first.header["loras"] == []

    stacked = job(daemon, STACK)
    np.testing.assert_array_equal(stacked.audio, in_process(STACK))
    assert stacked.header["loras"] == [{"name": name, "strength": strength} for name, strength in STACK]
    assert np.abs(stacked.audio - base).max() > 0.05

    again = job(daemon)  # the set stays attached, at strength 0: the base model bit for bit
    np.testing.assert_array_equal(again.audio, base)

    softer = [("dora-rows", 0.3), ("lora-xs", 1.0)]
    np.testing.assert_array_equal(job(daemon, softer).audio, in_process(STACK, [0.3, 1.0]))

    reversed_stack = STACK[::-1]
    other = job(daemon, reversed_stack)
    assert np.abs(other.audio - stacked.audio).max() > 0.05  # the order counts
    np.testing.assert_array_equal(other.audio, in_process(reversed_stack))

    np.testing.assert_array_equal(job(daemon, [("DORA-ROWS", 0.7), ("lora-xs", 1.0)]).audio, stacked.audio)
    swaps = [line for line in daemon.stderr().splitlines() if re.search(r"attaching LoRA", line)]
    assert len(swaps) == 3, swaps  # the stack, the other order, the stack again: strengths alone swap nothing


def test_the_merged_library_take_agrees_to_rounding(daemon):
    """`Pipeline.load(small, loras=...)` merges the adapters into the weights: the same audio to
    float rounding (the daemon keeps them apart, so strengths can change per job)."""
    from sa3core.pipeline import Pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        files = [(LORA / f"{name}.safetensors", strength) for name, strength in STACK]
        merged = Pipeline.load(FIXTURES / "small", loras=files).generate(
            CALL["prompt"], SAMPLES, CALL["steps"], None, CALL["seed"]
        )
    finally:
        torch.set_num_threads(threads)
    assert np.abs(job(daemon, STACK).audio - merged).max() < 0.05  # bf16 matmuls: rounding, not another sound


def test_a_strength_of_zero_leaves_an_adapter_out(daemon):
    """Even one that does not fit the job's model: it is neither attached nor checked."""
    base = job(daemon, model="medium")
    left_out = job(daemon, [("dora-rows", 0.0)], model="medium")
    np.testing.assert_array_equal(left_out.audio, base.audio)


def error(daemon, loras, **fields) -> DaemonError:
    with pytest.raises(DaemonError) as err:
        job(daemon, loras, **fields)
    assert len(err.value.message.splitlines()) == 1
    return err.value


def test_an_unknown_name_is_bad_field_naming_the_folder_s_adapters(daemon):
    err = error(daemon, [("tape", 1.0)])
    assert err.code == "bad_field"
    assert "unknown LoRA 'tape'; this server has: dora-rows, fake, lora, lora-xs" in err.message


def test_a_strength_out_of_range_is_bad_field(daemon):
    err = error(daemon, [("dora-rows", 3.0)])
    assert err.code == "bad_field" and "strength 3 is outside -2..2" in err.message


def test_too_many_adapters_are_bad_field(daemon):
    err = error(daemon, [(f"a{i}", 1.0) for i in range(9)])
    assert err.code == "bad_field" and "the limit is 8" in err.message


def test_an_adapter_for_another_model_is_invalid_request_naming_the_layer(daemon):
    err = error(daemon, [("lora-xs", 1.0), ("dora-rows", 0.7)], model="medium")
    assert err.code == "invalid_request"
    assert err.message.startswith("on model 'medium': LoRA 'dora-rows.safetensors': model.transformer.")
    assert re.search(r"has shape \(\d+, \d+\), this model's layer needs \(\d+, \d+\)", err.message)


def test_a_file_that_is_not_a_lora_is_invalid_request(daemon):
    err = error(daemon, [("fake", 1.0)])
    assert err.code == "invalid_request" and "'fake' cannot be used" in err.message


def test_sa3_generate_daemon_lora_sends_names(daemon, tmp_path):
    out = tmp_path / "stack.wav"
    result = run_sa3(
        "generate", CALL["prompt"], "--daemon", daemon.endpoint, "--seconds", CALL["duration"],
        "--seed", CALL["seed"], "--steps", CALL["steps"], "--lora", "dora-rows:0.7", "--lora", "lora-xs",
        "--bit-depth", "float", "-o", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    audio, rate = read_audio(out)
    assert rate == 44_100
    np.testing.assert_array_equal(audio, job(daemon, STACK).audio[0])


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("tape:0.5", "unknown LoRA 'tape'"),
        ("dora-rows:2.5", "the strength is 2.5; use -2 to 2"),
        (str(LORA / "dora-rows.safetensors"), "name an adapter in the daemon's LoRA folder"),
    ],
)
def test_sa3_generate_daemon_bad_lora_is_one_line(daemon, tmp_path, spec, words):
    out = tmp_path / "bad.wav"
    result = run_sa3(
        "generate", "x", "--daemon", daemon.endpoint, "--seconds", "0.1", "--steps", "1", "--lora", spec,
        "-o", out, "--quiet",
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr
    assert not out.exists()
