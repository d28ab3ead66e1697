"""Fidelity metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from histosynth.errors import InputError
from histosynth.evaluation.fidelity import (
    fidelity_metrics,
    frechet_distance,
    kernel_inception_distance,
    knn_radii,
    manifold_metrics,
)


def _gauss(n: int, d: int, mean: float = 0.0, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, scale, size=(n, d))


def test_identical_sets_give_zero_fid_and_full_precision_recall_coverage() -> None:
    x = _gauss(300, 8)
    metrics = fidelity_metrics(x, x.copy(), k=3, kid_subsets=10)
    assert abs(metrics["fid"]) < 1e-6
    assert metrics["precision"] == metrics["recall"] == metrics["coverage"] == 1.0
    assert metrics["kid_x1000"] < 0.5  # unbiased estimator: ~0, may dip slightly below


def test_fid_of_two_gaussians_matches_the_closed_form() -> None:
    # N(0, I) vs N(m, 4 I) in d dims: |m|^2 + d (1 + 4 - 2 * 2) = |m|^2 + d
    d, shift = 4, 3.0
    a, b = _gauss(40_000, d, seed=1), _gauss(40_000, d, mean=shift, scale=2.0, seed=2)
    expected = d * shift**2 + d
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_disjoint_sets_have_zero_precision_recall_coverage() -> None:
    m = manifold_metrics(_gauss(200, 5), _gauss(200, 5, mean=50.0, seed=3), k=3)
    assert (m.precision, m.recall, m.density, m.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_precision_and_recall_split_a_half_overlapping_set() -> None:
    real = _gauss(400, 2, seed=4)
    synthetic = np.concatenate([_gauss(200, 2, seed=5), _gauss(200, 2, mean=100.0, seed=6)])
    m = manifold_metrics(real, synthetic, k=3)
    assert 0.4 < m.precision <= 0.5  # the far half is outside every real ball
    assert m.recall > 0.9  # real points are near the near half, whose k-NN balls are normal-sized


def test_kid_is_zero_for_same_distribution_and_grows_with_shift() -> None:
    a, b, c = _gauss(500, 16, seed=7), _gauss(500, 16, seed=8), _gauss(500, 16, mean=1.0, seed=9)
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, c, subsets=20, subset_size=200)
    assert abs(same) < 0.05 and shifted > 10 * max(abs(same), 1e-3)


def test_kid_matches_a_direct_unbiased_mmd_on_one_full_subset() -> None:
    a, b = _gauss(30, 3, seed=10), _gauss(30, 3, mean=0.5, seed=11)
    kernel = lambda x, y: (x @ y.T / 3 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = kernel(a, a), kernel(b, b), kernel(a, b)
    n = 30
    direct = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
    value, sd = kernel_inception_distance(a, b, subsets=3, subset_size=30)
    assert value == pytest.approx(direct) and sd == pytest.approx(0.0, abs=1e-12)


def test_knn_radius_of_points_on_a_line() -> None:
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 5.0]


def test_bad_feature_sets_fail_with_one_line() -> None:
    with pytest.raises(InputError, match="equal widths"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(InputError, match="at least 4 samples"):
        manifold_metrics(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
