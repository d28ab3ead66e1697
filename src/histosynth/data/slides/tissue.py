"""Tissue detection: Otsu threshold on HSV saturation of a low-resolution thumbnail.

Stained tissue is coloured (saturated); glass, background and the white padding outside a scan
are grey or white. The threshold is Otsu's on the thumbnail's saturation, raised to at least
:data:`SATURATION_FLOOR` so a blank slide (where Otsu would split noise) yields no tissue.
Tile tissue fractions are then measured on this thumbnail mask, not on the full-resolution tile:
one read of a coarse level decides every tile, so background tiles are never read at all and a
resumed run gets exactly the same fractions without reopening tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from histosynth.data.slides.reader import SlideReader

#: Minimum saturation (0-1) called tissue, whatever Otsu says. Glass scans at ~0.01-0.03.
SATURATION_FLOOR = 0.05
#: Thumbnail size bounds (longest side, pixels) and aimed mask pixels along one tile edge.
THUMBNAIL_MIN_SIDE, THUMBNAIL_MAX_SIDE, MASK_PIXELS_PER_TILE = 1024, 4096, 16
_BLOCK_SIDE = 4096  # level pixels read at once while building the thumbnail (bounds memory)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an RGB uint8 image (0 for black)."""
    channels = rgb.astype(np.float32)
    high, low = channels.max(axis=2), channels.min(axis=2)
    return np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0).astype(np.float32)


def otsu_threshold(values: np.ndarray, floor: float = SATURATION_FLOOR) -> float:
    """Otsu's threshold of ``values``, at least ``floor`` (``floor`` for a constant image)."""
    from skimage.filters import threshold_otsu

    if values.size == 0 or float(values.max() - values.min()) < 1e-6:
        return floor
    return max(float(threshold_otsu(values)), floor)


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue mask over the whole slide at ``downsample`` level-0 pixels per mask pixel."""

    mask: np.ndarray
    downsample: tuple[float, float]  # (x, y)
    threshold: float

    def __post_init__(self) -> None:
        padded = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
        padded[1:, 1:] = self.mask.astype(np.int64).cumsum(0).cumsum(1)
        object.__setattr__(self, "_integral", padded)

    @property
    def tissue_fraction(self) -> float:
        """Share of the whole slide called tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction(self, x: float, y: float, width: float, height: float) -> float:
        """Tissue share of the level-0 box ``(x, y, width, height)``: mask pixels whose centres
        fall inside it (the pixel under the box centre when none does); outside the slide counts
        as background."""
        ds_x, ds_y = self.downsample
        cols = self._centres(x / ds_x, (x + width) / ds_x)
        rows = self._centres(y / ds_y, (y + height) / ds_y)
        total = (cols[1] - cols[0]) * (rows[1] - rows[0])
        rows_in = (min(max(rows[0], 0), self.mask.shape[0]), min(max(rows[1], 0), self.mask.shape[0]))
        cols_in = (min(max(cols[0], 0), self.mask.shape[1]), min(max(cols[1], 0), self.mask.shape[1]))
        integral: np.ndarray = self._integral  # type: ignore[attr-defined]
        inside = (
            integral[rows_in[1], cols_in[1]]
            - integral[rows_in[0], cols_in[1]]
            - integral[rows_in[1], cols_in[0]]
            + integral[rows_in[0], cols_in[0]]
        )
        return float(inside) / total if total else 0.0

    @staticmethod
    def _centres(start: float, stop: float) -> tuple[int, int]:
        first, end = math.ceil(start - 0.5), math.ceil(stop - 0.5)
        if end <= first:  # box thinner than a mask pixel: take the pixel under its centre
            first = math.floor((start + stop) / 2)
            end = first + 1
        return first, end


def thumbnail_plan(reader: SlideReader, tile_extent: float) -> tuple[int, int]:
    """Pick ``(level, integer reduction)`` for the thumbnail.

    Aims at :data:`MASK_PIXELS_PER_TILE` mask pixels per tile edge (``tile_extent`` is in level-0
    pixels), within :data:`THUMBNAIL_MIN_SIDE`-:data:`THUMBNAIL_MAX_SIDE` on the longest side.
    """
    longest = max(reader.level_dimensions[0])
    target = min(tile_extent / MASK_PIXELS_PER_TILE, longest / THUMBNAIL_MIN_SIDE)
    target = max(target, longest / THUMBNAIL_MAX_SIDE, 1.0)
    finer = [i for i, ds in enumerate(reader.level_downsamples) if ds <= target * 1.001]
    level = max(finer, key=lambda i: reader.level_downsamples[i]) if finer else 0
    reduction = max(1, int(target / reader.level_downsamples[level] + 1e-6))
    return level, reduction


def read_thumbnail(reader: SlideReader, level: int, reduction: int) -> np.ndarray:
    """The whole of ``level`` shrunk ``reduction`` times (box average), read block by block."""
    from PIL import Image

    width, height = reader.level_dimensions[level]
    out_w, out_h = math.ceil(width / reduction), math.ceil(height / reduction)
    thumbnail = np.full((out_h, out_w, 3), 255, np.uint8)
    block = max(1, _BLOCK_SIDE // reduction) * reduction
    for y in range(0, height, block):
        for x in range(0, width, block):
            w, h = min(block, width - x), min(block, height - y)
            region = reader.read_region(level, x, y, w, h)
            small = np.asarray(Image.fromarray(region).reduce(reduction)) if reduction > 1 else region
            ty, tx = y // reduction, x // reduction
            thumbnail[ty : ty + small.shape[0], tx : tx + small.shape[1]] = small
    return thumbnail


def detect_tissue(reader: SlideReader, tile_extent: float, floor: float = SATURATION_FLOOR) -> TissueMask:
    """Tissue mask of the slide; ``tile_extent`` (level-0 pixels) sets the thumbnail resolution."""
    level, reduction = thumbnail_plan(reader, tile_extent)
    sat = saturation(read_thumbnail(reader, level, reduction))
    threshold = otsu_threshold(sat, floor)
    (width0, height0), (width, height) = reader.level_dimensions[0], reader.level_dimensions[level]
    downsample = (width0 / width * reduction, height0 / height * reduction)
    return TissueMask(mask=sat > threshold, downsample=downsample, threshold=threshold)
