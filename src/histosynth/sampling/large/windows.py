"""Window layouts over a large latent: DiffInfinite's random patches, and regular grids for the baselines.

A window is the top-left corner ``(y, x)`` of a ``size`` x ``size`` crop of an ``h`` x ``w`` latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RandomPatchLevel:
    """The windows of one level of random-patch sampling and the pixels each one writes.

    ``claims[i]`` is a boolean ``size`` x ``size`` crop: the pixels window ``i`` advances (those no
    earlier window of this level advanced). Every latent pixel is claimed exactly once.
    """

    windows: list[tuple[int, int]]
    claims: list[np.ndarray]


def random_patch_level(height: int, width: int, size: int, rng: np.random.Generator) -> RandomPatchLevel:
    """Cover every latent pixel once with windows centred on random still-lagging pixels.

    DiffInfinite's sampler picks a window centred (clamped to the image) at a random pixel among
    those with the lowest time state, restores pixels already one level ahead from the stored copy of
    the level, steps the whole window and keeps only the lagging pixels. Since every window thus sees
    the level's stored copy, the windows of a level are independent and can be batched; only the
    order of claims matters, and that is decided here.
    """
    if size > min(height, width):
        raise ValueError(f"window {size} is larger than the {height}x{width} latent")
    lagging = np.ones((height, width), dtype=bool)
    windows: list[tuple[int, int]] = []
    claims: list[np.ndarray] = []
    half = size // 2
    while True:
        candidates = np.flatnonzero(lagging)
        if len(candidates) == 0:
            break
        cy, cx = divmod(int(candidates[rng.integers(len(candidates))]), width)
        y, x = min(max(cy - half, 0), height - size), min(max(cx - half, 0), width - size)
        claim = lagging[y:y + size, x:x + size].copy()
        lagging[y:y + size, x:x + size] = False
        windows.append((y, x))
        claims.append(claim)
    return RandomPatchLevel(windows, claims)


def grid_positions(length: int, size: int, stride: int) -> list[int]:
    """Window starts every ``stride`` along ``length``, the last one flush with the end."""
    if size > length:
        raise ValueError(f"window {size} is larger than the latent side {length}")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def grid_windows(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Row-major windows of a regular grid (the sliding-window and MultiDiffusion layouts)."""
    return [(y, x) for y in grid_positions(height, size, stride) for x in grid_positions(width, size, stride)]


@dataclass
class EdgeCounts:
    """How often a window edge fell on each latent boundary (index b = between pixel b-1 and b)."""

    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> EdgeCounts:
        return cls(np.zeros(height + 1, dtype=np.int64), np.zeros(width + 1, dtype=np.int64))

    def add(self, windows: list[tuple[int, int]], size: int, times: int = 1) -> None:
        for y, x in windows:
            self.rows[[y, y + size]] += times
            self.cols[[x, x + size]] += times
        self.rows[[0, -1]] = 0  # the image border is no seam
        self.cols[[0, -1]] = 0

    def to_pixels(self, factor: int) -> EdgeCounts:
        """The same counts on pixel boundaries of the decoded image (``factor`` px per latent pixel)."""
        rows = np.zeros((len(self.rows) - 1) * factor + 1, dtype=np.int64)
        cols = np.zeros((len(self.cols) - 1) * factor + 1, dtype=np.int64)
        rows[::factor], cols[::factor] = self.rows, self.cols
        return EdgeCounts(rows, cols)
