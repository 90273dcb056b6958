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
    add_pitch_channels,
    add_pitch_front_end,
    add_pitch_skip,
    add_refiner,
    dft_bases,
    model_identity,
    overlap_add,
    overlap_add_eager,
    parameter_count,
    peak_offsets,
    resize_head,
    same_preset,
    semitone_filters,
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
    # Phase refinement is global, but each iteration reaches one head window further: the chunks
    # carry that reach as context (80 iterations of a 1024-sample head: 21 frames, more than the
    # decoder's own 12), so chunked refinement is the one-pass refinement.
    for iterations in (8, 80):
        refined_whole = model.decode(whole, chunk_frames=0, phase_iterations=iterations)
        assert (model.decode(whole, chunk_frames=8, phase_iterations=iterations) - refined_whole).abs().max() < 1e-5
        assert (refined_whole - decoded_whole).abs().max() > 1e-3


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


@pytest.mark.parametrize("span", [4, 8, 16])
def test_overlap_add_inverts_spectral_frames_with_the_window_gain(span):
    """Frames of ``span`` patches at hop 1 patch, Hann-windowed and overlap-added, divided by the
    summed window: every sample comes back, the first and last patches (partial overlap) included."""
    patches = torch.randn(2, 23, 16)
    window = torch.hann_window(span * 16, periodic=True)
    gain = overlap_add(window.expand(23, -1), span)
    inner = gain[span * 16 : -span * 16]
    assert gain.min() > 0.4 and torch.allclose(inner, torch.full_like(inner, span / 2))
    frames = spectral_frames(patches, span) * window
    assert torch.allclose(overlap_add(frames, span) / gain, patches.reshape(2, -1), atol=1e-6)
    # the in-place version Griffin-Lim uses sums the same frames into the same samples
    assert torch.allclose(overlap_add_eager(frames, span), overlap_add(frames, span), atol=1e-6)
    lone = torch.zeros(3, span * 16)
    lone[1, :16] = 1.0  # frame 1's first patch is patch 1 - span/2: before the start for span > 2
    assert overlap_add_eager(lone, span).abs().sum() == overlap_add(lone, span).abs().sum() == 0.0


def _constant_head(model: SAME, log_magnitude: torch.Tensor, phase: float = 0.3) -> None:
    """Make every output token predict the same spectrum: ``log_magnitude [head_bins]``, one phase."""
    with torch.no_grad():
        model.patch_out.weight.zero_()
        bias = torch.zeros(2, 2, model.head_bins)
        bias[:, 0], bias[:, 1] = log_magnitude, phase
        model.patch_out.bias.copy_(bias.reshape(-1))


@pytest.mark.parametrize(("prior", "head_patches"), [(False, 4), (True, 4), (True, 8)])
def test_the_phase_prior_puts_a_bin_centre_tone_at_its_frequency(prior, head_patches):
    """A head that predicts the same spectrum for every token: with free phases the output repeats
    every hop (256 samples), so a 904 Hz bin-centre tone comes out at the nearest multiple of
    172.3 Hz (861 Hz), the buzz the first default model had; the phase prior keeps 904 Hz, with
    the 4-patch head (bin 21 of 1024 samples) and the 8-patch one (bin 42 of 2048)."""
    torch.manual_seed(0)
    model = SAME(dataclasses.replace(SMALL, phase_prior=prior, peak_frequency=False, head_patches=head_patches))
    log_magnitude = torch.full((model.head_bins,), -20.0)
    log_magnitude[21 * head_patches // 4] = 3.0
    _constant_head(model.eval(), log_magnitude)
    with torch.no_grad():
        audio = model.decode(torch.zeros(1, 256, 8))[0, 0, 8192:-8192].numpy()
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    peak = np.fft.rfftfreq(audio.size, 1 / 44100)[spectrum.argmax()]
    bin_centre, hop_harmonic = 21 * 44100 / 1024, 5 * 44100 / 256
    assert abs(peak - (bin_centre if prior else hop_harmonic)) < 5.0


@pytest.mark.parametrize("head_patches", [4, 8])
def test_phase_refinement_gathers_a_chord_smeared_by_bad_phases(head_patches):
    """An A minor triad low in the register (110, 131, 165 Hz), analysed in the head's own framing
    and rendered back with its magnitudes but phases off by up to 1.5 rad: the overlap-add
    smears the notes (what the decoder's predicted phases do to keys). Griffin-Lim from those
    phases puts the energy back on the three notes."""
    model = SAME(dataclasses.replace(SMALL, head_patches=head_patches)).eval()
    t = torch.arange(4 * 4096, dtype=torch.float64) / SAMPLE_RATE
    chord = sum(torch.sin(2 * math.pi * hz * t + k) for k, hz in enumerate((110.0, 130.81, 164.81))).float() / 3
    patches = chord.expand(1, 2, -1).reshape(1, 2, -1, model.config.patch)
    spectrum = torch.fft.rfft(spectral_frames(patches, head_patches) * model.head_window)
    noise = (torch.rand(spectrum.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 3.0
    hz = np.fft.rfftfreq(8192, 1 / SAMPLE_RATE)
    near = np.min(np.abs(hz[:, None] - np.array([110.0, 130.81, 164.81])[None]), axis=1) < 12.0

    def on_the_notes(audio: torch.Tensor) -> float:
        power = np.abs(np.fft.rfft(audio[0, 0, 4096:12288].numpy() * np.hanning(8192))) ** 2
        return float(power[near].sum() / power.sum())

    smeared = model.refine_phase(spectrum.abs(), spectrum.angle() + noise, 0)
    refined = model.refine_phase(spectrum.abs(), spectrum.angle() + noise, 32)
    exact = model.refine_phase(spectrum.abs(), spectrum.angle(), 0)
    assert on_the_notes(exact) > 0.99
    assert on_the_notes(refined) > 0.99 and 1 - on_the_notes(refined) < 0.2 * (1 - on_the_notes(smeared))
    with pytest.raises(Sa3Error, match="phase_iterations"):
        model.decode(torch.zeros(1, 256, 2), phase_iterations=-1)


def test_the_torch_backend_refines_phases_as_the_model_says(model):
    from sa3core.backends import TorchBackend
    from sa3core.text import TEXT_ENCODERS

    latents = torch.randn(1, 256, 12, generator=torch.Generator().manual_seed(3))
    dit = torch.nn.Identity()
    backend = TorchBackend(model, dit, TEXT_ENCODERS.get("hash")(), bf16=False, phase_iterations=4)
    refined = backend.decode_latents(latents)
    assert torch.equal(refined, model.decode(latents, phase_iterations=4))
    assert not torch.allclose(refined, model.decode(latents), atol=1e-4)
    with pytest.raises(Sa3Error, match="phase_iterations"):
        TorchBackend(model, dit, TEXT_ENCODERS.get("hash")(), phase_iterations=-2)


@pytest.mark.parametrize("head_patches", [4, 8])
@pytest.mark.parametrize("peak_frequency", [False, True])
def test_peak_frequency_renders_a_tone_between_bins_at_its_frequency(peak_frequency, head_patches):
    """A log-magnitude lobe centred between bins (917 Hz: bin 21.3 of the 4-patch head, 42.6 of
    the 8-patch one): read from the lobe's shape, the phases advance at 917 Hz; at bin centres
    only, the tone lands on the bin (904 Hz)."""
    torch.manual_seed(0)
    model = SAME(dataclasses.replace(SMALL, peak_frequency=peak_frequency, head_patches=head_patches)).eval()
    scale = head_patches / 4
    k = torch.arange(model.head_bins, dtype=torch.float32)
    _constant_head(model, torch.clamp(3.0 - 1.2 * (k - 21.3 * scale) ** 2, min=-20.0))
    with torch.no_grad():
        frame = model.decode(torch.zeros(1, 256, 6))[0, 0, 2 * 4096 : 3 * 4096].numpy()  # one whole latent frame
    spectrum = np.abs(np.fft.rfft(frame * np.hanning(frame.size), 1 << 16))
    peak = np.fft.rfftfreq(1 << 16, 1 / 44100)[spectrum.argmax()]
    wanted = (21.3 * scale if peak_frequency else round(21.3 * scale)) * 44100 / (1024 * scale)
    assert abs(peak - wanted) < 3.0


def test_an_unknown_head_window_is_refused():
    with pytest.raises(Sa3Error, match="head_patches 6"):
        SAME(dataclasses.replace(SMALL, head_patches=6))


def test_the_wider_head_decodes_in_exact_chunks():
    torch.manual_seed(3)
    model = SAME(dataclasses.replace(SMALL, head_patches=8)).eval()
    latents = torch.randn(1, 256, 24)
    whole = model.decode(latents, chunk_frames=0)
    assert (model.decode(latents, chunk_frames=8) - whole).abs().max() < 1e-5


def test_resize_head_keeps_the_encoder_and_the_sound():
    """The resized head starts where the old one was: the same latents, and a tone the old head
    rendered comes out at the same frequency and level (within 1 dB) through the 8-patch head."""
    torch.manual_seed(4)
    model = SAME(SMALL).eval()
    log_magnitude = torch.full((model.head_bins,), -20.0)
    log_magnitude[21] = 3.0
    _constant_head(model, log_magnitude)
    resized = resize_head(model, 8)
    assert resized.config.head_patches == 8 and resized.head_bins == 2 * model.head_bins - 1
    audio = 0.3 * torch.randn(1, 2, 8 * 4096)
    assert torch.equal(model.encode(audio), resized.encode(audio))
    with torch.no_grad():
        before, after = (m.decode(torch.zeros(1, 256, 8))[0, 0, 8192:-8192].numpy() for m in (model, resized))
    hz = np.fft.rfftfreq(before.size, 1 / 44100)
    spectra = [np.abs(np.fft.rfft(a * np.hanning(a.size))) for a in (before, after)]
    assert abs(hz[spectra[1].argmax()] - hz[spectra[0].argmax()]) < 3.0
    level = [20 * np.log10(np.sqrt(np.mean(a**2))) for a in (before, after)]
    assert abs(level[1] - level[0]) < 1.0


def test_peak_offsets_point_at_the_vertex_and_ignore_valleys():
    k = torch.arange(40, dtype=torch.float32)
    offsets = peak_offsets(-0.5 * (k - 20.4) ** 2)
    torch.testing.assert_close(offsets[16:25], (20.4 - k[16:25]).clamp(-1, 1), atol=0.01, rtol=0)  # lobe bins, clamped
    assert peak_offsets(0.5 * (k - 20.4) ** 2)[15:25].abs().max() < 0.01  # a valley is no peak
    assert peak_offsets(torch.zeros(40)).abs().max() == 0.0  # flat: no offset


def test_the_pitch_front_end_starts_exact_and_separates_a_minor_third():
    """add_pitch_front_end keeps the latents (its input weights start at zero; a wider matmul may
    round differently, so to 1e-5); the
    8-patch spectrum it adds shows A3 and C4 (220 + 262 Hz, a minor third) as two peaks, where
    the 4-patch one (43 Hz bins) merges them into one lobe."""
    torch.manual_seed(5)
    model = SAME(SMALL).eval()
    widened = add_pitch_front_end(model, 8).eval()
    audio = 0.3 * torch.randn(1, 2, 6 * 4096)
    assert widened.config.pitch_patches == 8
    assert (model.encode(audio) - widened.encode(audio)).abs().max() < 1e-5
    with pytest.raises(Sa3Error, match="already reads"):
        add_pitch_front_end(widened, 8)
    t = torch.arange(4 * 4096) / SAMPLE_RATE
    third = (torch.sin(2 * math.pi * 220.0 * t) + torch.sin(2 * math.pi * 261.63 * t)).expand(1, 2, -1)
    patches = third.contiguous().reshape(1, 2, -1, 256)

    def peaks(log_magnitude: torch.Tensor, bin_hz: float) -> int:
        band = log_magnitude[int(200 / bin_hz) : int(300 / bin_hz) + 2]
        inner = band[1:-1]
        return int(((inner > band[:-2]) & (inner > band[2:])).sum())

    short = model._log_magnitude(patches, 4, model.window, model.dft_forward)[0, 0, 32]
    long = widened._log_magnitude(patches, 8, widened.pitch_window, widened.pitch_forward)[0, 0, 32]
    assert peaks(short, SAMPLE_RATE / 1024) == 1 and peaks(long, SAMPLE_RATE / 2048) == 2


def test_an_unknown_pitch_window_is_refused():
    with pytest.raises(Sa3Error, match="pitch_patches 5"):
        SAME(dataclasses.replace(SMALL, pitch_patches=5))


def test_the_pitch_front_end_encodes_in_exact_chunks():
    torch.manual_seed(6)
    model = SAME(dataclasses.replace(SMALL, pitch_patches=8, head_patches=8)).eval()
    audio = 0.3 * torch.randn(1, 2, 24 * 4096 - 300)
    assert (model.encode(audio, chunk_frames=8) - model.encode(audio, chunk_frames=0)).abs().max() < 1e-5


def test_semitone_filters_read_each_note_at_its_own_channel():
    filters = semitone_filters(60)
    assert filters.shape == (180, 60) and torch.allclose(filters.sum(dim=0), torch.ones(60))
    model = SAME(dataclasses.replace(SMALL, pitch_channels=60)).eval()
    t = torch.arange(4 * 4096) / SAMPLE_RATE
    for note in (45, 57, 60, 76, 88):  # A2, A3, C4, E5, E6
        hz = 440.0 * 2 ** ((note - 69) / 12)
        tone = (0.3 * torch.sin(2 * math.pi * hz * t)).expand(1, 2, -1).contiguous()
        energies = model.semitone_energies(tone)[0, :, 1:3]  # inner frames
        assert (energies.argmax(dim=0) == note - 33).all(), note
    with pytest.raises(Sa3Error, match="reach past"):
        semitone_filters(72)
    with pytest.raises(Sa3Error, match="pitch_channels 256"):
        SAME(dataclasses.replace(SMALL, pitch_channels=256))


def test_add_pitch_channels_measures_the_last_channels_and_keeps_the_rest():
    """The learned channels stay bit-exact; the measured ones are the normalised semitone
    energies (statistics set from the calibration audio); chunked encoding stays exact."""
    torch.manual_seed(7)
    model = SAME(SMALL).eval()
    calibration = 0.3 * torch.randn(4, 2, 4 * 4096)
    measured = add_pitch_channels(model, 60, calibration).eval()
    assert measured.config.pitch_channels == 60 and (measured.from_latent.weight[:, 196:] == 0).all()
    with pytest.raises(Sa3Error, match="already has 60"):
        add_pitch_channels(measured, 60)
    t = torch.arange(24 * 4096) / SAMPLE_RATE
    audio = torch.stack([0.3 * torch.sin(2 * math.pi * 261.63 * t), 0.1 * torch.randn(t.numel())])[None]
    before, after = model.encode(audio), measured.encode(audio)
    assert torch.equal(before[:, :196], after[:, :196])
    raw = measured.semitone_energies(audio)
    norm = measured.latent_norm
    expected = (raw - norm.mean[196:, None]) * torch.rsqrt(norm.var[196:, None] + norm.eps)
    assert torch.allclose(after[:, 196:], expected, atol=1e-5)
    calibrated = measured.semitone_energies(calibration.reshape(1, 2, -1))
    assert abs(float(((calibrated - norm.mean[196:, None]) ** 2).mean() / norm.var[196:].mean()) - 1.0) < 0.2
    assert (measured.encode(audio, chunk_frames=8) - after).abs().max() < 1e-5


def test_the_pitch_skip_renders_the_notes_the_latents_name():
    """With the network's own magnitudes silenced, a model with the pitch skip still plays back
    a tone it encoded: at the tone's pitch (within half a semitone) and within 12 dB of its level
    (the per-bin gains, which start at 1, learn the rest), decoded in chunks as in one pass."""
    torch.manual_seed(8)
    config = dataclasses.replace(SMALL, head_patches=8, pitch_patches=8)
    model = add_pitch_skip(add_pitch_channels(SAME(config), 60, 0.3 * torch.randn(4, 2, 4 * 4096))).eval()
    with torch.no_grad():
        model.patch_out.weight.zero_()
        bias = model.patch_out.bias.view(2, 2, -1)
        bias[:, 0], bias[:, 1] = -30.0, 0.0
    t = torch.arange(12 * 4096) / SAMPLE_RATE
    for hz in (110.0, 261.63, 440.0, 880.0):
        tone = (0.3 * torch.sin(2 * math.pi * hz * t)).expand(1, 2, -1).contiguous()
        latents = model.encode(tone)
        audio = model.decode(latents, chunk_frames=0)
        assert (model.decode(latents, chunk_frames=4) - audio).abs().max() < 1e-5
        inner = audio[0, 0, 3 * 4096 : 9 * 4096].numpy()
        spectrum = np.abs(np.fft.rfft(inner * np.hanning(inner.size)))
        found = np.fft.rfftfreq(inner.size, 1 / SAMPLE_RATE)[spectrum.argmax()]
        assert abs(12 * math.log2(found / hz)) < 0.5, (hz, found)
        level = 20 * math.log10(float(np.sqrt(np.mean(inner**2))) / (0.3 / math.sqrt(2)))
        assert -12.0 < level < 3.0, (hz, level)
    with pytest.raises(Sa3Error, match="pass the latents"):
        model.tokens_to_audio(torch.zeros(1, 2, model.stride, model.config.width))
    with pytest.raises(Sa3Error, match="needs pitch_channels"):
        SAME(dataclasses.replace(SMALL, pitch_skip=True))
    with pytest.raises(Sa3Error, match="has none"):
        add_pitch_skip(SAME(SMALL))


@pytest.mark.parametrize("head_patches", [4, 8])
def test_head_target_is_what_the_head_must_predict(head_patches):
    """Rendering head_target's magnitudes with the audio's own phases gives the audio back (away
    from the ends, where fewer windows overlap), so the head loss aims at the exact answer."""
    torch.manual_seed(head_patches)
    model = SAME(dataclasses.replace(same_preset("tiny"), head_patches=head_patches)).eval()
    audio = torch.randn(1, 2, 4 * 4096) * 0.1
    size = head_patches * model.config.patch
    rendered = model.spectra_to_audio(model.head_target(audio), model.head_analysis(audio).angle())
    torch.testing.assert_close(rendered[..., size:-size], audio[..., size:-size], atol=1e-5, rtol=0)


def test_a_new_refiner_changes_nothing_until_it_trains_and_chunks_stay_exact():
    torch.manual_seed(3)
    model = SAME(same_preset("tiny")).eval()
    refined = add_refiner(model, 2, 64).eval()
    assert refined.receptive_frames > model.receptive_frames  # the refiner's windows reach further
    audio = torch.randn(1, 2, 12 * 4096) * 0.1
    latents = model.encode(audio)
    assert torch.equal(refined.encode(audio), latents)
    assert torch.equal(refined.decode(latents), model.decode(latents))
    with torch.no_grad():
        refined.refiner_out.weight.normal_(std=0.02)  # as if trained: the refiner now counts
    whole = refined.decode(latents, chunk_frames=0)
    assert not torch.equal(whole, model.decode(latents))
    torch.testing.assert_close(refined.decode(latents, chunk_frames=4), whole, atol=1e-5, rtol=1e-5)
    with pytest.raises(Sa3Error, match="already has a 2-layer refiner"):
        add_refiner(refined, 2)
    with pytest.raises(Sa3Error, match="multiple of 32"):
        add_refiner(model, 2, 48)
    with pytest.raises(Sa3Error, match="resize the head before adding a refiner"):
        resize_head(refined, 8)
