"""Contact sheets: a grid of tiles per class, each beside its mask outline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from histosynth.io import save_png

OUTLINE_COLOUR = np.array([0, 230, 60], dtype=np.uint8)


def outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the boundaries between mask classes drawn in green (2 px)."""
    edges = np.zeros(mask.shape, bool)
    for class_id in np.unique(mask):
        region = mask == class_id
        edges |= region & ~ndimage.binary_erosion(region, iterations=2)
    out = image.copy()
    interior = np.zeros_like(edges)
    interior[2:-2, 2:-2] = True
    out[edges & interior] = OUTLINE_COLOUR
    return out


def write_contact_sheet(
    path: str | Path, rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[np.ndarray]]], tile: int = 160
) -> Path:
    """Write a PNG: one row per (title, images, masks); each cell shows the tile with its mask outline."""
    from PIL import Image, ImageDraw

    columns = max(len(images) for _, images, _ in rows)
    label_width, gap = 150, 4
    width = label_width + columns * (tile + gap)
    height = len(rows) * (tile + gap) + gap
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (title, images, masks) in enumerate(rows):
        y = gap + r * (tile + gap)
        draw.text((6, y + tile // 2 - 6), title, fill=(0, 0, 0))
        for c, (image, mask) in enumerate(zip(images, masks)):
            cell = Image.fromarray(outline(image, mask)).resize((tile, tile), Image.BILINEAR)
            sheet.paste(cell, (label_width + c * (tile + gap), y))
    save_png(path, np.asarray(sheet))
    return Path(path)
