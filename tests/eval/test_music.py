"""Key, tempo and meter estimators on synthesized signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sa3.eval import music
from sa3.eval.music import Key

from .signals import drum_pattern, progression


@pytest.mark.parametrize(("tonic", "minor"), [(0, False), (3, False), (9, True), (6, True), (7, False), (2, True)])
def test_key_of_cadence_progression(tonic, minor):
    expected = Key(tonic, "minor" if minor else "major")
    assert music.estimate_key(progression(tonic, minor)) == expected


def test_key_of_silence_is_none():
    assert music.estimate_key(np.zeros((2, 44_100), dtype=np.float32)) is None


def test_key_parse_names_and_modes():
    assert Key.parse("Bb", "major") == Key(10, "major")
    assert Key.parse("f#", "harmonic minor") == Key(6, "minor")
    assert Key.parse("Db", "Minor") == Key(1, "minor")
    assert Key.parse("D", "dorian") is None  # modal: the major/minor estimator cannot judge it
    assert Key.parse("H", "major") is None
    assert str(Key(3, "major")) == "Eb major"


def test_key_close_relations():
    a_minor = Key(9, "minor")
    assert music.key_close(Key(0, "major"), a_minor)  # relative major
    assert music.key_close(Key(4, "minor"), a_minor)  # a fifth up
    assert music.key_close(Key(2, "minor"), a_minor)  # a fifth down
    assert not music.key_close(Key(9, "major"), a_minor)  # parallel major is not close
    assert not music.key_close(Key(1, "minor"), a_minor)
    assert music.key_close(Key(9, "minor"), Key(0, "major"))
    assert not music.key_close(None, a_minor)


@pytest.mark.parametrize("bpm", [90.0, 120.0, 150.0])
def test_tempo_of_drum_pattern_within_4_percent(bpm):
    estimate = music.estimate_tempo(drum_pattern(bpm))
    assert estimate is not None and abs(estimate - bpm) <= 0.04 * bpm
    assert music.tempo_correct(estimate, bpm)


def test_tempo_of_silence_is_none():
    assert music.estimate_tempo(np.zeros((2, 44_100 * 3), dtype=np.float32)) is None


def test_tempo_correct_counts_octave_errors_only_when_asked():
    assert not music.tempo_correct(60.0, 120.0)
    assert music.tempo_correct(60.0, 120.0, octave_errors=True)
    assert music.tempo_correct(243.0, 120.0, octave_errors=True)
    assert not music.tempo_correct(80.0, 120.0, octave_errors=True)
    assert not music.tempo_correct(None, 120.0, octave_errors=True)


@pytest.mark.parametrize(("bpm", "beats"), [(120.0, 3), (120.0, 4), (90.0, 3), (150.0, 4)])
def test_meter_of_accented_patterns(bpm, beats):
    audio = drum_pattern(bpm, beats_per_bar=beats)
    assert music.estimate_meter(audio) == beats
    assert music.estimate_meter(audio, bpm=bpm) == beats


def test_meter_needs_several_bars():
    assert music.estimate_meter(drum_pattern(120.0, 4, bars=2), bpm=120.0) is None


def test_fitted_profiles_follow_the_labelled_modes(tmp_path):
    """fit_key_profiles on a small labelled corpus of cadences: in the tonic-aligned mean chroma
    the tonic and then the fifth are strongest, the major third outweighs the minor third in
    major and the other way round in minor, and the fitted profiles read those clips' keys."""
    import json

    from sa3core.audio import save_audio

    rows = []
    names = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
    for index, (tonic, minor) in enumerate([(0, False), (5, False), (10, False), (9, True), (2, True), (7, True)]):
        path = f"clip{index}.wav"
        save_audio(tmp_path / path, progression(tonic, minor))
        tags = {"kind": "loop", "key": names[tonic], "mode": "minor" if minor else "major"}
        rows.append({"path": path, "split": "train", "tags": tags})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fitted = music.fit_key_profiles(str(tmp_path))
    for mode, third, other in (("major", 4, 3), ("minor", 3, 4)):
        assert list(np.argsort(fitted[mode])[-2:]) == [7, 0]
        assert fitted[mode][third] > 3 * fitted[mode][other]
    for path, key in music.labelled_keys(str(tmp_path), "train"):
        from sa3core.audio import load_audio

        assert music.estimate_key(load_audio(path), fitted) == key
