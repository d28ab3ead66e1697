"""Seam score: hand-computed ratios, smooth images at 1.0, weights, errors, banded accumulation."""

from __future__ import annotations

import numpy as np
import pytest

from histosynth.evaluation.seams import boundary_energy, seam_score, seam_score_from_counts


def _ramp_with_step(height: int = 6, width: int = 10, step_at: int = 5, step: float = 3.0) -> np.ndarray:
    """Columns rise by 1 per pixel, plus ``step`` from column ``step_at`` on (boundary diff 1 + step)."""
    x = np.arange(width, dtype=np.float32)
    return np.tile(x + step * (x >= step_at), (height, 1))


def test_step_on_a_ramp_gives_the_squared_step_ratio() -> None:
    # Across boundary 5 the difference is 4 (16 squared), across every other column boundary it is 1.
    assert seam_score(_ramp_with_step(), [], [5]) == pytest.approx(16.0)


def test_rgb_uses_luminance() -> None:
    grey = _ramp_with_step() * 10
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    assert seam_score(rgb, [], [5]) == pytest.approx(16.0, rel=1e-5)


def test_constant_image_with_steps() -> None:
    image = np.zeros((8, 12), np.float32)
    image[:, 4:] = 10.0
    image[:, 9:] = 20.0
    assert seam_score(image, [], [4, 9]) == float("inf")  # edges differ, interiors are flat
    assert seam_score(image, [], [2, 6]) == 0.0  # the steps are interiors: mean (2 * 100) / 9 boundaries
    assert seam_score(np.zeros((8, 12)), [3], [2]) == 1.0  # flat everywhere: the edges look like the rest


def test_edge_weights() -> None:
    # Edge 5 (squared diff 16) counted three times, edge 2 (squared diff 1) once: (3*16 + 1) / 4.
    score = seam_score(_ramp_with_step(), [], [5, 2], edge_weights_cols=[3, 1])
    assert score == pytest.approx(49 / 4)
    assert seam_score(_ramp_with_step(), [], [5, 5, 5, 2]) == pytest.approx(49 / 4)  # repeats add up


def test_smooth_gradient_scores_one_whatever_the_edges() -> None:
    y, x = np.mgrid[0:40, 0:50].astype(np.float32)
    image = 2 * x + y  # column differences 2, row differences 1: per-axis normalisation keeps 1.0
    assert seam_score(image, [8, 16, 24], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert seam_score(image, [8], []) == pytest.approx(1.0)


def test_counts_form_matches_positions_and_ignores_borders() -> None:
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    rows, cols = np.zeros(31), np.zeros(41)
    rows[[0, 10, 30]] = [5, 2, 5]  # 0 and 30 are the image borders
    cols[[16, 32]] = [1, 3]
    expected = seam_score(image, [10], [16, 32], edge_weights_rows=[2], edge_weights_cols=[1, 3])
    assert seam_score_from_counts(image, rows, cols) == pytest.approx(expected)


def test_errors() -> None:
    image = np.zeros((6, 10), np.float32)
    with pytest.raises(ValueError, match="no edge"):
        seam_score(image, [], [0, 10, 99])
    with pytest.raises(ValueError, match="no interior"):
        seam_score(image, [], list(range(1, 10)))
    with pytest.raises(ValueError, match="lengths"):
        seam_score_from_counts(image, np.zeros(6), np.zeros(11))
    with pytest.raises(ValueError, match="weights"):
        seam_score(image, [], [3], edge_weights_cols=[1, 2])


def test_banded_energy_matches_direct_computation() -> None:
    image = np.random.default_rng(1).random((1100, 7)).astype(np.float32)  # spans three 512-row chunks
    rows, cols = boundary_energy(image)
    np.testing.assert_allclose(rows[1:-1], (np.diff(image, axis=0) ** 2).sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(cols[1:-1], (np.diff(image, axis=1) ** 2).sum(axis=0), rtol=1e-5)
    assert rows[0] == rows[-1] == cols[0] == cols[-1] == 0


def test_a_lattice_compares_edges_with_other_lattice_lines_only() -> None:
    # every 8th column is a strong line (like a latent grid); edges at two of them are no seams
    image = np.full((32, 64), 100.0)
    image[:, ::8] += 20 * (np.arange(32)[:, None] % 2)
    edges = [16, 48]
    assert seam_score(image, [], edges) > 4  # against all boundaries the grid looks like a seam
    assert seam_score(image, [], edges, lattice=8) == pytest.approx(1.0)
