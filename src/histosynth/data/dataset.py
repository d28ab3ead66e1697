"""A torch dataset over a tile manifest (imports torch; never imported at CLI start-up)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from histosynth.data.images import read_tile
from histosynth.data.manifest import TileManifest
from histosynth.errors import InputError


class TileDataset(Dataset):
    """Tiles of a manifest as dicts of tensors.

    Each item is ``{"image": float 3xHxW in [-1, 1], "label": int, "id": str}`` plus, when
    ``with_mask``, ``"mask"`` (long HxW mask class ids) and ``"mask_known"`` (bool; False and an
    all-zero mask when the tile has no mask). Unlabelled tiles get the class list's null id.
    With ``size``, image (bicubic) and mask (nearest) are resized to ``size`` x ``size``.
    """

    def __init__(self, manifest: TileManifest, size: int | None = None, with_mask: bool = True) -> None:
        if size is not None and size < 1:
            raise InputError(f"tile size must be positive, got {size}")
        self.manifest = manifest
        self.size = size
        self.with_mask = with_mask
        self.label_ids = manifest.label_ids()  # fail early on an unknown label

    def __len__(self) -> int:
        return len(self.manifest.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.manifest.records[index]
        size = (self.size, self.size) if self.size is not None else None
        mask_path = record.mask if self.with_mask else None
        image, mask = read_tile(record.image, mask_path, self.manifest.classes, size, resize=True)
        image_tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).contiguous() / 127.5 - 1.0
        item: dict[str, Any] = {"image": image_tensor, "label": self.label_ids[index], "id": record.id}
        if not self.with_mask:
            return item
        if mask is None:
            item["mask"] = torch.zeros(image.shape[:2], dtype=torch.long)
            item["mask_known"] = False
            return item
        item["mask"] = torch.from_numpy(mask.astype(np.int64))
        item["mask_known"] = True
        return item
