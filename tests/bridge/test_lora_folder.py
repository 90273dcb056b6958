"""The LoRA folder of a server without a server: where it is by default (sa3core.lora.default_lora_dir),
what bridge.loras.LoraFolder lists, the fit check that changes nothing (sa3core.lora.check_fit),
the protocol's `loras` field, and the client's refusal to send `loras` to a 1.4 daemon."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge import protocol as P
from bridge.loras import LoraFolder
from sa3core.errors import Sa3Error
from sa3core.lora import MAX_STRENGTH, check_fit, default_lora_dir, read_lora
from tests.bridge.conftest import OldDaemon

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
LORA = FIXTURES / "lora"


# ---------------------------------------------------------------------------- the default folder
@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SA3_LORA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_the_default_folder_is_sa3_lora_dir_then_xdg_then_home_and_only_when_it_exists(clean_env, monkeypatch):
    home = clean_env / "home" / ".local" / "share" / "sa3" / "loras"
    assert default_lora_dir() is None  # nothing there: no folder
    home.mkdir(parents=True)
    assert default_lora_dir() == home
    xdg = clean_env / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    assert default_lora_dir() is None  # XDG_DATA_HOME set: its folder, which does not exist
    (xdg / "sa3" / "loras").mkdir(parents=True)
    assert default_lora_dir() == xdg / "sa3" / "loras"
    named = clean_env / "mine"
    named.mkdir()
    monkeypatch.setenv("SA3_LORA_DIR", str(named))
    assert default_lora_dir() == named


def test_a_sa3_lora_dir_that_is_not_a_folder_is_one_line(clean_env, monkeypatch):
    monkeypatch.setenv("SA3_LORA_DIR", str(clean_env / "missing"))
    with pytest.raises(Sa3Error) as err:
        default_lora_dir()
    assert "SA3_LORA_DIR" in str(err.value) and "not a folder" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


# ---------------------------------------------------------------------------- the folder
def test_the_folder_lists_adapters_by_lower_case_stem_with_rank_and_type(tmp_path):
    shutil.copy(LORA / "dora-rows.safetensors", tmp_path / "Dora-Rows.safetensors")
    shutil.copy(LORA / "lora-xs.safetensors", tmp_path / "lora-xs.safetensors")
    shutil.copy(LORA / "lora.safetensors", tmp_path / "dora-Rows.safetensors")  # the same name, sorted later: skipped
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "weights.safetensors"))  # no lora_config
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "fake.safetensors"), {"lora_config": json.dumps({})})
    folder = LoraFolder(tmp_path)
    assert folder.names == ["dora-rows", "fake", "lora-xs"]
    rows, fake, xs = folder.adapters
    assert (rows.rank, rows.adapter_type, xs.rank, xs.adapter_type) == (2, "dora-rows", 4, "lora-xs")
    assert rows.path.name == "Dora-Rows.safetensors"
    assert fake.rank is None and fake.problem and "not a LoRA file" in fake.why_not("any")
    assert folder.find("LORA-XS") is xs and folder.find("tape") is None
    assert "this server has: dora-rows, fake, lora-xs" in folder.unknown("tape")
    assert xs.describe() == {"name": "lora-xs", "file": "lora-xs.safetensors", "rank": 4,
                             "adapter_type": "lora-xs", "fits": []}  # fmt: skip
    assert "no LoRA folder" in LoraFolder(None).unknown("tape") and LoraFolder(None).adapters == []


@pytest.fixture(scope="module")
def fixtures():
    from sa3core.pipeline import Pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield {name: Pipeline.load(FIXTURES / name, bf16=True) for name in ("small", "medium")}
    finally:
        torch.set_num_threads(threads)


def test_the_fit_check_names_the_layer_and_changes_nothing(fixtures):
    from sa3core.modules.lora import ADAPTED
    from sa3core.pipeline import Pipeline

    small, medium = fixtures["small"], fixtures["medium"]
    rows = read_lora(LORA / "dora-rows.safetensors")
    before = {k: v.clone() for k, v in small.backend.dit.state_dict().items()}
    run_copy = small.backend._dit_run
    check_fit(small, rows)
    with pytest.raises(Sa3Error) as err:
        check_fit(medium, rows)
    line = str(err.value)
    assert "model.transformer" in line and "has shape" in line and "another base model" in line
    assert len(line.splitlines()) == 1
    assert small.backend._dit_run is run_copy and small.loras is None  # the bf16 copy was not remade
    assert all(type(m) not in ADAPTED.values() for m in small.backend.dit.modules())
    assert all(torch.equal(v, before[k]) for k, v in small.backend.dit.state_dict().items())
    with pytest.raises(Sa3Error, match="takes no LoRA"):
        check_fit(Pipeline.random("tiny", text_encoder="hash"), rows)


def test_the_fit_check_looks_through_a_set_attached_apart(fixtures):
    small = fixtures["small"]
    small.use_loras([(LORA / "lora-xs.safetensors", 1.0)], merge=False)
    try:
        check_fit(small, read_lora(LORA / "dora-rows.safetensors"))  # adapted layers count as themselves
    finally:
        small.drop_loras()


def test_the_folder_checks_each_adapter_against_each_model(tmp_path, fixtures):
    for name in ("dora-rows", "lora"):
        shutil.copy(LORA / f"{name}.safetensors", tmp_path)
    folder = LoraFolder(tmp_path, fixtures)
    for adapter in folder.adapters:
        assert adapter.fits == ("small",), adapter
        assert adapter.why_not("small") is None
        assert adapter.why_not("medium").startswith("on model 'medium': LoRA ")
    assert "fitting no served model" not in folder.summary()


# ---------------------------------------------------------------------------- the protocol
def test_the_protocol_strength_limit_is_the_library_s():
    assert P.MAX_LORA_STRENGTH == MAX_STRENGTH


def parse(extra: dict) -> P.JobRequest:
    return P.parse_job({"type": "generate", "prompt": "x", "seconds": 1.0, **extra}, [], P.Limits())


def test_a_job_s_loras_are_names_and_strengths_in_order():
    job = parse({"loras": [{"name": "Tape", "strength": 0.5}, {"name": "drums"}, {"name": "b", "strength": -2}]})
    assert job.loras == [("tape", 0.5), ("drums", 1.0), ("b", -2.0)]
    assert parse({}).loras == [] and parse({"loras": []}).loras == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("tape", "must be a list"),
        (["tape"], "each entry is a {name, strength} map"),
        ([{"strength": 1}], "needs a 'name'"),
        ([{"name": "a", "strength": 3}], "strength 3 is outside -2..2"),
        ([{"name": "a", "strength": -2.5}], "outside -2..2"),
        ([{"name": "a", "strength": "1"}], "must be a number"),
        ([{"name": "a", "strength": True}], "must be a number"),
        ([{"name": "a"}, {"name": "A"}], "names 'a' twice"),
        ([{"name": f"a{i}"} for i in range(9)], "names 9 adapters; the limit is 8"),
    ],
)
def test_bad_loras_are_bad_field_naming_what_is_wrong(value, words):
    with pytest.raises(P.ProtocolError) as err:
        parse({"loras": value})
    assert err.value.code == "bad_field" and words in err.value.message


# ---------------------------------------------------------------------------- a 1.4 daemon
def test_the_client_refuses_loras_to_a_1_4_daemon_with_one_line_and_sends_no_job():
    from bridge.client import Client

    daemon = OldDaemon("1.4")
    try:
        with Client(daemon.endpoint, silence=5.0, retries=0) as client:
            with pytest.raises(Sa3Error) as err:
                client.generate("x", seconds=0.5, loras=[("tape", 0.7)])
        message = str(err.value)
        assert "speaks protocol 1.4, which has no LoRA adapters (added in 1.5)" in message
        assert len(message.splitlines()) == 1
        assert daemon.seen == ["hello"]  # asked its version; no job was sent
    finally:
        daemon.close()


def test_sa3_generate_daemon_lora_refuses_a_1_4_daemon(monkeypatch):
    from argparse import Namespace

    from bridge import client as C

    class OldClient:
        def __init__(self, *args, **kwargs) -> None:
            self.silence, self.retries = 0, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def hello(self):
            return {"v": "1.4", "default_steps": 8}

        def run(self, *args, **kwargs):  # pragma: no cover - must not be reached
            raise AssertionError("loras were sent to a 1.4 daemon")

    monkeypatch.setattr(C, "Client", OldClient)
    args = Namespace(steps=2, cfg=None, seed=0, variations=1, quiet=True, loras=[("tape", 0.7)])
    with pytest.raises(Sa3Error, match=r"speaks protocol 1\.4, which has no LoRA adapters \(added in 1\.5\)"):
        C.generate_via_daemon("tcp://127.0.0.1:9", "generate", "x", args, samples=4410)
