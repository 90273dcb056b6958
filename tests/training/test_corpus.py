"""`sa3 data build`: a small real corpus built through the CLI, checked item by item.

Needs the fluidsynth library and the soundfonts (scripts/test installs them through
scripts/install-system-deps); every test fails with what to run when they are missing.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sa3.cli import main
from sa3core.errors import Sa3Error
from sa3core.timebase import bars_to_samples, seconds_to_samples
from training.corpus import sources
from training.corpus.theory import MODES, NOTE_NAMES

REPO = Path(__file__).resolve().parents[2]
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf3/MuseScore_General_Full.sf3")


@pytest.fixture(autouse=True)
def _synth_installed():
    """The corpus renders with the real FluidSynth: scripts/test installs it; without it these
    tests fail with what to run, rather than pass by skipping."""
    if not ctypes.util.find_library("fluidsynth") or not all(Path(p).exists() for p in SOUNDFONTS):
        pytest.fail("fluidsynth or the GM soundfonts are not installed; run scripts/install-corpus-deps")


SEED, ITEMS, MAX_SECONDS = 7, 12, 8.0
FIELDS = {"path", "caption", "seconds", "samples", "licence", "source", "tags", "split"}
CHORD_INTERVALS = {
    "": (0, 4, 7), "m": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8), "maj7": (0, 4, 7, 11),
    "7": (0, 4, 7, 10), "m7": (0, 3, 7, 10), "m7b5": (0, 3, 6, 10), "dim7": (0, 3, 6, 9), "aug7": (0, 4, 8, 10),
}  # fmt: skip


def sa3(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sa3", *args], cwd=REPO, capture_output=True, text=True, timeout=240, check=False
    )


def build(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return sa3("data", "build", "-o", str(out), "--max-seconds", str(MAX_SECONDS), "--quiet", *extra)


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    result = build(out, "--seed", str(SEED), "--items", str(ITEMS), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    return out


def chroma(audio: np.ndarray) -> np.ndarray:
    """Pitch-class energy [12] (C = 0) from 0.74 s FFT frames, each frame normalised."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    size = 32768  # 1.35 Hz bins: semitones stay apart down to 60 Hz
    window = np.hanning(size)
    freqs = np.fft.rfftfreq(size, 1 / 44100)
    keep = (freqs > 60) & (freqs < 1000)
    pitch_class = (np.round(12 * np.log2(freqs[keep] / 440.0)).astype(int) + 9) % 12
    total = np.zeros(12)
    for start in range(0, max(1, len(mono) - size // 2), size // 2):
        frame = np.pad(mono[start : start + size], (0, max(0, start + size - len(mono))))
        energy = np.bincount(pitch_class, np.abs(np.fft.rfft(frame * window))[keep], minlength=12)
        total += energy / max(energy.sum(), 1e-12)
    return total


def test_manifest_lines_have_every_field_and_licence(corpus):
    entries = manifest(corpus)
    assert len(entries) == ITEMS
    licences = {s.package: s.licence for s in sources.SOURCES}
    for entry in entries:
        assert set(entry) == FIELDS
        assert entry["source"] in licences and entry["licence"] == licences[entry["source"]]
        assert entry["split"] in ("train", "valid", "test")
        assert entry["caption"].strip() and entry["tags"]["kind"] in ("loop", "one-shot", "piece", "sfx")
    kinds = {e["tags"]["kind"] for e in entries}
    assert kinds == {"loop", "one-shot", "piece", "sfx"}
    assert {e["source"] for e in entries} >= {"hedgewars-data", "sa3 (procedural sound design)"}
    records = json.loads((corpus / "licences.json").read_text())
    assert {r["package"]: r["licence"] for r in records} == licences
    assert "GFDL-1.3" in (corpus / "licences.md").read_text()


def test_manifest_reads_with_the_training_loader(corpus):
    from training.data import read_manifest

    entries = read_manifest(corpus / "manifest.jsonl")
    assert len(entries) == ITEMS and all(Path(e.path).is_file() for e in entries)


def test_hours_builds_the_shortest_prefix_reaching_the_target(tmp_path):
    target = 0.004 * 3600  # 14.4 s of audio
    result = build(tmp_path / "h", "--seed", "3", "--hours", "0.004", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    entries = manifest(tmp_path / "h")
    total = sum(e["seconds"] for e in entries)
    assert total >= target > total - entries[-1]["seconds"]
    # items that busy workers rendered past the target are removed again
    assert len(list((tmp_path / "h" / "audio").rglob("*.flac"))) == len(entries)


def test_files_decode_at_44k1_stereo_with_the_stated_length(corpus):
    for entry in manifest(corpus):
        info = sf.info(str(corpus / entry["path"]))
        assert (info.samplerate, info.channels, info.format) == (44100, 2, "FLAC")
        assert info.frames == entry["samples"] > 0
        assert entry["seconds"] == pytest.approx(entry["samples"] / 44100, abs=1e-6)
        assert entry["seconds"] <= MAX_SECONDS


def test_loops_are_exactly_their_bars_long(corpus):
    loops = [e for e in manifest(corpus) if e["tags"]["kind"] == "loop"]
    assert len(loops) >= 4
    for entry in loops:
        tags = entry["tags"]
        assert entry["samples"] == bars_to_samples(tags["bars"], tags["bpm"], tags["meter"]), tags


def test_one_shots_and_effects_end_in_silence(corpus):
    for entry in manifest(corpus):
        if entry["tags"]["kind"] not in ("one-shot", "sfx", "piece"):
            continue
        audio, _ = sf.read(str(corpus / entry["path"]), dtype="float32")
        tail = audio[-seconds_to_samples(0.04) :]
        assert np.abs(tail).max() < 1e-4, entry["path"]
        assert np.abs(audio).max() > 0.1  # and there is a sound before the silence
        if entry["tags"]["kind"] == "one-shot":
            assert entry["seconds"] <= 2.0


def test_captions_state_key_and_tempo_when_tagged(corpus):
    checked = 0
    for entry in manifest(corpus):
        tags, text = entry["tags"], entry["caption"]
        if "key" in tags:
            assert f"{tags['key']} {tags['mode']}" in text, (text, tags)
            checked += 1
        if "bpm" in tags:
            assert f"{tags['bpm']:g}" in text, (text, tags)
    assert checked >= 4


def test_same_seed_same_corpus_and_other_seed_differs(corpus, tmp_path):
    again = tmp_path / "again"
    result = build(again, "--seed", str(SEED), "--items", str(ITEMS), "--jobs", "1")
    assert result.returncode == 0, result.stderr
    assert (again / "manifest.jsonl").read_bytes() == (corpus / "manifest.jsonl").read_bytes()
    for entry in manifest(corpus):  # worker count does not change a single sample
        assert (again / entry["path"]).read_bytes() == (corpus / entry["path"]).read_bytes()
    other = tmp_path / "other"
    assert run_in_process(other, "--seed", str(SEED + 1), "--items", "3")[0] == 0
    first = [e["caption"] for e in manifest(corpus)[:3]]
    assert [e["caption"] for e in manifest(other)] != first


def run_in_process(out: Path, *extra: str) -> tuple[int, str, str]:
    """The same CLI in this process (cheaper than a subprocess for checks that render little)."""
    out_text, err_text = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
        code = main(
            ["data", "build", "-o", str(out), "--max-seconds", str(MAX_SECONDS), "--quiet", "--jobs", "1", *extra]
        )
    return code, out_text.getvalue(), err_text.getvalue()


def test_rebuild_resumes_and_refuses_foreign_folders(corpus, tmp_path):
    before = (corpus / "manifest.jsonl").read_bytes()
    code, out, _ = run_in_process(corpus, "--seed", str(SEED), "--items", str(ITEMS))
    assert code == 0 and "(0 rendered now)" in out
    assert (corpus / "manifest.jsonl").read_bytes() == before
    code, _, err = run_in_process(corpus, "--seed", str(SEED + 1), "--items", "2")
    assert code == 2 and "--overwrite" in err and len(err.splitlines()) == 1
    (tmp_path / "notes.txt").write_text("someone else's")
    code, _, err = run_in_process(tmp_path, "--items", "1")
    assert code == 2 and "not empty" in err


def test_missing_soundfont_names_the_install_script(monkeypatch):
    monkeypatch.setitem(sources.SOUNDFONTS, "FluidR3_GM", (Path("/nonexistent/FluidR3_GM.sf2"), sources.FLUID))
    with pytest.raises(Sa3Error, match="scripts/install-corpus-deps"):
        sources.check_installed()


def test_chord_loop_audio_follows_its_key_label(corpus):
    """The rendered chroma follows the tagged chords, and peaks on the tonic triad."""
    loops = [e for e in manifest(corpus) if e["tags"].get("flavour") == "chords"]
    assert loops
    for entry in loops:
        tags = entry["tags"]
        audio, _ = sf.read(str(corpus / entry["path"]), dtype="float64")
        energy = chroma(audio)
        # Expected pitch classes from the chord names; the audio must match them best
        # untransposed (a wrong key label or a transposing render would shift the best fit).
        profile = np.zeros(12)
        for name in tags["chords"]:
            root = name[:2] if name[:2] in NOTE_NAMES else name[:1]
            for step in CHORD_INTERVALS[name[len(root) :]]:
                profile[(NOTE_NAMES.index(root) + step) % 12] += 1
        fits = [np.corrcoef(np.roll(profile, shift), energy)[0, 1] for shift in range(12)]
        assert int(np.argmax(fits)) == 0, (tags, fits)
        tonic, steps = NOTE_NAMES.index(tags["key"]), MODES[tags["mode"]]
        triad = {tonic, (tonic + steps[2]) % 12, (tonic + steps[4]) % 12}
        assert int(np.argmax(energy)) in triad, (tags, energy.round(2))
        scores = [energy[[r % 12, (r + steps[2]) % 12, (r + steps[4]) % 12]].sum() for r in range(12)]
        assert int(np.argmax(scores)) == tonic, (tags, energy.round(2))
