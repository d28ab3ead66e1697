"""Fidelity metrics between real and synthetic feature sets (rows are samples).

- FID: Fréchet distance between Gaussians fitted to the two sets.
- KID: unbiased MMD^2 with the cubic polynomial kernel, mean +- sd over random subsets (Bińkowski et al. 2018).
- Improved precision / recall: k-NN manifolds (Kynkäänniemi et al. 2019), k = 3 by default.
- Density / coverage: Naeem et al. 2020, same k-NN radii of the real set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from histosynth.errors import InputError


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    from scipy import linalg

    _check_pair(a, b, minimum=2)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(covmean)))


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, sd) over ``subsets`` random subsets of ``min(subset_size, len(a), len(b))`` rows each."""
    _check_pair(a, b, minimum=2)
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), size, replace=False)]
        y = b[rng.choice(len(b), size, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        off_diagonal = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (size * (size - 1))
        values.append(off_diagonal - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def pairwise_distances(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distances (len(a), len(b)), computed in row chunks to bound memory."""
    b_sq = (b**2).sum(1)
    out = np.empty((len(a), len(b)))
    for start in range(0, len(a), chunk):
        x = a[start:start + chunk]
        sq = (x**2).sum(1)[:, None] + b_sq[None, :] - 2 * x @ b.T
        out[start:start + chunk] = np.sqrt(np.maximum(sq, 0))
    return out


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    if len(x) <= k:
        raise InputError(f"k-NN radii need more than k={k} samples, got {len(x)}")
    d = pairwise_distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


@dataclass
class ManifoldMetrics:
    precision: float
    recall: float
    density: float
    coverage: float


def manifold_metrics(real: np.ndarray, synthetic: np.ndarray, k: int = 3) -> ManifoldMetrics:
    """Improved precision/recall and density/coverage of ``synthetic`` against ``real``."""
    _check_pair(real, synthetic, minimum=k + 1)
    real_radii, synth_radii = knn_radii(real, k), knn_radii(synthetic, k)
    d = pairwise_distances(real, synthetic)  # real x synthetic
    inside_real = d <= real_radii[:, None]  # synthetic j inside real i's ball
    precision = inside_real.any(0).mean()
    recall = (d <= synth_radii[None, :]).any(1).mean()
    density = inside_real.sum(0).mean() / k
    coverage = (d.min(1) <= real_radii).mean()
    return ManifoldMetrics(float(precision), float(recall), float(density), float(coverage))


def fidelity_metrics(real: np.ndarray, synthetic: np.ndarray, k: int = 3, kid_subsets: int = 100) -> dict[str, float]:
    """FID, KID (x1000, mean and sd), precision, recall, density and coverage in one dict."""
    kid_mean, kid_sd = kernel_inception_distance(real, synthetic, subsets=kid_subsets)
    return {"fid": frechet_distance(real, synthetic), "kid_x1000": 1000 * kid_mean, "kid_x1000_sd": 1000 * kid_sd,
            **asdict(manifold_metrics(real, synthetic, k))}


def _check_pair(a: np.ndarray, b: np.ndarray, minimum: int) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"feature sets must be 2-D with equal widths, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < minimum:
        raise InputError(f"need at least {minimum} samples per set, got {len(a)} and {len(b)}")
