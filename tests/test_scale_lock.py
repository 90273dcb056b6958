"""The scale lock (sa3core.scale_lock): offsets per semitone channel, the velocity it hands the
sampler, and how the pipeline and model folders switch it on and refuse it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from sa3core import scale_lock
from sa3core.errors import Sa3Error
from sa3core.families.sa3 import ModelSettings
from sa3core.models.dit import DiT, DiTConfig
from sa3core.models.same import PITCH_LOW_NOTE, SAME, SAMEConfig
from sa3core.musical import MusicAttributes, parse_prompt
from sa3core.pipeline import Pipeline
from sa3core.scale_lock import RAW_PER_DB, TONIC_SHARE, SemitoneLayout
from sa3core.text import TEXT_ENCODERS

SMALL_SAME = SAMEConfig(width=32, heads=2, encoder_layers=1, decoder_layers=1, mlp_hidden=64, chunk_frames=0)
SMALL_DIT = DiTConfig(width=64, depth=2, heads=2, mlp_dim=128, memory_tokens=8, fourier_dim=32)


def _layout(channels: int = 24, std: float = 0.5) -> SemitoneLayout:
    return SemitoneLayout(PITCH_LOW_NOTE, (0.0,) * channels, (std,) * channels)


def test_offsets_cut_notes_outside_the_scale_and_raise_the_tonic():
    """D minor from A1: every channel whose pitch class is outside D E F G A Bb C goes down by the
    cut, every D up by TONIC_SHARE of it, the rest stay; in normalised units (raw / std)."""
    offsets = scale_lock.scale_offsets(_layout(std=0.5), parse_prompt("dark pad in D minor"), 12.0)
    d_minor = {2, 4, 5, 7, 9, 10, 0}
    for channel, value in enumerate(offsets.tolist()):
        pitch_class = (PITCH_LOW_NOTE + channel) % 12
        if pitch_class not in d_minor:
            want = -12.0 * RAW_PER_DB / 0.5
        elif pitch_class == 2:
            want = TONIC_SHARE * 12.0 * RAW_PER_DB / 0.5
        else:
            want = 0.0
        assert value == pytest.approx(want, rel=1e-6), channel
    # 12 dB of power is 0.125 * ln(10 ** 1.2) in the channels' units
    assert 12.0 * RAW_PER_DB == pytest.approx(0.125 * np.log(10**1.2))


@pytest.mark.parametrize(
    "music",
    [MusicAttributes(), parse_prompt("kick drum, 120 bpm"), parse_prompt("piano note C4"), parse_prompt("in D minor")],
)
def test_nothing_to_lock_without_a_scale_or_a_cut(music):
    cut = 0.0 if music.mode else 12.0
    assert scale_lock.scale_offsets(_layout(), music, cut) is None


def test_locked_velocity_moves_the_clean_estimate_by_the_offsets():
    torch.manual_seed(0)
    x, v = torch.randn(2, 256, 5), torch.randn(2, 256, 5)
    t = torch.tensor([0.7, 0.2])
    offsets = torch.linspace(-1.0, 0.5, 24)
    locked = scale_lock.lock_velocity(v, x, t, offsets)
    tb = t[:, None, None]
    moved = (x - tb * locked) - (x - tb * v)
    torch.testing.assert_close(moved[:, -24:], offsets[None, :, None].expand(2, 24, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(moved[:, :-24], torch.zeros(2, 232, 5), atol=1e-6, rtol=0)
    assert torch.equal(scale_lock.lock_velocity(v, x, torch.zeros(2), offsets), v)  # t = 0: nothing left to move
    where = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]).expand(2, 1, 5)  # inpainting keeps frames 2 and 3
    partly = scale_lock.lock_velocity(v, x, t, offsets, where)
    torch.testing.assert_close(partly[..., [0, 1, 4]], locked[..., [0, 1, 4]])
    assert torch.equal(partly[..., 2:4], v[..., 2:4])


def test_layout_reads_the_autoencoders_normaliser():
    model = SAME(dataclasses.replace(SMALL_SAME, pitch_channels=60))
    model.latent_norm.mean.copy_(torch.linspace(-1, 1, 256))
    model.latent_norm.var.copy_(torch.linspace(0.5, 2, 256))
    layout = scale_lock.layout_of(model)
    assert layout.low_note == PITCH_LOW_NOTE and layout.channels == 60
    np.testing.assert_allclose(layout.mean, model.latent_norm.mean[-60:].numpy(), rtol=1e-6)
    np.testing.assert_allclose(layout.std, np.sqrt(model.latent_norm.var[-60:].numpy() + 1e-5), rtol=1e-6)
    assert scale_lock.layout_of(SAME(SMALL_SAME)) is None
    assert SemitoneLayout.from_dict(layout.to_dict()) == layout and SemitoneLayout.from_dict({}) is None
    with pytest.raises(Sa3Error, match="export the model again"):
        SemitoneLayout.from_dict({"low_note": 33, "mean": [0.0]})


def _pipeline(pitch_channels: int, scale_lock_db: float = 0.0) -> Pipeline:
    torch.manual_seed(0)
    same = SAME(dataclasses.replace(SMALL_SAME, pitch_channels=pitch_channels))
    dit = DiT(dataclasses.replace(SMALL_DIT, text_dim=TEXT_ENCODERS.get("hash")().dim))
    settings = ModelSettings(text_encoder="hash", sampler="euler", steps=3, scale_lock_db=scale_lock_db)
    return Pipeline.from_parts(same, dit, settings, bf16=False)


def _semitone_channels(pipeline: Pipeline, prompt: str, scale_lock_db: float | None) -> torch.Tensor:
    """The sampled latents' semitone channels, raw (as the encoder measures them)."""
    # the plan of an edit: no tail or tempo grid, only the family's music rows and scale lock
    plan = pipeline._plan("inpaint", prompt, 4 * 4096, None, None, {"scale_lock_db": scale_lock_db})
    latents = pipeline._sample(plan, prompt, 4, torch.zeros(1, 256, 4), torch.zeros(1, 1, 4), None, None, 0, 1, None)
    return pipeline.backend.autoencoder.latent_norm.inverse(latents)[:, -60:]


def test_the_pipeline_locks_a_named_key_and_nothing_else():
    """With the model's 12 dB, every Euler step moves toward a clean estimate whose notes outside
    A minor are 12 dB lower, and the last one lands on it: the sampled semitone channels end up at
    least that much lower there than unlocked, while the notes of the scale (tonic aside) move
    by the DiT's answer to the changed input only."""
    pipeline = _pipeline(60, scale_lock_db=12.0)
    free = _semitone_channels(pipeline, "pad in A minor", 0.0)
    locked = _semitone_channels(pipeline, "pad in A minor", None)
    assert not torch.equal(free, locked)
    outside = torch.tensor([(PITCH_LOW_NOTE + c) % 12 not in {9, 11, 0, 2, 4, 5, 7} for c in range(60)])
    in_scale = torch.tensor([(PITCH_LOW_NOTE + c) % 12 in {11, 0, 2, 4, 5, 7} for c in range(60)])
    change = locked - free
    assert change[:, outside].mean() < -12.0 * RAW_PER_DB
    assert change[:, in_scale].abs().mean() < 0.5 * 12.0 * RAW_PER_DB, change[:, in_scale].abs().mean()
    # a prompt without a key is generated as if the lock were off
    torch.testing.assert_close(
        _semitone_channels(pipeline, "kick drum", None), _semitone_channels(pipeline, "kick drum", 0.0)
    )


def test_model_folders_and_requests_that_cannot_lock_are_refused(tmp_path):
    with pytest.raises(Sa3Error, match="no semitone channels"):
        _pipeline(0, scale_lock_db=12.0)
    plain = _pipeline(0)
    with pytest.raises(Sa3Error, match="cannot lock notes"):
        plain.generate("pad in D minor", 8192, scale_lock_db=6.0)
    assert plain.generate("kick drum", 8192, scale_lock_db=6.0).shape == (1, 2, 8192)  # no key: nothing to lock
    with pytest.raises(Sa3Error, match="0 dB"):
        _pipeline(60).generate("pad in D minor", 8192, scale_lock_db=-1.0)
    folder = _pipeline(60).save(tmp_path / "model")
    settings = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**settings, "scale_lock_db": -2}))
    with pytest.raises(Sa3Error, match="scale_lock_db"):
        Pipeline.load(folder)
