"""The shipped default model: present and small, used without --model, and it follows its prompt.

These run the real weights in sa3core/assets/default (the ones `sa3 generate` uses out of the
box), on the torch backend in float32 so the numbers do not depend on the CPU's bf16 support.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from sa3.eval import music
from sa3core import timebase
from sa3core.errors import Sa3Error
from sa3core.pipeline import DEFAULT_MODEL_DIR, Pipeline

from .conftest import run_sa3


@pytest.fixture(scope="module")
def default_pipeline():
    return Pipeline.load(None, bf16=False)


def test_weights_are_safetensors_and_small():
    files = sorted(DEFAULT_MODEL_DIR.glob("*.safetensors"))
    assert [f.name for f in files] == ["dit.safetensors", "same.safetensors"]
    assert sum(f.stat().st_size for f in files) < 100 * 2**20  # the repo's budget for shipped weights
    settings = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    # the shipped DiT is the flow teacher (the distilled student regressed, see the card): its own
    # sampler, few enough steps for 4 bars in under 5 s, guidance 3 rescaled to the corpus level
    assert (settings["sampler"], settings["steps"], settings["cfg"]) == ("dpmpp", 15, 3.0)


def test_model_card_carries_recipe_and_the_measured_metrics():
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    for heading in ("## Recipe", "## Training time", "## Data", "## Metrics"):
        assert heading in card, heading
    report = json.loads((DEFAULT_MODEL_DIR / "eval.json").read_text())
    adherence = report["sections"]["adherence"]["summary"]
    # the card quotes the report's numbers, not other ones
    for measure in ("key", "tempo"):
        value = adherence[measure]
        assert f"{100 * value['rate']:.0f} % ({value['count']}/{value['judged']})" in card, measure


def test_missing_default_is_one_clear_error(monkeypatch, tmp_path):
    import sa3core.pipeline

    monkeypatch.setattr(sa3core.pipeline, "DEFAULT_MODEL_DIR", tmp_path / "gone")
    with pytest.raises(Sa3Error, match="default model is missing.*--model"):
        Pipeline.load(None)


def test_generate_without_model_uses_the_default(tmp_path):
    out = tmp_path / "loop.wav"
    result = run_sa3("generate", "punchy house drum loop", "--bars", "4", "--bpm", "120", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    audio, rate = sf.read(str(out), always_2d=True)
    assert (audio.shape, rate) == ((352_800, 2), 44_100)
    assert np.isfinite(audio).all() and 1e-3 < np.sqrt(np.mean(audio**2)) and np.abs(audio).max() <= 1.0


def _drums_and_pads(pipeline) -> list[tuple[np.ndarray, np.ndarray]]:
    samples = timebase.seconds_to_samples(4.0)
    return [
        (
            pipeline.generate("punchy house drum loop, 120 bpm", samples, seed=seed)[0],
            pipeline.generate("soft string pad chords in C major, slow", samples, seed=seed)[0],
        )
        for seed in range(3)
    ]


def test_output_depends_on_the_prompt(default_pipeline):
    """The same seed and length with two prompts must give clearly different audio (a decoder that
    ignores its latents, or a DiT that ignores its text, gives nearly the same audio)."""
    for drums, pad in _drums_and_pads(default_pipeline):
        level = np.sqrt(np.mean(drums**2) + np.mean(pad**2))
        assert np.sqrt(np.mean((drums - pad) ** 2)) > 0.5 * level


@pytest.mark.slow  # the shipped model's musical checks: about a minute together; .ci/run runs them
def test_drums_come_out_spikier_than_a_pad(default_pipeline):
    """Drums are percussive: over seeds 0-2, the median onset-envelope spread of a drum loop must
    exceed a pad's by 25 % (single seeds go either way: a pad that ends early in silence has a
    spiky envelope too). Two defaults ago: drums 1.47, pad 0.98; the last one (guidance 2) failed
    with drums 1.87, pad 2.21."""
    spread = {"drums": [], "pad": []}
    for drums, pad in _drums_and_pads(default_pipeline):
        spread["drums"].append(music.onset_strength(drums).std())
        spread["pad"].append(music.onset_strength(pad).std())
    assert np.median(spread["drums"]) > 1.25 * np.median(spread["pad"])


@pytest.mark.slow
def test_drum_loops_keep_the_asked_tempo(default_pipeline):
    """4-bar drum loops at 95 and 120 bpm, seeds 0-2: the tempo estimator must find the asked
    tempo within 4 % in at least 5 of the 6 takes (measured: 6/6; the previous default's takes
    read 646/k bpm, the latent frame rate's subharmonics)."""
    hits = []
    for prompt, bpm in (("punchy house drum loop, 120 bpm", 120.0), ("funky drum groove at 95 bpm", 95.0)):
        samples = timebase.bars_to_samples(4, bpm, "4/4")
        for seed in range(3):
            found = music.estimate_tempo(default_pipeline.generate(prompt, samples, seed=seed)[0])
            hits.append((bpm, seed, found, music.tempo_correct(found, bpm)))
    assert sum(hit for *_, hit in hits) >= 5, hits


def _in_scale_share(audio: np.ndarray, tonic: int, intervals) -> float:
    chroma = music.chroma_profile(audio)
    scale = [(tonic + step) % 12 for step in intervals]
    return float(chroma[scale].sum() / chroma.sum())


@pytest.mark.slow
def test_scale_lock_puts_the_notes_in_the_named_key(default_pipeline):
    """The shipped model locks notes to a key the prompt names (model.json scale_lock_db): over
    three keyed prompts and two seeds, the chroma of locked takes puts more of its weight on the
    scale's notes than the same takes unlocked, in at least 5 of the 6, and by 0.1 on average
    (measured: 0.90-0.94 locked against 0.64-0.75 free)."""
    from sa3core.musical import SCALES

    prompts = (
        ("warm Rhodes chord loop in A minor, 90 bpm", 9, "minor"),
        ("bright piano chord loop in E major, 120 bpm", 4, "major"),
        ("soft pad and bass loop in F minor, 100 bpm", 5, "minor"),
    )
    samples = timebase.seconds_to_samples(4.0)
    shares = {"locked": [], "free": []}
    for prompt, tonic, mode in prompts:
        for seed in range(2):
            for name, cut in (("locked", None), ("free", 0.0)):
                audio = default_pipeline.generate(prompt, samples, seed=seed, scale_lock_db=cut)[0]
                shares[name].append(_in_scale_share(audio, tonic, SCALES[mode]))
    better = sum(locked > free for locked, free in zip(shares["locked"], shares["free"]))
    assert better >= 5, shares
    assert np.mean(shares["locked"]) > np.mean(shares["free"]) + 0.1, shares


@pytest.mark.slow
def test_one_shots_end_in_the_held_silent_tail(default_pipeline):
    """Prompts that read as one-shots get model.json's one_shot_tail_seconds (0.1 s) held at
    silence: the take ends in digital silence after the splice's fade instead of being cut at its
    last sample. Over four one-shot prompts and two seeds the same takes made without the tail
    still sound in their last frame; with it, the 50 ms before the silence sit a median 30 dB or
    more under the take's loudest 50 ms and no louder than without it (measured: -40 against -30
    dB; with 0.2 s on the corpus's `valid` one-shots the decay is clearer, -53 against -19 dB)."""
    from sa3core.families.sa3 import tail_frames

    tail = default_pipeline.settings.one_shot_tail_seconds
    assert tail == 0.1
    samples = timebase.seconds_to_samples(1.2)
    boundary = (timebase.samples_to_frames(samples) - tail_frames(tail, samples)) * timebase.SAMPLES_PER_FRAME
    window = timebase.seconds_to_samples(0.05)

    def db(x):
        return 10 * np.log10(max(float(np.mean(x.astype(np.float64) ** 2)), 1e-20))

    def before_tail(audio):
        loudest = max(db(audio[:, i : i + window]) for i in range(0, samples - window, window // 2))
        return db(audio[:, boundary - window : boundary]) - loudest

    levels = {"held": [], "free": []}
    prompts = (
        "Rhodes electric piano single note, C#5",
        "Bb minor chord stab on organ",
        "Kick hit, dry",
        "Crash cymbal hit",
    )
    for prompt in prompts:
        for seed in range(2):
            held = default_pipeline.generate(prompt, samples, seed=seed)[0]
            free = default_pipeline.generate(prompt, samples, seed=seed, tail_seconds=0)[0]
            assert not np.any(held[:, boundary:]) and np.any(free[:, boundary:])
            levels["held"].append(before_tail(held))
            levels["free"].append(before_tail(free))
    assert np.median(levels["held"]) < -30 and np.median(levels["held"]) <= np.median(levels["free"]), levels
