"""LoRA adapters through one `sa3 serve --http --fp32 --lora-dir DIR` (both doors): the official
stacked-adapter audio from a ZeroMQ job, a gary4juce-shaped request by name giving the same audio as
that job, the listing with fits, and /reload reading the folder again."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from bridge.client import Client
from bridge.http import wav

from .conftest import HttpServerProcess, call, poll_until_done, read_wav
from .test_gary4juce import gary_request, poll_like_gary, submit_like_gary

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
LORA = FIXTURES / "lora"
MANIFEST = json.loads((LORA / "manifest.json").read_text())
CALL = MANIFEST["generate"]["call"]  # prompt, duration 0.1 s, 8 steps, seed 11
STACK = [(Path(file).stem, strength) for file, strength in MANIFEST["generate"]["stack"].items()]
OFFICIAL = load_file(str(LORA / "reference" / "generate_stack.safetensors"))["audio"].numpy()[0]  # [2, n]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    for name in ("dora-rows", "lora-xs"):
        shutil.copy(LORA / f"{name}.safetensors", folder)
    shutil.copy(LORA / "dora-rows.safetensors", folder / "swap-me.safetensors")  # rewritten by the reload test
    return folder


@pytest.fixture(scope="module")
def server(folder):
    process = HttpServerProcess(
        "--model", str(FIXTURES / "small"), "--lora-dir", str(folder), "--fp32", "--threads", "2"
    ).wait_ready()
    yield process
    process.stop()


def zmq_job(server, loras, **fields):
    fields = {"seconds": CALL["duration"], "steps": CALL["steps"], "seed": CALL["seed"], **fields}
    with Client(server.endpoint, silence=60.0) as client:
        return client.generate(fields.pop("prompt", CALL["prompt"]), loras=loras, **fields)


def compare(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.abs(a - b).max()), float(np.corrcoef(a, b)[0, 1])


def test_a_fp32_daemon_gives_the_official_stacked_adapter_audio(server):
    """The manifest's call with dora-rows at 0.7 then lora-xs at 1.0; without them, or in the
    other order, the audio misses the official take far beyond the tolerance."""
    diff, corr = compare(zmq_job(server, STACK).audio[0], OFFICIAL)
    assert diff <= 2e-3 and corr >= 0.9999, (diff, corr)
    for label, loras in (("none", []), ("reversed", STACK[::-1])):
        assert compare(zmq_job(server, loras).audio[0], OFFICIAL)[0] > 0.05, label


def test_a_gary4juce_request_by_name_gives_the_zmq_job_s_audio(server):
    body = gary_request(
        "funky slap bass groove", bpm=110, seed=5, duration=0.25,
        loras=[{"name": "Dora-Rows", "strength": 0.7}, {"name": "lora-xs", "strength": 1.0}],
    )  # fmt: skip
    answer = submit_like_gary(server, "/generate", body)
    done = poll_like_gary(server, answer["session_id"])
    assert done["meta"]["loras"] == [
        {"name": "dora-rows", "strength": 0.7, "interval": [0.0, 1.0], "layer_filter": ""},
        {"name": "lora-xs", "strength": 1.0, "interval": [0.0, 1.0], "layer_filter": ""},
    ]
    same = zmq_job(server, STACK, prompt=body["prompt"], seconds=0.25, steps=body["steps"], cfg=1.0, seed=5,
                   bpm=110, meter="4/4")  # fmt: skip
    assert same.header["loras"] == [{"name": name, "strength": strength} for name, strength in STACK]
    assert done["audio_data"].encode() == wav.encode(same.audio[0])  # the same 16-bit WAV, byte for byte
    base = zmq_job(server, [], prompt=body["prompt"], seconds=0.25, steps=body["steps"], cfg=1.0, seed=5)
    pcm, _, _ = read_wav(done["audio_data"])
    assert np.abs(pcm.T / 32768.0 - base.audio[0]).max() > 0.05  # the adapters changed the take


def test_the_listing_says_what_each_adapter_is_and_fits(server):
    body = call(server, "GET", "/loras").json
    assert body["can_apply"] is True and call(server, "GET", "/health").json["lora_support"] is True
    listed = {entry["name"]: entry for entry in body["loras"]}
    assert list(listed) == ["dora-rows", "lora-xs", "swap-me"]
    assert (listed["dora-rows"]["rank"], listed["dora-rows"]["adapter_type"]) == (2, "dora-rows")
    assert all(entry["fits"] == ["small"] for entry in listed.values())
    with Client(server.endpoint) as client:
        assert [entry["name"] for entry in client.hello()["loras"]] == list(listed)  # one folder, both doors


def test_reload_reads_the_folder_again_and_jobs_use_the_new_file(server, folder):
    before = zmq_job(server, [("swap-me", 0.7)]).audio
    np.testing.assert_array_equal(before, zmq_job(server, [("dora-rows", 0.7)]).audio)
    shutil.copy(LORA / "lora.safetensors", folder / "swap-me.safetensors")  # another adapter, same name
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, str(folder / "fake.safetensors"), {"lora_config": json.dumps({})})
    reloaded = call(server, "POST", "/reload").json
    listed = {entry["name"]: entry for entry in reloaded["loras"]}
    assert reloaded["previous"] == ["dora-rows", "lora-xs", "swap-me"]
    assert listed["swap-me"]["adapter_type"] == "lora" and listed["fake"]["fits"] == []
    after = zmq_job(server, [("swap-me", 0.7)]).audio
    assert np.abs(after - before).max() > 0.05  # the file was read again, not the set left attached
    refused = call(server, "POST", "/generate", {"prompt": "x", "duration": 0.1, "loras": [{"name": "fake"}]})
    assert refused.status == 400 and "'fake' cannot be used" in refused.json["error"]


def test_a_base_job_after_adapters_is_the_base_model(server):
    """HTTP without loras after LoRA jobs: the attached set at strength 0, the base take bit for bit."""
    zmq_job(server, STACK)
    body = {"prompt": CALL["prompt"], "duration": CALL["duration"], "steps": CALL["steps"], "seed": CALL["seed"],
            "cfg_scale": 1.0}  # fmt: skip
    reply = call(server, "POST", "/generate", body)
    done, _ = poll_until_done(server, reply.json["session_id"])
    assert done["meta"]["loras"] == []
    base = zmq_job(server, [], cfg=1.0, bpm=110, meter="4/4")  # the prompt's "110 BPM" is the HTTP job's tempo
    assert base64.b64decode(done["audio_data"]) == base64.b64decode(wav.encode(base.audio[0]))
