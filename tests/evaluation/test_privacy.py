"""Memorisation metrics: exact copies must be caught, fresh samples must not."""

from __future__ import annotations

import numpy as np
import pytest

from histosynth.errors import InputError
from histosynth.evaluation.privacy import (
    authenticity,
    data_copying_ct,
    flag_near_copies,
    near_copy_threshold,
    nearest_neighbours,
)


def _gauss(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


TRAIN, TEST, FRESH = _gauss(400, seed=1), _gauss(200, seed=2), _gauss(200, seed=3)
COPIES = TRAIN[:200].copy()


def test_nearest_neighbours_are_sorted_and_exact() -> None:
    reference = np.array([[0.0], [10.0], [4.0]])
    d, idx = nearest_neighbours(np.array([[3.0]]), reference, k=2)
    assert idx.tolist() == [[2, 0]] and d.tolist() == [[1.0, 3.0]]


def test_exact_copies_have_zero_authenticity_and_fresh_samples_are_mostly_authentic() -> None:
    assert authenticity(TRAIN, COPIES)[0] == 0.0
    fresh_score, flags = authenticity(TRAIN, FRESH)
    assert fresh_score > 0.5 and flags.dtype == bool and len(flags) == len(FRESH)


def test_ct_is_strongly_negative_for_copies_and_near_zero_for_fresh_samples() -> None:
    copies = data_copying_ct(TRAIN, TEST, COPIES, cells=3, min_synthetic_per_cell=10)
    fresh = data_copying_ct(TRAIN, TEST, FRESH, cells=3, min_synthetic_per_cell=10)
    assert copies.score < -5 and copies.cells_used == 3
    assert abs(fresh.score) < 3
    far = data_copying_ct(TRAIN, TEST, FRESH * 3, cells=3, min_synthetic_per_cell=10)
    assert far.score > 3  # samples farther from the training set than new real data: underfitting


def test_ct_skips_cells_with_too_few_synthetic_samples() -> None:
    result = data_copying_ct(TRAIN, TEST, FRESH[:5], cells=3, min_synthetic_per_cell=10)
    assert result.cells_used == 0 and np.isnan(result.score) and all(np.isnan(result.per_cell_z))


def test_gate_flags_every_copy_and_about_the_quantile_of_fresh_samples() -> None:
    threshold = near_copy_threshold(TRAIN, TEST, quantile=0.05)
    assert threshold > 0
    flagged, distances = flag_near_copies(TRAIN, COPIES, threshold)
    assert flagged.all() and np.allclose(distances, 0, atol=1e-6)
    fresh_flagged, _ = flag_near_copies(TRAIN, FRESH, threshold)
    assert fresh_flagged.mean() < 0.15


def test_bad_arguments_fail_with_one_line() -> None:
    with pytest.raises(InputError, match="quantile"):
        near_copy_threshold(TRAIN, TEST, quantile=1.5)
    with pytest.raises(InputError, match="authenticity needs"):
        authenticity(TRAIN[:1], FRESH)
