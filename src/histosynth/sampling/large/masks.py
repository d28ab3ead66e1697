"""Masks for large images: read a user's mask, or generate one with the mask model, clean it, upsample it.

Masks here hold class ids ``0..K-1`` and ``K`` = unknown (no condition: the image model sees zero
fractions there, exactly its training input for an unknown mask).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from histosynth.data.classes import ClassList
from histosynth.sampling.large.samplers import LargeLatentSampler, LargeSamplingSettings


def read_large_mask(path: str | Path, classes: ClassList, width: int, height: int) -> np.ndarray:
    """A mask file (PNG/TIFF, raw values as in the training masks) as class ids; must be ``width`` x ``height``.

    Its size is checked from the header, before decoding; the pixel limit is raised to the image's size.
    """
    from histosynth.data.images import max_image_pixels, read_mask

    return read_mask(path, classes, (width, height), max(max_image_pixels(), width * height))


def clean_mask_cells(probabilities: np.ndarray, unknown: int, min_confidence: float = 0.5,
                     min_region_cells: int = 4) -> np.ndarray:
    """Class map from generated per-class fractions (K x h x w), cleaned as in DiffInfinite.

    The seed's masks carry boundary artefacts (intermediate values where two classes meet); here
    the analogue is a cell whose winning fraction is below ``min_confidence``: it becomes unknown.
    Connected regions smaller than ``min_region_cells`` become unknown too (the seed's min-pooling).
    """
    from skimage.measure import label as connected

    classes = probabilities.argmax(0).astype(np.uint8)
    classes[probabilities.max(0) < min_confidence] = unknown
    for class_id in range(probabilities.shape[0]):
        regions = connected(classes == class_id, connectivity=1)
        sizes = np.bincount(regions.ravel())
        small = sizes < min_region_cells
        small[0] = False
        classes[small[regions]] = unknown
    return classes


def generate_mask_cells(mask_model: torch.nn.Module, label: int, cells_h: int, cells_w: int, settings: LargeSamplingSettings,
                        seed: int, device: str | torch.device = "cpu",
                        on_windows: Callable[[int], None] | None = None) -> np.ndarray:
    """Per-class fractions (K x cells_h x cells_w) from the mask model, by the same large-latent sampler."""
    sampler = LargeLatentSampler(mask_model, settings, device)
    state = sampler.initial_state(cells_h, cells_w, seed)
    empty = np.zeros((0, cells_h, cells_w), dtype=np.float32)
    state = sampler.run(state, label, empty, seed, on_windows=on_windows)
    return np.clip((state.latent + 1) / 2, 0, 1)


def upsample_nearest(cells: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
    """Each cell becomes a ``factor`` x ``factor`` block; cropped to ``height`` x ``width``."""
    return np.repeat(np.repeat(cells, factor, axis=0), factor, axis=1)[:height, :width]


def _bilinear_taps(n_out: int, n_in: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (source - low).astype(np.float32)


def upsample_smooth(probabilities: np.ndarray, cleaned: np.ndarray, factor: int, height: int, width: int,
                    rows_per_block: int = 512) -> np.ndarray:
    """Class map at pixel resolution with smooth boundaries: bilinear fractions, then the winning class.

    The seed upsamples its cleaned low-resolution mask with nearest neighbours, which leaves
    ``factor``-px staircases on every gland outline; here the class fractions are interpolated
    instead, so outlines run between cells. Cells the cleaning marked unknown stay unknown. Works
    in row blocks (memory ~ K x block x width).
    """
    unknown = probabilities.shape[0]
    y_low, y_high, y_weight = _bilinear_taps(height, probabilities.shape[1], factor)
    x_low, x_high, x_weight = _bilinear_taps(width, probabilities.shape[2], factor)
    out = np.empty((height, width), dtype=np.uint8)
    for y0 in range(0, height, rows_per_block):
        rows = slice(y0, min(y0 + rows_per_block, height))
        wy, wx = y_weight[rows][None, :, None], x_weight[None, None, :]
        band = (1 - wy) * probabilities[:, y_low[rows]] + wy * probabilities[:, y_high[rows]]
        band = (1 - wx) * band[:, :, x_low] + wx * band[:, :, x_high]
        classes = band.argmax(0).astype(np.uint8)
        classes[upsample_nearest(cleaned, factor, height, width)[rows] == unknown] = unknown
        out[rows] = classes
    return out


def condition_fractions(mask: np.ndarray, num_classes: int, factor: int, rows_per_block: int = 512) -> np.ndarray:
    """Per-class area fractions of ``factor`` px cells (K x H/f x W/f, float32); unknown pixels count for no class.

    Works block by block so a memory-mapped mask is never loaded whole.
    """
    height, width = mask.shape
    out = np.zeros((num_classes, height // factor, width // factor), dtype=np.float32)
    step = max(factor, rows_per_block - rows_per_block % factor)
    for y in range(0, height, step):
        block = np.asarray(mask[y:y + step])
        cells = block.reshape(block.shape[0] // factor, factor, width // factor, factor)
        for class_id in range(num_classes):
            out[class_id, y // factor:(y + step) // factor] = (cells == class_id).mean(axis=(1, 3))
    return out
