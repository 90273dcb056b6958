"""Fixed embedding, Fréchet distance and pairwise distances."""

from __future__ import annotations

import numpy as np
import pytest

from sa3.eval import embed
from sa3core.errors import Sa3Error

from .signals import drum_pattern, progression


def test_frechet_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    assert embed.frechet_distance(points, points) == pytest.approx(0.0, abs=1e-6)
    distances = [embed.frechet_distance(points, points + shift) for shift in (0.1, 0.5, 2.0)]
    assert distances[0] < distances[1] < distances[2]
    # a pure mean shift of s in every one of D dimensions adds D s^2
    assert distances[2] == pytest.approx(6 * 2.0**2, rel=1e-4)
    assert embed.frechet_distance(points, 3.0 * points) > 1.0  # a change of spread counts too


def test_frechet_refuses_too_few_rows():
    with pytest.raises(ValueError):
        embed.frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))


def test_feature_embedding_is_fixed_size_finite_and_separates_sounds():
    chords = [progression(tonic, False, repeats=1) for tonic in (0, 2)]
    drums = [drum_pattern(bpm, bars=2) for bpm in (100.0, 110.0)]
    vectors = embed.embed([*chords, *drums])
    assert vectors.shape == (4, 170) and np.isfinite(vectors).all()
    within = (np.linalg.norm(vectors[0] - vectors[1]) + np.linalg.norm(vectors[2] - vectors[3])) / 2
    across = np.linalg.norm(vectors[:2, None] - vectors[None, 2:], axis=-1).mean()
    assert across > 2 * within
    assert embed.frechet_distance(vectors, vectors) == pytest.approx(0.0, abs=1e-6)


def test_mean_pairwise_distance():
    assert embed.mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
    triangle = np.array([[0.0], [1.0], [3.0]])
    assert embed.mean_pairwise_distance(triangle) == pytest.approx((1 + 3 + 2) / 3)


def test_unknown_embedder_is_a_user_error():
    with pytest.raises(Sa3Error, match="unknown embedding"):
        embed.embed([np.zeros((2, 100), dtype=np.float32)], embedder="nope")
