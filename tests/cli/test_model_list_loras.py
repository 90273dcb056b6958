"""`sa3 model list` shows the adapters of the LoRA folder: type, rank, the base model they fit."""

from __future__ import annotations

import json
import os
import shutil

from tests import forked_cli
from tests.conftest import REPO

LORA = REPO / "tests" / "fixtures" / "released" / "lora"


def _list(tmp_path, *args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "SA3_LORA_DIR"}
    environment.update(HF_HUB_CACHE=str(tmp_path / "cache"), XDG_DATA_HOME=str(tmp_path / "data"), **env)
    return forked_cli.run(["model", "list", *args], env=environment, timeout=120)


def test_adapters_are_listed_with_type_rank_and_base(tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    for name in ("dora-rows", "lora-xs"):
        shutil.copy(LORA / f"{name}.safetensors", folder / f"{name.upper()}.safetensors")
    (folder / "broken.safetensors").write_bytes(b"not a lora")
    result = _list(tmp_path, "--lora-dir", folder, "--json")
    assert result.returncode == 0, result.stderr
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)["loras"]}
    assert set(listed) == {"dora-rows", "lora-xs", "broken"}
    assert (listed["dora-rows"]["adapter_type"], listed["dora-rows"]["rank"]) == ("dora-rows", 2)
    assert listed["dora-rows"]["base"] == "a DiT 64 wide"  # the fixture DiT's width
    assert listed["lora-xs"]["base"].startswith("unknown")  # -xs files hold no width
    assert "not a LoRA file" in listed["broken"]["problem"]
    text = _list(tmp_path, "--lora-dir", folder)
    assert "LoRA adapters in" in text.stdout and "dora-rows" in text.stdout and "unusable" in text.stdout


def test_the_default_folder_comes_from_the_environment(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(LORA / "bora.safetensors", folder)
    result = _list(tmp_path, "--json", SA3_LORA_DIR=str(folder))
    assert json.loads(result.stdout)["lora_dir"] == str(folder)
    assert [e["name"] for e in json.loads(result.stdout)["loras"]] == ["bora"]
    none = _list(tmp_path)
    assert none.returncode == 0 and "no LoRA folder" in none.stdout
    bad = _list(tmp_path, "--lora-dir", tmp_path / "nowhere")
    assert bad.returncode == 2 and "is not a folder" in bad.stderr.strip().splitlines()[-1]
