import dataclasses
import math

import numpy as np
import pytest
import torch

from sa3core.checkpoint import load_model, save_model
from sa3core.errors import Sa3Error
from sa3core.models.same import (
    SAME,
    SAMEConfig,
    dft_bases,
    model_identity,
    overlap_add,
    parameter_count,
    peak_offsets,
    same_preset,
    spectral_frames,
)
from sa3core.timebase import SAMPLE_RATE, samples_to_frames

# a 2-block model keeps the long-length checks fast; the presets are checked for size separately
SMALL = SAMEConfig(
    width=32,
    heads=2,
    encoder_layers=2,
    decoder_layers=2,
    mlp_hidden=64,
    chunk_frames=0,
    phase_prior=True,
    peak_frequency=True,
)


@pytest.fixture(scope="module")
def model() -> SAME:
    torch.manual_seed(0)
    return SAME(SMALL).eval()


def test_presets_have_the_stated_sizes():
    tiny = SAME(same_preset("tiny"))
    assert 1e6 < parameter_count(tiny) < 5e6
    small = SAME(same_preset("small"))
    decoder = sum(parameter_count(m) for m in (small.from_latent, small.decoder, small.decoder_norm, small.patch_out))
    assert 100e6 < parameter_count(small) < 116e6 and 50e6 < decoder + small.outputs.numel() < 58e6
    with pytest.raises(Sa3Error, match="huge"):
        same_preset("huge")


@pytest.mark.parametrize("samples", [1, 4095, 4096, 4097, 10 * SAMPLE_RATE, 60 * SAMPLE_RATE])
def test_latent_shape(model, samples):
    latents = model.encode(torch.zeros(1, 2, samples))
    assert latents.shape == (1, 256, math.ceil(samples / 4096)) == (1, 256, samples_to_frames(samples))
    assert model.decode(latents).shape == (1, 2, latents.shape[-1] * 4096)


def test_chunked_equals_whole_on_a_sine_sweep(model):
    """Chunk borders at frames 8, 16, ... cross a sweep; chunked and one-pass results agree to 1e-5."""
    seconds = 40 * 4096 / SAMPLE_RATE
    t = torch.arange(40 * 4096 - 1000) / SAMPLE_RATE
    sweep = 0.5 * torch.sin(2 * math.pi * (50 * t + (4000 - 50) / (2 * seconds) * t**2))  # 50 Hz -> 4 kHz
    audio = torch.stack([sweep, 0.5 * sweep])[None]
    whole = model.encode(audio, chunk_frames=0)
    chunked = model.encode(audio, chunk_frames=8)
    assert (whole - chunked).abs().max() < 1e-5
    decoded_whole = model.decode(whole, chunk_frames=0)
    decoded_chunked = model.decode(whole, chunk_frames=8)
    assert (decoded_whole - decoded_chunked).abs().max() < 1e-5
    # no seam: the sample-to-sample step across each chunk border is no larger than elsewhere
    steps = decoded_chunked[0].diff(dim=-1).abs()
    borders = torch.arange(8, 40, 8) * 4096 - 1
    assert steps[:, borders].max() <= steps.max()
    assert torch.equal(steps[:, borders], decoded_whole[0].diff(dim=-1).abs()[:, borders])


def test_chunking_needs_its_context(model, monkeypatch):
    """The equality above is not trivial: without the receptive-field context chunks differ."""
    latents = torch.randn(1, 256, 24)
    whole = model.decode(latents, chunk_frames=0)
    monkeypatch.setattr(SAME, "receptive_frames", property(lambda self: 0))
    assert (model.decode(latents, chunk_frames=8) - whole).abs().max() > 1e-3


def test_padding_at_the_end_does_not_change_earlier_frames(model):
    torch.manual_seed(1)
    audio = 0.3 * torch.randn(1, 2, 30 * 4096)
    longer = torch.cat([audio, 0.3 * torch.randn(1, 2, 4 * 4096)], dim=-1)
    # frames far (> receptive field) from the end agree between the two lengths
    far = 30 - model.receptive_frames - 2
    assert (model.encode(audio)[..., :far] - model.encode(longer)[..., :far]).abs().max() < 1e-5


def test_encode_is_deterministic_and_batch_independent(model):
    torch.manual_seed(2)
    audio = 0.3 * torch.randn(3, 2, 9000)
    batched = model.encode(audio)
    single = torch.cat([model.encode(audio[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.equal(model.encode(audio), batched)


def test_training_path_has_gradients_and_updates_latent_statistics():
    torch.manual_seed(3)
    model = SAME(SMALL).train()
    audio = 0.3 * torch.randn(2, 2, 3 * 4096 + 5)
    latents, reconstruction = model(audio)
    assert latents.shape == (2, 256, 4) and reconstruction.shape == audio.shape
    before = model.latent_norm.mean.clone()
    (reconstruction - audio).square().mean().backward()
    assert model.patch_in.weight.grad.abs().sum() > 0
    model(audio)
    assert not torch.equal(before, model.latent_norm.mean)


def test_bf16_autocast_stays_close(model):
    torch.manual_seed(4)
    latents = torch.randn(1, 256, 6)
    full, half = model.decode(latents), model.decode(latents, bf16=True)
    assert half.dtype == torch.float32
    assert (full - half).abs().max() < 0.05 * full.abs().max() + 1e-3


def test_save_load_round_trip_keeps_identity(model, tmp_path):
    path = save_model(tmp_path / "same.safetensors", "same", model)
    loaded, _ = load_model(path, expect_kind="same")
    assert model_identity(loaded) == model_identity(model)
    audio = 0.2 * torch.randn(1, 2, 5000)
    assert torch.equal(loaded.encode(audio), model.encode(audio))
    other = SAME(SMALL)
    assert model_identity(other) != model_identity(model)


def test_bad_shapes_are_refused(model):
    with pytest.raises(Sa3Error, match="audio"):
        model.encode(torch.zeros(1, 1, 100))
    with pytest.raises(Sa3Error, match="latents"):
        model.decode(torch.zeros(1, 64, 3))


def test_dft_bases_match_torch_fft():
    forward, inverse = dft_bases(64)
    x = torch.randn(3, 64, dtype=torch.float32)
    spectrum = torch.fft.rfft(x)
    assert torch.allclose(x @ forward, torch.cat([spectrum.real, spectrum.imag], dim=-1), atol=1e-4)
    assert torch.allclose((x @ forward) @ inverse, x, atol=1e-5)


def test_overlap_add_inverts_spectral_frames_with_the_window_gain():
    """Frames of 4 patches at hop 1 patch, Hann-windowed and overlap-added, divided by the summed
    window: every sample comes back, the first and last patches (partial overlap) included."""
    patches = torch.randn(2, 7, 16)
    window = torch.hann_window(64, periodic=True)
    gain = overlap_add(window.expand(7, -1))
    assert gain.min() > 0.4 and torch.allclose(gain[32:-64], torch.full_like(gain[32:-64], 2.0))
    assert torch.allclose(overlap_add(spectral_frames(patches) * window) / gain, patches.reshape(2, -1), atol=1e-6)


@pytest.mark.parametrize("prior", [False, True])
def test_the_phase_prior_puts_a_bin_centre_tone_at_its_frequency(prior):
    """A head that predicts the same spectrum for every token: with free phases the output repeats
    every hop (256 samples), so a bin-21 tone (904 Hz) comes out at the nearest multiple of
    172.3 Hz (861 Hz), the buzz the first default model had; the phase prior keeps 904 Hz."""
    torch.manual_seed(0)
    model = SAME(dataclasses.replace(SMALL, phase_prior=prior, peak_frequency=False)).eval()
    with torch.no_grad():
        model.patch_out.weight.zero_()
        bias = torch.full((2, 2, model.bins), -20.0)
        bias[:, 0, 21], bias[:, 1, :] = 3.0, 0.3  # log magnitude at bin 21 only; any constant phase
        model.patch_out.bias.copy_(bias.reshape(-1))
        audio = model.decode(torch.zeros(1, 256, 8))[0, 0, 8192:-8192].numpy()
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    peak = np.fft.rfftfreq(audio.size, 1 / 44100)[spectrum.argmax()]
    bin_centre, hop_harmonic = 21 * 44100 / 1024, 5 * 44100 / 256
    assert abs(peak - (bin_centre if prior else hop_harmonic)) < 5.0


@pytest.mark.parametrize("peak_frequency", [False, True])
def test_peak_frequency_renders_a_tone_between_bins_at_its_frequency(peak_frequency):
    """A log-magnitude lobe centred between bins (21.3, 917 Hz): read from the lobe's shape, the
    phases advance at 917 Hz; at bin centres only, the tone lands on bin 21 (904 Hz)."""
    torch.manual_seed(0)
    model = SAME(dataclasses.replace(SMALL, peak_frequency=peak_frequency)).eval()
    with torch.no_grad():
        model.patch_out.weight.zero_()
        k = torch.arange(model.bins, dtype=torch.float32)
        bias = torch.zeros(2, 2, model.bins)
        bias[:, 0] = torch.clamp(3.0 - 1.2 * (k - 21.3) ** 2, min=-20.0)
        bias[:, 1] = 0.3
        model.patch_out.bias.copy_(bias.reshape(-1))
        frame = model.decode(torch.zeros(1, 256, 6))[0, 0, 2 * 4096 : 3 * 4096].numpy()  # one whole latent frame
    spectrum = np.abs(np.fft.rfft(frame * np.hanning(frame.size), 1 << 16))
    peak = np.fft.rfftfreq(1 << 16, 1 / 44100)[spectrum.argmax()]
    assert abs(peak - (21.3 if peak_frequency else 21.0) * 44100 / 1024) < 3.0


def test_peak_offsets_point_at_the_vertex_and_ignore_valleys():
    k = torch.arange(40, dtype=torch.float32)
    offsets = peak_offsets(-0.5 * (k - 20.4) ** 2)
    torch.testing.assert_close(offsets[16:25], (20.4 - k[16:25]).clamp(-1, 1), atol=0.01, rtol=0)  # lobe bins, clamped
    assert peak_offsets(0.5 * (k - 20.4) ** 2)[15:25].abs().max() < 0.01  # a valley is no peak
    assert peak_offsets(torch.zeros(40)).abs().max() == 0.0  # flat: no offset
