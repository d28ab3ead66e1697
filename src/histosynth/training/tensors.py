"""Tile datasets held in memory as uint8 tensors (EBHI's train split is ~190 MB at 224 px)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from histosynth.data.images import read_tile
from histosynth.data.manifest import TileManifest, TileRecord


@dataclass
class TileTensors:
    """Images (N,3,H,W uint8), masks (N,H,W class ids), which masks are known, labels (null id if none)."""

    images: torch.Tensor
    masks: torch.Tensor
    mask_known: torch.Tensor
    labels: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def load_tile_tensors(
    manifest: TileManifest, size: int, jobs: int = 2, on_item: Callable[[int], None] | None = None,
    resize: bool = False,
) -> TileTensors:
    """Read every tile into memory; every image must be ``size`` x ``size`` px (or, with ``resize``, is resized).

    Bad files (missing, corrupt, oversized, of another size, masks that do not fit) raise one-line
    errors naming the file: the file rules of ``histosynth data validate``.
    """
    classes = manifest.classes

    def read(record: TileRecord) -> tuple[np.ndarray, np.ndarray | None]:
        result = read_tile(record.image, record.mask, classes, (size, size), resize=resize)
        if on_item is not None:
            on_item(1)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        loaded = list(pool.map(read, manifest.records))
    n = len(loaded)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    masks = torch.zeros((n, size, size), dtype=torch.uint8)
    known = torch.zeros(n, dtype=torch.bool)
    for i, (image, mask) in enumerate(loaded):
        images[i] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if mask is not None:
            masks[i] = torch.from_numpy(np.ascontiguousarray(mask))
            known[i] = True
    labels = torch.tensor(manifest.label_ids(), dtype=torch.long)
    return TileTensors(images, masks, known, labels, [r.id for r in manifest.records])


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


