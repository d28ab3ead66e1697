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


def _cover(height: int, width: int, size: int, next_window) -> RandomPatchLevel:
    """Windows from ``next_window(lagging) -> (y, x)`` until every pixel is claimed once, in that order."""
    if size > min(height, width):
        raise ValueError(f"window {size} is larger than the {height}x{width} latent")
    lagging = np.ones((height, width), dtype=bool)
    windows: list[tuple[int, int]] = []
    claims: list[np.ndarray] = []
    while lagging.any():
        y, x = next_window(lagging)
        claim = lagging[y:y + size, x:x + size].copy()
        if not claim.any():
            raise RuntimeError("a window plan chose a window with nothing left to claim")
        lagging[y:y + size, x:x + size] = False
        windows.append((y, x))
        claims.append(claim)
    return RandomPatchLevel(windows, claims)


def _clamped_corner(centre: int, size: int, length: int) -> int:
    return min(max(centre - size // 2, 0), length - size)


def random_patch_level(height: int, width: int, size: int, rng: np.random.Generator) -> RandomPatchLevel:
    """Cover every latent pixel once with windows centred on random still-lagging pixels.

    DiffInfinite's sampler picks a window centred (clamped to the image) at a random pixel among
    those with the lowest time state, restores pixels already one level ahead from the stored copy of
    the level, steps the whole window and keeps only the lagging pixels. Since every window thus sees
    the level's stored copy, the windows of a level are independent and can be batched; only the
    order of claims matters, and that is decided here.
    """
    def pick(lagging: np.ndarray) -> tuple[int, int]:
        candidates = np.flatnonzero(lagging)
        cy, cx = divmod(int(candidates[rng.integers(len(candidates))]), width)
        return _clamped_corner(cy, size, height), _clamped_corner(cx, size, width)

    return _cover(height, width, size, pick)


def greedy_patch_level(height: int, width: int, size: int, rng: np.random.Generator) -> RandomPatchLevel:
    """Like :func:`random_patch_level`, but of the windows centred (clamped) on lagging pixels, each next one
    is one that covers the most lagging pixels (ties drawn at random): fewer windows, the same claims rule."""
    corners_y = np.clip(np.arange(height) - size // 2, 0, height - size)
    corners_x = np.clip(np.arange(width) - size // 2, 0, width - size)

    def pick(lagging: np.ndarray) -> tuple[int, int]:
        table = np.zeros((height + 1, width + 1), dtype=np.int64)  # summed-area table of lagging pixels
        table[1:, 1:] = lagging.cumsum(0).cumsum(1)
        ys, xs = np.nonzero(lagging)
        top, left = corners_y[ys], corners_x[xs]
        covered = (table[top + size, left + size] - table[top, left + size] - table[top + size, left]
                   + table[top, left])
        best = np.flatnonzero(covered == covered.max())
        choice = int(best[rng.integers(len(best))])
        return int(top[choice]), int(left[choice])

    return _cover(height, width, size, pick)


def offset_grid_level(height: int, width: int, size: int, rng: np.random.Generator) -> RandomPatchLevel:
    """Windows of a regular grid with stride ``size``, shifted by a random offset per level (so window edges
    fall elsewhere at every level) and clamped at the border, where clamped windows overlap their
    neighbours; together they cover every pixel, and each claims the pixels no earlier one did."""
    def starts(length: int) -> list[int]:
        offset = int(rng.integers(size))
        return list(dict.fromkeys(min(max(s, 0), length - size) for s in range(-offset, length, size)))

    grid = iter([(y, x) for y in starts(height) for x in starts(width)])
    return _cover(height, width, size, lambda lagging: next(grid))


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
