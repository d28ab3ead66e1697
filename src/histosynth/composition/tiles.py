"""Spot tiles cut from a slide image: a square of ``diameter`` level-0 pixels centred on each spot.

Plain images (JPEG, PNG, ...: the full-resolution H&E of legacy ST and Visium) are read whole with
Pillow; pyramidal slides go through :func:`histosynth.data.slides.open.open_slide`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from histosynth.errors import InputError

PLAIN_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
#: Pixel limit of a plain whole-slide image (the tile limit is far too low for one): 2 gigapixels, ~6 GB RGB,
#: or ``$HISTOSYNTH_MAX_IMAGE_PIXELS`` when that is higher.
PLAIN_SLIDE_MAX_PIXELS = 2_000_000_000


class SlideImage:
    """Level-0 regions of a plain image or a slide; use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None
        self._reader = None
        if self.path.suffix.lower() in PLAIN_SUFFIXES:
            from histosynth.data.images import max_image_pixels, read_rgb

            self._array = read_rgb(self.path, max_pixels=max(max_image_pixels(), PLAIN_SLIDE_MAX_PIXELS))
            self.height, self.width = self._array.shape[:2]
        else:
            from histosynth.data.slides.open import open_slide

            self._reader = open_slide(self.path)
            self.width, self.height = self._reader.level_dimensions[0]

    def region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 ``h x w x 3`` at level-0 pixel ``(x, y)`` (the caller keeps it inside the image)."""
        if self._array is not None:
            return self._array[y : y + h, x : x + w]
        assert self._reader is not None
        return self._reader.read_region(0, x, y, w, h)

    def thumbnail(self, max_side: int = 2000) -> tuple[np.ndarray, float]:
        """A downsampled copy (longest side at most ``max_side``) and its scale (thumbnail px per level-0 px)."""
        from PIL import Image

        scale = min(1.0, max_side / max(self.width, self.height))
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        if self._array is not None:
            small = Image.fromarray(self._array).resize(size, Image.Resampling.BOX)
            return np.asarray(small), scale
        from histosynth.data.slides.tissue import read_thumbnail

        assert self._reader is not None
        target = 1 / scale  # level-0 pixels per thumbnail pixel
        downsamples = self._reader.level_downsamples
        level = max((i for i, ds in enumerate(downsamples) if ds <= target * 1.001), key=lambda i: downsamples[i],
                    default=0)
        thumb = read_thumbnail(self._reader, level, max(1, int(target / downsamples[level])))
        return np.asarray(Image.fromarray(thumb).resize(size, Image.Resampling.BOX)), scale

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._array = None

    def __enter__(self) -> SlideImage:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of a plain image (header only) or a slide's level 0."""
    path = Path(path)
    if path.suffix.lower() in PLAIN_SUFFIXES:
        from histosynth.data.images import image_size as header_size

        return header_size(path)
    with SlideImage(path) as slide:
        return slide.width, slide.height


def tile_boxes(coords: np.ndarray, diameter: float) -> np.ndarray:
    """Integer boxes ``(x0, y0, side)`` (N, 3) of the squares of ``diameter`` px centred on ``coords``."""
    side = max(1, int(round(diameter)))
    x0 = np.floor(coords[:, 0] - side / 2 + 0.5).astype(np.int64)
    y0 = np.floor(coords[:, 1] - side / 2 + 0.5).astype(np.int64)
    return np.column_stack([x0, y0, np.full(len(coords), side, np.int64)])


def check_inside(width: int, height: int, coords: np.ndarray, diameter: float, ids: Sequence[str],
                 path: str | Path) -> None:
    """One-line error when any spot's square leaves the ``width`` x ``height`` image."""
    if diameter <= 0:
        raise InputError(f"tile diameter must be positive, got {diameter:g}")
    boxes = tile_boxes(coords, diameter)
    outside = np.flatnonzero((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 0] + boxes[:, 2] > width)
                             | (boxes[:, 1] + boxes[:, 2] > height))
    if outside.size:
        i = int(outside[0])
        raise InputError(f"{outside.size} spot(s) lie outside the {width}x{height} image at diameter {diameter:g} px "
                         f"(first: {ids[i]} at x={coords[i, 0]:g}, y={coords[i, 1]:g}); check the coordinates' "
                         "scale (full-resolution pixels) or drop those spots", path)


def cut_tiles(image: SlideImage, coords: np.ndarray, diameter: float, size: int) -> Iterator[np.ndarray]:
    """Tiles (``size`` x ``size`` x 3 uint8) of the squares of ``diameter`` px centred on ``coords``."""
    from PIL import Image

    for x0, y0, side in tile_boxes(coords, diameter):
        region = image.region(int(x0), int(y0), int(side), int(side))
        if side != size:
            region = np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize((size, size),
                                                                                    Image.Resampling.LANCZOS))
        yield np.ascontiguousarray(region)


def grid_centres(image: SlideImage, step: float, diameter: float, min_tissue: float = 0.5) -> np.ndarray:
    """Centres (N, 2) of a regular grid every ``step`` px whose ``diameter`` squares are mostly tissue.

    Tissue is Otsu's threshold on the saturation of a thumbnail (as in slide tiling); a square is kept
    when at least ``min_tissue`` of its thumbnail pixels are tissue.
    """
    from histosynth.data.slides.tissue import otsu_threshold, saturation

    if step <= 0 or diameter <= 0:
        raise InputError(f"grid step and diameter must be positive (got {step:g}, {diameter:g})")
    side = max(1, int(round(diameter)))
    if side > min(image.width, image.height):
        raise InputError(f"tile diameter {side} px exceeds the {image.width}x{image.height} image", image.path)
    xs = np.arange(side / 2, image.width - side / 2 + 1e-9, step)
    ys = np.arange(side / 2, image.height - side / 2 + 1e-9, step)
    centres = np.array([(x, y) for y in ys for x in xs], dtype=np.float64).reshape(-1, 2)
    thumb, scale = image.thumbnail()
    sat = saturation(thumb)
    tissue = (sat > otsu_threshold(sat)).astype(np.int64)
    integral = np.pad(tissue.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    keep = []
    for x0, y0, s in tile_boxes(centres, diameter):
        c0, r0 = int(x0 * scale), int(y0 * scale)
        c1, r1 = max(c0 + 1, int(round((x0 + s) * scale))), max(r0 + 1, int(round((y0 + s) * scale)))
        c1, r1 = min(c1, tissue.shape[1]), min(r1, tissue.shape[0])
        area = max(1, (c1 - c0) * (r1 - r0))
        inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
        keep.append(inside / area >= min_tissue)
    centres = centres[np.asarray(keep, dtype=bool)] if keep else centres
    if len(centres) == 0:
        raise InputError(f"no grid square of {side} px every {step:g} px is at least {min_tissue:.0%} tissue",
                         image.path)
    return centres
