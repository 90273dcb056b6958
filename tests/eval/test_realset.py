"""The independent evaluation set: built for real from the reserved Debian packages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from sa3.eval import realset
from sa3.eval.realset import KINDS, PACKAGES, RealSetConfig, build_real_set
from sa3core.errors import Sa3Error
from training.corpus import sources

from ..conftest import run_sa3

try:
    realset.check_installed()
    INSTALLED = True
except Sa3Error:
    INSTALLED = False
needs_packages = pytest.mark.skipif(not INSTALLED, reason="scripts/install-eval-deps has not been run")


def build(out, **kwargs):
    return build_real_set(RealSetConfig(out_dir=str(out), progress=False, **kwargs))


def read_set(folder):
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    return rows, {row["path"]: sf.read(str(folder / row["path"]), dtype="float32") for row in rows}


def test_never_shares_a_package_with_the_training_corpus():
    trained_on = {source.package for source in sources.SOURCES}
    assert trained_on.isdisjoint(PACKAGES)
    assert len(PACKAGES) == 3


def test_missing_packages_are_named_with_the_fix(tmp_path):
    with pytest.raises(Sa3Error) as err:
        build(tmp_path / "set", root=str(tmp_path))
    message = str(err.value)
    assert "install-eval-deps" in message and all(package in message for package in PACKAGES)
    assert not (tmp_path / "set").exists()  # nothing written before the check


@needs_packages
def test_builds_interleaved_licensed_clips(tmp_path):
    out = tmp_path / "set"
    report = build(out, items=9, max_seconds=1.5)
    rows, audio = read_set(out)
    assert report.items == len(rows) == 9 and sorted(p.name for p in out.glob("*.flac")) == sorted(audio)
    # the first files in name order cover every kind, as `sa3 eval --folder --items N` takes them
    assert [row["kind"] for row in rows[:4]] == list(KINDS) and rows[8]["kind"] == KINDS[0]
    assert [row["path"] for row in rows] == sorted(row["path"] for row in rows)
    for row in rows:
        data, rate = audio[row["path"]]
        assert rate == 44_100 and data.shape[1] == 2 and 0.05 <= data.shape[0] / rate <= 1.5
        assert row["package"] in PACKAGES and row["licence"].startswith("GPL-2") and row["version"]
        assert np.abs(data).max() > 1e-3
    music = [row for row in rows if row["kind"] == "music"]
    assert all(row["offset_seconds"] > 0 and row["seconds"] == 1.5 for row in music)  # a window inside the track
    assert all(row["offset_seconds"] == 0 for row in rows if row["kind"] != "music")
    licences = (out / "LICENCES.md").read_text()
    assert all(package in licences for package in PACKAGES)


@needs_packages
def test_same_seed_same_set_other_seed_other_order(tmp_path):
    a, b, c = (tmp_path / name for name in "abc")
    build(a, items=4, max_seconds=0.5)
    build(b, items=4, max_seconds=0.5)
    build(c, items=4, max_seconds=0.5, seed=1)
    rows_a, audio_a = read_set(a)
    rows_b, audio_b = read_set(b)
    rows_c, _ = read_set(c)
    assert rows_a == rows_b and all(np.array_equal(audio_a[k][0], audio_b[k][0]) for k in audio_a)
    assert [row["source"] for row in rows_a] != [row["source"] for row in rows_c]


@needs_packages
def test_refuses_a_used_folder_and_overwrite_leaves_no_stale_clips(tmp_path):
    out = tmp_path / "set"
    build(out, items=5, max_seconds=0.5)
    with pytest.raises(Sa3Error, match="--overwrite"):
        build(out, items=2, max_seconds=0.5)
    build(out, items=2, max_seconds=0.5, overwrite=True)
    rows, _ = read_set(out)
    assert len(rows) == 2 and len(list(out.glob("*.flac"))) == 2


@needs_packages
def test_cli_builds_a_set_that_sa3_eval_scores(tmp_path, tiny_model_dir):
    out = tmp_path / "real"
    result = run_sa3("data", "build-real", "-o", out, "--items", "2", "--max-seconds", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "2 clips" in result.stdout and f"sa3 eval --folder {out}" in result.stdout
    report_path = tmp_path / "report.json"
    scored = run_sa3(
        "eval", "--model", tiny_model_dir, "--folder", out, "--items", "2", "--skip", "generation",
        "--opus-kbps", "24", "--threads", "1", "--quiet", "-o", report_path,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    sections = json.loads(report_path.read_text())["sections"]
    items = sections["autoencoder"]["items"]
    rows, _ = read_set(out)
    assert [item["clip"] for item in items] == [row["path"] for row in rows]
    # the manifest's kinds (music, loop) split the scores, each kind its own clip
    by_kind = sections["autoencoder"]["by_kind"]
    assert sorted(by_kind) == ["loop", "music"] and all(by_kind[k]["clips"] == 1 for k in by_kind)
    for row, item in zip(rows, items):
        assert by_kind[row["kind"]]["log_mel_l1"] == pytest.approx(item["log_mel_l1"])
    opus = {item["clip"]: item for item in sections["opus"]["items"]}
    for row in rows:
        assert sections["opus"]["by_kind"][row["kind"]]["24kbps"]["mrstft"] == pytest.approx(
            opus[row["path"]]["mrstft"]
        )
    assert "autoencoder [music]  log_mel_l1" in scored.stdout and "opus [loop]" in scored.stdout


def test_cli_bad_arguments_are_one_line(tmp_path):
    result = run_sa3("data", "build-real", "-o", tmp_path / "x", "--max-seconds", "0")
    assert result.returncode == 2 and "--max-seconds" in result.stderr and result.stderr.count("\n") == 1
