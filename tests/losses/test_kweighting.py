import numpy as np
import torch
from scipy.signal import lfilter

from sa3core.losses.kweighting import KWeighting, kweighting_coefficients


def test_48k_coefficients_match_bs1770():
    (shelf_b, shelf_a), (hp_b, hp_a) = kweighting_coefficients(48_000)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-12)
    np.testing.assert_allclose(shelf_a, [1, -1.69065929318241, 0.73248077421585], atol=1e-12)
    np.testing.assert_allclose(hp_b, [1, -2, 1], atol=1e-12)
    np.testing.assert_allclose(hp_a, [1, -1.99004745483398, 0.99007225036621], atol=1e-12)


def test_44k_coefficients_differ_and_keep_the_response():
    (shelf_b, shelf_a), (hp_b, hp_a) = kweighting_coefficients(44_100)
    assert not np.allclose(shelf_a, [1, -1.69065929318241, 0.73248077421585])
    # +4 dB high shelf: gain near Nyquist of the shelf alone is about +4 dB, DC gain about 0 dB
    dc = shelf_b.sum() / shelf_a.sum()
    nyquist = (shelf_b[0] - shelf_b[1] + shelf_b[2]) / (shelf_a[0] - shelf_a[1] + shelf_a[2])
    assert abs(20 * np.log10(dc)) < 0.01
    assert abs(20 * np.log10(abs(nyquist)) - 4.0) < 0.1


def test_torch_filter_equals_recursive_filter():
    torch.manual_seed(0)
    audio = torch.randn(2, 20_000)
    expected = audio.double().numpy()
    for b, a in kweighting_coefficients(44_100):
        expected = lfilter(b, a, expected, axis=-1)
    out = KWeighting()(audio)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    # the high-pass removes DC
    dc = KWeighting()(torch.ones(1, 44_100))
    assert dc[0, -1000:].abs().max() < 1e-3
