"""`sa3 eval` end to end on a tiny random model and a tiny synthesized corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from sa3.eval import runner
from sa3.eval.runner import EvalSettings, run_eval
from sa3core.errors import Sa3Error

from ..conftest import run_sa3
from .signals import RATE, drum_pattern, note, progression, stereo


def _write_corpus(folder, split="test"):
    """Four labelled clips (chords, drums, one-shot) in the corpus layout, 2-3 s each."""
    items = [
        ("audio/loop/0.wav", progression(9, True, 0.5, 1), "Piano chords in A minor, 120 bpm",
         {"kind": "loop", "key": "A", "mode": "minor", "bpm": 120.0, "meter": "4/4"}),
        ("audio/loop/1.wav", drum_pattern(120.0, 3, bars=2)[:, : 3 * RATE], "Waltz drums at 120 bpm",
         {"kind": "loop", "bpm": 120.0, "meter": "3/4"}),
        ("audio/one-shot/2.wav", stereo(np.concatenate([note(330.0, 1.0, 8.0), np.zeros(RATE // 5)])),
         "Single piano note", {"kind": "one-shot", "flavour": "note"}),
        ("audio/loop/3.wav", progression(0, False, 0.5, 1), "Organ chords in C major, 96 bpm",
         {"kind": "loop", "key": "C", "mode": "major", "bpm": 96.0, "meter": "4/4"}),
    ]  # fmt: skip
    lines = []
    for path, audio, caption, tags in items:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / path, audio.T, RATE, subtype="FLOAT")
        lines.append(
            {"path": path, "caption": caption, "seconds": audio.shape[1] / RATE, "samples": audio.shape[1],
             "licence": "MIT", "source": "test", "tags": tags, "split": split}
        )  # fmt: skip
    lines.append({**lines[0], "split": "train"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _write_corpus(tmp_path_factory.mktemp("corpus"))


def test_full_run_on_tiny_model(tiny_pipeline, corpus):
    settings = EvalSettings(
        corpus=str(corpus), items=3, steps=1, seeds=2, inpaint_items=1, max_seconds=2.0, opus_kbps=(24.0,)
    )
    report = run_eval(settings, pipeline=tiny_pipeline, progress=False)
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN/inf literals
    sections = report["sections"]
    assert list(sections) == list(runner.SECTION_ORDER)
    assert report["settings"]["steps"] == 1 and report["clips"][0] == "audio/loop/0.wav"
    # the reconstruction numbers are real numbers, Opus at 24 kbps beats a random autoencoder
    ae, opus = sections["autoencoder"]["summary"], sections["opus"]["summary"]["24kbps"]
    assert ae["log_mel_l1"] > 0 and opus["log_mel_l1"] < ae["log_mel_l1"]
    assert opus["max_abs_lag_samples"] < 44  # under 1 ms: a missed pre-skip would be 287 samples
    # the estimators also read each labelled clip's reconstruction (the codec's own ceiling)
    assert ae["recon_key"]["judged"] == 1 and ae["recon_tempo"]["judged"] == 2
    assert all("bpm_found" in item for item in sections["autoencoder"]["items"][:2])
    # lengths are exact and preserved audio is bit-exact whatever the model is
    adherence = sections["adherence"]["summary"]
    assert adherence["exact_length"] == {"rate": 1.0, "count": 3, "judged": 3}
    assert adherence["key"]["judged"] == 1 and adherence["tempo"]["judged"] == 2
    assert adherence["one_shot_clean_ending"]["judged"] == 1
    assert sections["inpainting"]["summary"]["preserved_exact"]["rate"] == 1.0
    # the estimators read the labelled real clips right: the ceiling the model is read against
    real = sections["adherence"]["real"]["summary"]
    assert real["key"]["rate"] == 1.0 and real["one_shot_clean_ending"]["rate"] == 1.0
    assert sections["frechet"]["summary"]["frechet"] > 0
    assert sections["diversity"]["summary"]["ratio"] > 0
    table = runner.format_table(report)
    assert "adherence" in table and "frechet" in table and "24kbps" in table


def test_codec_search_scores_the_searched_encodes_too(tiny_pipeline, corpus):
    settings = EvalSettings(corpus=str(corpus), items=2, max_seconds=1.0, codec_search=3, skip=("opus", "generation"))
    report = run_eval(settings, pipeline=tiny_pipeline, progress=False)
    section = report["sections"]["autoencoder"]
    plain, searched = section["summary"], section["summary"]["search"]
    assert searched["steps"] == 3 and searched["mrstft"] < plain["mrstft"]  # the search's own loss falls
    assert all(item["search_log_mel_l1"] > 0 for item in section["items"])
    assert "search log_mel_l1" in runner.format_table(report)


def test_generation_only_with_builtin_prompts(tiny_pipeline):
    settings = EvalSettings(
        items=2, steps=1, max_seconds=2.0, skip=("reconstruction", "inpainting", "frechet", "diversity")
    )
    report = run_eval(settings, pipeline=tiny_pipeline, progress=False)
    items = report["sections"]["adherence"]["items"]
    assert [i["prompt"] for i in items] == [p[0] for p in runner.BUILTIN_PROMPTS[:2]]
    assert all(i["exact_length"] for i in items) and items[0]["samples"] == 2 * RATE


def test_user_errors_are_one_line(tiny_pipeline, corpus, tmp_path):
    def fails(match, **fields):
        with pytest.raises(Sa3Error, match=match):
            run_eval(EvalSettings(**fields), pipeline=tiny_pipeline, progress=False)

    fails("manifest.jsonl missing", corpus=str(tmp_path), skip=("generation", "opus"))
    fails("no items in split 'valid'", corpus=str(corpus), split="valid", skip=("generation", "opus"))
    fails("need real clips", skip=("opus",))
    fails("not a section", skip=("opsu",))
    fails("holds no audio files", folder=str(tmp_path), skip=("generation", "opus"))


def test_missing_ffmpeg_is_reported_before_any_work(tiny_pipeline, corpus, monkeypatch):
    from sa3.eval import codec_ref

    codec_ref.ffmpeg_path.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(Sa3Error, match="apt-get install ffmpeg"):
            run_eval(EvalSettings(corpus=str(corpus), split="nope"), pipeline=tiny_pipeline, progress=False)
    finally:
        codec_ref.ffmpeg_path.cache_clear()


def test_cli_writes_report(tiny_model_dir, corpus, tmp_path):
    report_path = tmp_path / "report.json"
    args = [
        "eval",
        "--model",
        tiny_model_dir,
        "--folder",
        corpus / "audio" / "loop",
        "--items",
        "2",
        "--steps",
        "1",
        "--threads",
        "1",
    ]
    result = run_sa3(*args, "--max-seconds", "2", "--skip", "opus,inpainting,diversity", "-o", report_path, "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert set(report["sections"]) == {"autoencoder", "adherence", "frechet"}
    assert "autoencoder" in result.stdout and "log_mel_l1" in result.stdout
    again = run_sa3(*args, "-o", report_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr and again.stderr.count("\n") == 1


def test_cli_evaluates_a_released_model(corpus, tmp_path):
    """`sa3 eval --model` on a released-layout folder (the small parity fixture): its own sampler and
    steps are reported, its takes have the exact lengths asked for, inpainting keeps the rest bit-exact."""
    from ..conftest import REPO

    report_path = tmp_path / "released.json"
    result = run_sa3(
        "eval", "--model", REPO / "tests" / "fixtures" / "released" / "small", "--folder", corpus / "audio" / "loop",
        "--items", "2", "--inpaint-items", "1", "--max-seconds", "1", "--threads", "2",
        "--skip", "opus,frechet,diversity", "-o", report_path, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["model"] == {"name": "small", "sampler": "pingpong", "steps": 8}
    assert set(report["sections"]) == {"autoencoder", "adherence", "inpainting"}
    summary = report["sections"]
    assert summary["adherence"]["summary"]["exact_length"]["rate"] == 1.0
    assert summary["inpainting"]["summary"]["preserved_exact"]["rate"] == 1.0


def test_cli_missing_corpus_is_one_line(tmp_path):
    result = run_sa3("eval", "--corpus", tmp_path / "nope")
    assert result.returncode == 2 and "is not a folder" in result.stderr and result.stderr.count("\n") == 1


def test_prompt_targets_from_corpus_tags():
    audio = np.zeros((2, 3 * RATE), dtype=np.float32)
    clips = [
        runner.Clip("a", audio, "x", {"kind": "loop", "key": "Eb", "mode": "minor", "bpm": 90.0, "meter": "6/8"}),
        runner.Clip("b", audio, "y", {"kind": "loop", "key": "D", "mode": "dorian", "bpm": 120.0, "meter": "4/4"}),
        runner.Clip("c", audio, "z", {"kind": "one-shot", "key": "C", "mode": "major"}),
    ]
    compound, modal, one_shot = runner.cases_from_clips(clips, max_seconds=2.0)
    assert compound.key == runner.music.Key(3, "minor") and compound.beats_per_bar == 3
    assert compound.pulse_bpm == pytest.approx(60.0) and compound.samples == 2 * RATE
    assert modal.key is None and modal.bpm == 120.0 and modal.beats_per_bar == 4 and modal.pulse_bpm is None
    assert one_shot.one_shot and one_shot.bpm is None and one_shot.key == runner.music.Key(0, "major")
