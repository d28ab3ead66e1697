"""Memorisation audit: authenticity, the C_T data-copying test, and a calibrated near-copy gate.

All functions take feature matrices (rows are samples) in one encoder's space.

- Authenticity (Alaa et al. 2022, as computed by DiffInfinite's audit): a synthetic sample is
  *authentic* when its nearest training sample has another training sample closer to it than the
  synthetic one is; the score is the authentic fraction (1 = nothing hugs a training point).
- C_T (Meehan et al. 2020): training features are partitioned into k-means cells; in each cell the
  distances to the nearest training point of held-out real samples and of synthetic samples are
  compared with a z-scored Mann-Whitney U; C_T averages the z-scores over cells holding enough
  synthetic samples, weighted by the cell's share of the held-out set. Strongly negative = data
  copying, strongly positive = underfitting, ~0 = as close to the training set as new real data is.
- Near-copy gate: a synthetic sample is flagged when it lies closer to a training sample than all but
  a ``quantile`` of held-out real samples do (the threshold is that quantile of real test->train
  nearest-neighbour distances).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from histosynth.errors import InputError
from histosynth.evaluation.fidelity import pairwise_distances


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (len(query), k) of the k nearest reference rows, nearest first."""
    d = pairwise_distances(query, reference)
    k = min(k, reference.shape[0])
    idx = np.argpartition(d, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(d, idx, axis=1).argsort(axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    return np.take_along_axis(d, idx, axis=1), idx


def authenticity(train: np.ndarray, synthetic: np.ndarray) -> tuple[float, np.ndarray]:
    """Authentic fraction of ``synthetic`` and the per-sample flags (True = authentic)."""
    if len(train) < 2 or len(synthetic) < 1:
        raise InputError(f"authenticity needs >= 2 training and >= 1 synthetic samples, got {len(train)}, {len(synthetic)}")
    train_d = pairwise_distances(train, train)
    np.fill_diagonal(train_d, np.inf)
    train_nn = train_d.min(1)
    synth_d, synth_idx = nearest_neighbours(synthetic, train)
    authentic = synth_d[:, 0] > train_nn[synth_idx[:, 0]]
    return float(authentic.mean()), authentic


@dataclass
class DataCopyingResult:
    score: float  # C_T
    cells_used: int
    cells: int
    per_cell_z: list[float] = field(default_factory=list)  # NaN where a cell was skipped


def data_copying_ct(
    train: np.ndarray, test: np.ndarray, synthetic: np.ndarray, cells: int = 5,
    min_synthetic_per_cell: int = 20, seed: int = 0,
) -> DataCopyingResult:
    """Meehan et al.'s C_T statistic with ``cells`` k-means cells fitted on the training features."""
    from scipy.stats import mannwhitneyu
    from sklearn.cluster import KMeans

    if len(train) < cells:
        raise InputError(f"C_T needs at least as many training samples as cells ({cells}), got {len(train)}")
    kmeans = KMeans(n_clusters=cells, n_init=10, random_state=seed).fit(train)
    test_cell, synth_cell = kmeans.predict(test), kmeans.predict(synthetic)
    test_dist = nearest_neighbours(test, train)[0][:, 0]
    synth_dist = nearest_neighbours(synthetic, train)[0][:, 0]
    z_scores, weights = [], []
    for cell in range(cells):
        t, s = test_dist[test_cell == cell], synth_dist[synth_cell == cell]
        if len(s) < min_synthetic_per_cell or len(t) == 0:
            z_scores.append(float("nan"))
            continue
        m, n = len(s), len(t)
        u = mannwhitneyu(s, t, alternative="two-sided").statistic  # pairs with synthetic farther than test
        z = (u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12)
        z_scores.append(float(z))
        weights.append(len(t) / len(test))
    used = [z for z in z_scores if not np.isnan(z)]
    score = float(np.average(used, weights=weights)) if used else float("nan")
    return DataCopyingResult(score, len(used), cells, z_scores)


def near_copy_threshold(train: np.ndarray, test: np.ndarray, quantile: float = 0.01) -> float:
    """The ``quantile`` of held-out real samples' distances to their nearest training sample."""
    if not 0 <= quantile < 1:
        raise InputError(f"quantile must be in [0, 1), got {quantile}")
    return float(np.quantile(nearest_neighbours(test, train)[0][:, 0], quantile))


def flag_near_copies(train: np.ndarray, synthetic: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean flags (nearest training distance < threshold) and the distances themselves."""
    distances = nearest_neighbours(synthetic, train)[0][:, 0]
    return distances < threshold, distances


def pixel_signatures(images: np.ndarray, size: int = 32) -> np.ndarray:
    """(N, 8, size*size*3) float vectors of each uint8 NxHxWx3 image under the 8 square symmetries,
    downsampled to ``size`` px, so pixel-space neighbours also catch flipped or rotated copies."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div(255.0)
    x = F.interpolate(x, size=(size, size), mode="area")
    variants = []
    for k in range(8):
        v = torch.rot90(x, k % 4, dims=(-2, -1))
        variants.append((torch.flip(v, dims=(-1,)) if k >= 4 else v).flatten(1))
    return torch.stack(variants, 1).numpy().astype(np.float64)


def pixel_nearest_neighbours(
    synthetic: np.ndarray, train: np.ndarray, k: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest training tiles in pixel space, minimised over the synthetic tile's 8 symmetries.

    ``synthetic`` is (N, 8, D) from :func:`pixel_signatures`, ``train`` is (M, 8, D) (only the
    identity view is used). Distances are RMS pixel differences in [0, 1] units.
    """
    n, views, dim = synthetic.shape
    d = pairwise_distances(synthetic.reshape(n * views, dim), train[:, 0]).reshape(n, views, -1).min(1)
    k = min(k, d.shape[1])
    idx = np.argsort(d, axis=1)[:, :k]
    return np.take_along_axis(d, idx, axis=1) / np.sqrt(dim), idx
