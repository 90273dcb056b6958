import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sa3core import config as cfg
from sa3core.checkpoint import load_model
from sa3core.errors import Sa3Error
from sa3core.losses import MultiResolutionSTFTLoss
from training.autoencoder import AutoencoderConfig, AutoencoderTrainer, check_config, load_config
from training.synthetic import render_batch, render_clip


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL_MODEL = {"width": 64, "heads": 2, "encoder_layers": 2, "decoder_layers": 2, "mlp_hidden": 128}


def _config(**loop) -> AutoencoderConfig:
    data = {
        "preset": "tiny",
        "model": SMALL_MODEL,
        "data": {"segment_frames": 4},
        "eval_items": 1,
        "loss": {"stft": 1.0, "phase": 0.1, "chroma": 0.1, "ild": 0.1},
        "loop": {"batch_size": 1, "lr": 2e-3, "warmup_steps": 2, "ema_decay": 0.0, "progress": False, **loop},
    }
    return cfg.from_dict(AutoencoderConfig, data)


def test_synthetic_audio_is_deterministic_and_varied():
    first = render_batch(3, 20_000, torch.Generator().manual_seed(7))
    again = render_batch(3, 20_000, torch.Generator().manual_seed(7))
    other = render_batch(3, 20_000, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (3, 2, 20_000) and first.abs().max() <= 0.9 + 1e-6
    assert not torch.allclose(first[:, 0], first[:, 1])  # panned, so left differs from right


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("loop:\n  stepz: 3\n")
    with pytest.raises(Sa3Error, match="stepz"):
        load_config(str(path))
    with pytest.raises(Sa3Error, match="widht"):
        cfg.from_dict(AutoencoderConfig, {"model": {"widht": 3}}).same_config()


def test_overfits_one_clip(tmp_path):
    """On one 0.37 s procedural clip, 80 steps cut the K-weighted MR-STFT reconstruction error:
    its log-magnitude part by at least 2x and its spectral convergence by at least 1.15x
    (measured with the spectral head: 2.33x and 1.23x; 160 steps: 2.68x and 1.35x). Convergence,
    a linear-magnitude ratio, falls slower since the head's phases start free and overlapping
    frames interfere until they agree (the raw-patch decoder measured 1.8x and 2.0x)."""
    torch.manual_seed(0)
    clip = render_clip(4 * 4096, torch.Generator().manual_seed(3))
    folder = tmp_path / "data"
    folder.mkdir()
    sf.write(folder / "clip.wav", clip.numpy().T, 44_100, subtype="FLOAT")
    config = _config(steps=80, checkpoint_every=1000, lr=3e-3)
    config.data.source = str(folder)
    trainer = AutoencoderTrainer(config, tmp_path / "run")
    error = MultiResolutionSTFTLoss()
    before = [float(v) for v in error.parts(trainer.reconstruct(clip[None]), clip[None])]
    trainer.fit()
    after = [float(v) for v in error.parts(trainer.reconstruct(clip[None]), clip[None])]
    assert after[0] < before[0] / 1.15 and after[1] < before[1] / 2.0, (before, after)
    # the exported weights load as a "same" model that reproduces the trained one exactly
    model, extra = load_model(tmp_path / "run" / "same.safetensors", expect_kind="same")
    assert extra["step"] == 80
    assert torch.equal(model.decode(model.encode(clip[None]))[..., : clip.shape[-1]], trainer.reconstruct(clip[None]))


def test_resume_reproduces_the_loss_curve(tmp_path):
    config = _config(steps=6, checkpoint_every=3, grad_accum=2, ema_decay=0.9)
    straight = AutoencoderTrainer(config, tmp_path / "a").fit()
    AutoencoderTrainer(config, tmp_path / "b").fit(stop_at=3)
    assert json.loads((tmp_path / "b" / "checkpoints" / "latest.json").read_text())["step"] == 3
    with pytest.raises(Sa3Error, match="resume"):
        AutoencoderTrainer(config, tmp_path / "b")  # refuses to overwrite a run silently
    resumed_trainer = AutoencoderTrainer(config, tmp_path / "b", resume=True)
    assert resumed_trainer.step == 3
    resumed = resumed_trainer.fit()
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight[3:]]
    a = load_model(tmp_path / "a" / "same.safetensors")[0].state_dict()
    b = load_model(tmp_path / "b" / "same.safetensors")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite([h["loss"] for h in straight]).all()


def test_decoder_fine_tune_keeps_the_latent_space(tmp_path):
    """train: decoder from a trained autoencoder: the decoder learns, while the encoder's weights
    and latent statistics (so every latent an encoded corpus holds) stay bit-exact."""
    first = _config(steps=3, checkpoint_every=1000)
    AutoencoderTrainer(first, tmp_path / "a").fit()
    start = tmp_path / "a" / "same.safetensors"
    config = _config(steps=3, checkpoint_every=1000)
    config.init, config.train = str(start), "decoder"
    config.model = {}
    config.loss = cfg.from_dict(type(config.loss), {"stft": 1.0, "mel": 1.0, "chroma": 0.0, "ild": 0.0})
    AutoencoderTrainer(config, tmp_path / "b").fit()
    before, after = load_model(start)[0], load_model(tmp_path / "b" / "same.safetensors")[0]
    clip = render_clip(4 * 4096, torch.Generator().manual_seed(5))[None]
    assert torch.equal(before.encode(clip), after.encode(clip))
    assert not torch.equal(before.decode(before.encode(clip)), after.decode(after.encode(clip)))


def test_silence_augmentation_silences_a_tail_or_head(tmp_path):
    """data.silence_prob 1: every crop keeps its audio on one side of a cut and is exactly zero on the other."""
    folder = tmp_path / "data"
    folder.mkdir()
    sf.write(folder / "clip.wav", np.full((8 * 4096, 2), 0.5, np.float32), 44_100, subtype="FLOAT")  # never silent
    config = _config(steps=1, batch_size=6)
    config.data.source, config.data.silence_prob = str(folder), 1.0
    batch = AutoencoderTrainer(config, tmp_path / "run").get_batch(0, 0, torch.Generator().manual_seed(0))
    for crop in batch:
        silent = (crop == 0).all(dim=0)
        assert 0.05 < silent.float().mean() < 0.95
        edges = silent.nonzero()
        assert edges.min() == 0 or edges.max() == crop.shape[-1] - 1  # one contiguous tail or head
        assert silent.float().diff().abs().sum() == 1
        assert (crop[:, ~silent] > 0).all()
    config.data.silence_prob = 0.0
    untouched = AutoencoderTrainer(config, tmp_path / "run2").get_batch(0, 0, torch.Generator().manual_seed(0))
    assert (untouched != 0).all()


def test_stop_after_ends_early_and_init_may_switch_the_head(tmp_path):
    """loop.stop_after ends a run (with its export) part-way through its schedule; a run started
    from it with init may turn peak_frequency on (a head setting, no weights), not change shapes."""
    first = _config(steps=8, stop_after=2, checkpoint_every=1000)
    first.model = {**SMALL_MODEL, "peak_frequency": False}
    trainer = AutoencoderTrainer(first, tmp_path / "a")
    trainer.fit()
    assert trainer.step == 2 and (tmp_path / "a" / "same.safetensors").is_file()
    config = _config(steps=2, checkpoint_every=1000)
    config.init, config.model = str(tmp_path / "a" / "same.safetensors"), {"peak_frequency": True}
    AutoencoderTrainer(config, tmp_path / "b").fit()
    assert load_model(tmp_path / "b" / "same.safetensors")[0].config.peak_frequency
    config.model = {"width": 32}
    with pytest.raises(Sa3Error, match="peak_frequency"):
        check_config(config)
    config.model = {"head_patches": 6}
    with pytest.raises(Sa3Error, match="head_patches 6 must be one of 4, 8, 16"):
        check_config(config)
    for field in ("pitch_patches", "pitch_channels"):
        config.model, config.train = {field: 8}, "decoder"
        with pytest.raises(Sa3Error, match=f"{field} changes the encoder"):
            check_config(config)


def test_init_may_widen_the_head_of_a_decoder_fine_tune(tmp_path):
    """head_patches with init resizes the head's output layer (the encoder, so the latents, stay
    bit-exact), trains, resumes from its checkpoint, and exports a model that loads as 8-patch."""
    first = _config(steps=2, checkpoint_every=1000)
    AutoencoderTrainer(first, tmp_path / "a").fit()
    start = tmp_path / "a" / "same.safetensors"
    config = _config(steps=4, stop_after=2, checkpoint_every=1)
    config.init, config.train, config.model = str(start), "decoder", {"head_patches": 8}
    config.loss = cfg.from_dict(type(config.loss), {"stft": 1.0, "flux": 1.0, "chroma": 0.0, "ild": 0.0})
    check_config(config)
    AutoencoderTrainer(config, tmp_path / "b").fit()
    config.loop.stop_after = 0
    resumed = AutoencoderTrainer(config, tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed.fit()
    before, after = load_model(start)[0], load_model(tmp_path / "b" / "same.safetensors")[0]
    assert after.config.head_patches == 8 and after.patch_out.out_features == 2 * 2 * 1025
    clip = render_clip(4 * 4096, torch.Generator().manual_seed(5))[None]
    assert torch.equal(before.encode(clip), after.encode(clip))
    assert after.decode(after.encode(clip)).shape == (1, 2, 4 * 4096)


def test_init_may_add_the_pitch_front_end_and_semitone_channels(tmp_path):
    """pitch_patches and pitch_channels with init (train: all) widen the encoder's input and
    measure the last latent channels, pitch_skip renders them, and the model trains on: the exported model reads the
    8-patch spectrum, has 12 measured channels, and its latents move away from the start's."""
    AutoencoderTrainer(_config(steps=2, checkpoint_every=1000), tmp_path / "a").fit()
    start = tmp_path / "a" / "same.safetensors"
    config = _config(steps=2, checkpoint_every=1000)
    config.init, config.model = str(start), {"pitch_patches": 8, "pitch_channels": 12, "pitch_skip": True}
    check_config(config)
    AutoencoderTrainer(config, tmp_path / "b").fit()
    before, after = load_model(start)[0], load_model(tmp_path / "b" / "same.safetensors")[0]
    assert after.config.pitch_patches == 8 and after.patch_in.in_features > before.patch_in.in_features
    assert after.config.pitch_channels == 12 and after.config.pitch_skip
    assert not torch.equal(after.pitch_gain, torch.zeros_like(after.pitch_gain))  # the skip's gains trained
    clip = render_clip(4 * 4096, torch.Generator().manual_seed(5))[None]
    assert not torch.equal(before.encode(clip), after.encode(clip))


def test_init_may_add_a_refiner_trained_with_the_head_loss(tmp_path):
    """refiner_layers with init adds a wider transformer after the decoder whose head starts at
    zero (the first decode is bit-exact the old one's), trains it with the head loss (the encoder,
    so the latents, stay bit-exact), and exports a model that loads with its refiner; a second
    refiner of another width on top is refused with a message naming the fix."""
    first = _config(steps=2, checkpoint_every=1000)
    AutoencoderTrainer(first, tmp_path / "a").fit()
    start = tmp_path / "a" / "same.safetensors"
    config = _config(steps=3, checkpoint_every=1000)
    config.init, config.train, config.model = str(start), "decoder", {"refiner_layers": 2, "refiner_width": 64}
    config.loss = cfg.from_dict(type(config.loss), {"stft": 1.0, "head": 1.0, "chroma": 0.0, "ild": 0.0})
    check_config(config)
    trainer = AutoencoderTrainer(config, tmp_path / "b")
    before = load_model(start)[0]
    clip = render_clip(4 * 4096, torch.Generator().manual_seed(5))[None]
    same = trainer.model.same.eval()
    assert torch.equal(before.decode(before.encode(clip)), same.decode(same.encode(clip)))
    same.train()
    trainer.fit()
    after = load_model(tmp_path / "b" / "same.safetensors")[0]
    assert after.config.refiner_layers == 2 and after.refiner_out.in_features == 64
    assert after.refiner_out.weight.abs().sum() > 0  # the head learned
    assert torch.equal(before.encode(clip), after.encode(clip))
    assert not torch.equal(before.decode(before.encode(clip)), after.decode(after.encode(clip)))
    config.init, config.model = str(tmp_path / "b" / "same.safetensors"), {"refiner_layers": 2, "refiner_width": 96}
    with pytest.raises(Sa3Error, match="already has a 2-layer refiner"):
        AutoencoderTrainer(config, tmp_path / "c")
