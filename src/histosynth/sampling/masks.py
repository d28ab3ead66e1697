"""Procedural gland-like masks with a controllable foreground fraction.

A stand-in until the mask generation model exists: smoothed white noise thresholded at the
quantile that gives exactly the requested foreground fraction yields blobby, gland-like regions.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def procedural_mask(size: int, foreground: float, seed: int, blob_scale: float = 0.08) -> np.ndarray:
    """A binary uint8 mask (0 background, 1 foreground) with ``foreground`` of its pixels set."""
    if not 0.0 <= foreground <= 1.0:
        raise ValueError("foreground fraction must be within [0, 1]")
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal((size, size)), sigma=blob_scale * size, mode="wrap")
    if foreground <= 0:
        return np.zeros((size, size), np.uint8)
    threshold = np.quantile(field, 1.0 - foreground)
    return (field >= threshold).astype(np.uint8)
