"""Musical attributes: prompt parsing, the DiT's music rows, and how the DiT and pipeline use them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sa3core import timebase
from sa3core.errors import Sa3Error
from sa3core.families.sa3 import request_music
from sa3core.models.dit import DiT, DiTConfig, beat_features
from sa3core.musical import MUSIC_DIM, SCALES, MusicAttributes, from_tags, music_rows, parse_prompt
from training.corpus import captions
from training.corpus.theory import MODES


@pytest.mark.parametrize(
    ("prompt", "bpm", "tonic", "mode", "quarters"),
    [
        ("warm Rhodes chords in D minor, 92 bpm, laid-back", 92.0, 2, "minor", None),
        ("Rock loop, in F# dorian, at 148 bpm", 148.0, 6, "dorian", None),
        ("chords key of C# harmonic minor 153 BPM, in 6/8", 153.0, 1, "harmonic minor", 3.0),
        ("Analog synth bass loop F major key, tempo 115", 115.0, 5, "major", None),
        ("Eb minor pad, 70 beats per minute, 3/4 time", 70.0, 3, "minor", 3.0),
        ("Jazz waltz drum pattern at 156 bpm", 156.0, None, None, 3.0),
        ("Stab of celesta playing D4", None, 2, None, None),
        ("Bb2 bass one-shot", None, 10, None, None),
        ("A bright piano melody, 4/4", None, None, None, 4.0),  # "A" as an article is no key
        ("dusty breakbeat", None, None, None, None),
        ("riser, 5 bars", None, None, None, None),
    ],
)
def test_parse_prompt_reads_producer_wordings(prompt, bpm, tonic, mode, quarters):
    assert parse_prompt(prompt) == MusicAttributes(bpm=bpm, tonic=tonic, mode=mode, quarters_per_bar=quarters)


def test_the_parser_recovers_the_tags_from_corpus_captions():
    """Training uses the tags, generation parses the prompt: on every caption wording the corpus
    builder writes, the two must agree, or the model would be conditioned differently at inference."""
    rng = np.random.default_rng(0)
    names = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
    checked = 0
    for _ in range(600):
        tags = {
            "kind": str(rng.choice(["loop", "piece"])),
            "flavour": str(rng.choice(["drums", "chords", "bass", "melody", "ensemble"])),
            "bpm": float(rng.integers(60, 181)),
            "meter": str(rng.choice(["4/4", "3/4", "6/8"])),
            "bars": int(rng.choice([1, 2, 4, 8])),
            "moods": ["warm", "punchy"],
            "_synonyms": [["piano", "grand piano"]],
        }
        if tags["flavour"] != "drums":
            tags.update(key=str(rng.choice(names)), mode=str(rng.choice(sorted(MODES))))
        text = captions.caption(tags, rng)
        parsed, want = parse_prompt(text), from_tags(tags)
        assert (parsed.bpm, parsed.tonic, parsed.mode) == (want.bpm, want.tonic, want.mode), text
        if parsed.quarters_per_bar is not None:  # captions name the meter only sometimes
            assert parsed.quarters_per_bar == want.quarters_per_bar, text
        checked += 1
    assert checked == 600


def test_rows_hold_tonic_scale_and_beat():
    row = MusicAttributes(bpm=120.0, tonic=2, mode="dorian", quarters_per_bar=4.0).row(start_frame=10)
    assert row.shape == (MUSIC_DIM,)
    assert row[:12].nonzero().flatten().tolist() == [2]
    # D dorian has the notes of C major
    c_major = sorted(SCALES["major"])
    assert row[12:24].nonzero().flatten().tolist() == c_major
    per_frame = 2.0 * timebase.SAMPLES_PER_FRAME / timebase.SAMPLE_RATE  # 120 bpm = 2 beats a second
    assert row[24].item() == pytest.approx(per_frame)
    assert row[25].item() == pytest.approx(10 * per_frame)
    assert row[26].item() == 4.0
    assert torch.equal(MusicAttributes().row(), torch.zeros(MUSIC_DIM))
    note = MusicAttributes(tonic=9).row()  # a note: tonic, no scale
    assert note[:12].nonzero().flatten().tolist() == [9] and not note[12:].any()


def test_a_crops_beat_position_matches_the_uncropped_clip():
    """Frame f of a crop starting at frame s must get the beat phases of frame s + f of the clip."""
    attributes = MusicAttributes(bpm=97.0, quarters_per_bar=3.0)
    whole = beat_features(music_rows([attributes]), 80)[0]
    for start in (0, 7, 33, 61):
        crop = beat_features(music_rows([attributes], [float(start)]), 80 - start)[0]
        torch.testing.assert_close(crop, whole[start:], atol=2e-4, rtol=0)


def test_beat_features_repeat_every_beat_and_vanish_without_tempo():
    bpm = 60.0 * timebase.SAMPLE_RATE / timebase.SAMPLES_PER_FRAME / 4  # exactly 4 frames a beat
    features = beat_features(music_rows([MusicAttributes(bpm=bpm, quarters_per_bar=4.0)]), 64)[0]
    torch.testing.assert_close(features[:-16, :], features[16:, :], atol=1e-4, rtol=0)  # one bar = 16 frames
    assert not torch.allclose(features[0, :2], features[2, :2])  # half a beat later, another beat phase
    assert not beat_features(music_rows([MusicAttributes(tonic=3, mode="major")]), 16).any()


SMALL = DiTConfig(width=64, depth=2, heads=2, mlp_dim=128, text_dim=16, memory_tokens=4, fourier_dim=16, music=True)


def _run(model, music, frames=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 256, frames, generator=gen)
    text = torch.randn(1, 3, 16, generator=gen)
    cond = model.encode_condition(text, torch.ones(1, 3, dtype=torch.bool), torch.tensor([3.0]), music)
    return model(x, torch.tensor([0.7]), cond)


def test_the_dit_follows_tempo_and_key_and_treats_no_music_as_unknown():
    torch.manual_seed(0)
    model = DiT(SMALL).eval()
    d_minor = music_rows([MusicAttributes(bpm=120.0, tonic=2, mode="minor")])
    with torch.no_grad():
        base = _run(model, d_minor)
        faster = _run(model, music_rows([MusicAttributes(bpm=140.0, tonic=2, mode="minor")]))
        other_key = _run(model, music_rows([MusicAttributes(bpm=120.0, tonic=7, mode="major")]))
        unknown, none = _run(model, torch.zeros(1, MUSIC_DIM)), _run(model, None)
    assert (base - faster).abs().mean() > 1e-3
    assert (base - other_key).abs().mean() > 1e-3
    torch.testing.assert_close(unknown, none)


def test_music_rows_do_not_break_padding_invariance():
    torch.manual_seed(0)
    model = DiT(SMALL).eval()
    rows = music_rows([MusicAttributes(bpm=100.0, tonic=0, mode="major", quarters_per_bar=4.0), MusicAttributes()])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 256, 10, generator=gen)
    text = torch.randn(2, 3, 16, generator=gen)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        cond = model.encode_condition(text, mask, torch.tensor([1.0, 1.0]), rows)
        frame_mask = torch.ones(2, 10, dtype=torch.bool)
        frame_mask[1, 6:] = False
        together = model(x, torch.tensor([0.5, 0.5]), cond, frame_mask=frame_mask)
        alone = model(
            x[1:, :, :6],
            torch.tensor([0.5]),
            model.encode_condition(text[1:], mask[1:], torch.tensor([1.0]), rows[1:]),
        )
    torch.testing.assert_close(together[1:, :, :6], alone, atol=1e-5, rtol=1e-4)


def test_a_dit_without_music_ignores_the_rows():
    torch.manual_seed(0)
    model = DiT(dataclasses.replace(SMALL, music=False)).eval()
    with torch.no_grad():
        a = _run(model, music_rows([MusicAttributes(bpm=120.0, tonic=2, mode="minor")]))
        b = _run(model, None)
    torch.testing.assert_close(a, b)


def test_the_request_wins_over_the_prompt():
    music = request_music("dusty loop in D minor at 92 bpm", bpm=120.0, meter="6/8")
    assert music == MusicAttributes(bpm=120.0, tonic=2, mode="minor", quarters_per_bar=3.0)
    assert request_music("dusty loop at 92 bpm", None, None).bpm == 92.0
    with pytest.raises(Sa3Error, match="bpm"):
        request_music("loop", bpm=5000.0, meter=None)


@pytest.mark.parametrize(
    ("prompt", "one_shot"),
    [
        ("kick hit, dry", True),
        ("Single Rhodes chord stab, G minor", True),
        ("Open hat one-shot", True),
        ("One shot of analog brass playing D4", True),
        ("Trumpet note sample, C4", True),
        ("punchy house drum loop, 124 bpm", False),
        ("boom bap groove with rim hits", False),
        ("4 bars of piano chords", False),
        ("warm evolving pad", False),
        ("hitchhiker's drone", False),
    ],
)
def test_reads_as_one_shot(prompt, one_shot):
    from sa3core.musical import reads_as_one_shot

    assert reads_as_one_shot(prompt) is one_shot
