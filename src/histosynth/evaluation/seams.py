"""Seam visibility: do tile edges look different from any other line of pixel boundaries?

Boundary ``p`` of an axis lies between pixel ``p - 1`` and ``p`` (``1 <= p < n``). For every
boundary we sum the squared luminance differences of the pixel pairs across it. The score is

    sum over edges e of  w_e * S_e  /  sum over edges e of  w_e * n_e * mu_axis(e)

where ``S_e`` is the edge's summed squared difference, ``n_e`` its number of pixel pairs and
``mu_axis`` the mean squared difference per pair over the interior (non-edge) boundaries *of the
same axis*. Normalising per axis keeps anisotropic content (e.g. a horizontal gradient) at 1.0:
1.0 means the edges look like any other boundary, > 1 means visible seams.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_BAND = 512  # rows per chunk, so a 4096 px image never needs a full float copy


def _luminance(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    if rows.ndim == 2:
        return rows
    if rows.ndim == 3 and rows.shape[2] == 3:
        return rows @ LUMA
    if rows.ndim == 3:
        return rows.mean(axis=2)
    raise ValueError(f"an image must be H x W or H x W x C, got shape {rows.shape}")


def boundary_energy(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Summed squared luminance differences across every row boundary (H+1) and column boundary (W+1).

    Entries 0 and n (the image borders) are 0.
    """
    height, width = image.shape[:2]
    rows, cols = np.zeros(height + 1), np.zeros(width + 1)
    previous: np.ndarray | None = None
    for y0 in range(0, height, _BAND):
        lum = _luminance(image[y0:y0 + _BAND])
        if previous is not None:
            rows[y0] = float(np.sum((lum[0] - previous) ** 2, dtype=np.float64))
        rows[y0 + 1:y0 + len(lum)] = np.sum(np.diff(lum, axis=0) ** 2, axis=1, dtype=np.float64)
        cols[1:width] += np.sum(np.diff(lum, axis=1) ** 2, axis=0, dtype=np.float64)
        previous = lum[-1]
    return rows, cols


def seam_score_from_counts(image: np.ndarray, row_counts: np.ndarray, col_counts: np.ndarray,
                           lattice: int = 1) -> float:
    """Seam score with edges given as per-boundary weights (length H+1 and W+1; 0 = interior).

    Entries 0 and H (W) are image borders and are ignored. With ``lattice`` > 1 only boundaries at
    multiples of it count, as edges and as interiors: generated images have structure on the latent
    grid (8 px) and on the mask cells, so window edges (which fall on that grid) are compared with
    other grid lines, not with every pixel boundary. Raises ``ValueError`` when there is no
    weighted edge, or an axis with edges has no interior boundary. Flat interiors give 1.0 if the
    edges are flat too and ``inf`` otherwise, never NaN.
    """
    height, width = image.shape[:2]
    row_counts, col_counts = np.asarray(row_counts, np.float64), np.asarray(col_counts, np.float64)
    if row_counts.shape != (height + 1,) or col_counts.shape != (width + 1,):
        raise ValueError(f"counts must have lengths {height + 1} and {width + 1}, "
                         f"got {row_counts.shape} and {col_counts.shape}")
    if (row_counts < 0).any() or (col_counts < 0).any() or not (np.isfinite(row_counts).all()
                                                                 and np.isfinite(col_counts).all()):
        raise ValueError("edge counts must be finite and non-negative")
    if lattice < 1:
        raise ValueError(f"lattice must be >= 1, got {lattice}")
    if not ((row_counts[1:-1] > 0).any() or (col_counts[1:-1] > 0).any()):
        raise ValueError("no edge boundaries inside the image")
    row_energy, col_energy = boundary_energy(image)
    observed = expected = 0.0
    for counts, energy, pairs in ((row_counts, row_energy, width), (col_counts, col_energy, height)):
        counts, energy = counts[1:-1], energy[1:-1]
        on_lattice = np.arange(1, len(counts) + 1) % lattice == 0
        edges = (counts > 0) & on_lattice
        if not edges.any():
            continue
        interior = on_lattice & ~edges
        if not interior.any():
            raise ValueError("an axis with edges has no interior boundaries to compare with")
        mean_interior = energy[interior].sum() / (interior.sum() * pairs)
        observed += float(np.dot(counts[edges], energy[edges]))
        expected += float(counts[edges].sum() * pairs * mean_interior)
    if expected == 0.0:
        return 1.0 if observed == 0.0 else float("inf")
    return observed / expected


def seam_score(image: np.ndarray, row_edges: Sequence[int] | np.ndarray, col_edges: Sequence[int] | np.ndarray,
               edge_weights_rows: Sequence[float] | np.ndarray | None = None,
               edge_weights_cols: Sequence[float] | np.ndarray | None = None, lattice: int = 1) -> float:
    """Seam score for edges at the given boundary positions (repeats add up; positions outside 1..n-1 are ignored).

    ``edge_weights_*`` (same length as the positions) weight each edge, e.g. by how many tile
    windows had an edge there; the default weight is 1.
    """
    height, width = image.shape[:2]

    def counts(edges: Sequence[int] | np.ndarray, weights: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
        edges = np.asarray(edges, np.int64).ravel()
        weights = np.ones(len(edges)) if weights is None else np.asarray(weights, np.float64).ravel()
        if len(weights) != len(edges):
            raise ValueError(f"{len(weights)} edge weights for {len(edges)} edges")
        inside = (edges > 0) & (edges < n)
        out = np.zeros(n + 1)
        np.add.at(out, edges[inside], weights[inside])
        return out

    return seam_score_from_counts(image, counts(row_edges, edge_weights_rows, height),
                                  counts(col_edges, edge_weights_cols, width), lattice)
