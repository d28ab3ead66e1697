"""A torch dataset over a tile manifest (imports torch; never imported at CLI start-up)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from histosynth.data.images import read_mask, read_rgb
from histosynth.data.manifest import TileManifest
from histosynth.errors import InputError


def _resize(array: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    if array.shape[0] == size and array.shape[1] == size:
        return array
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(array).resize((size, size), resample=resample))


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
        try:
            self.label_ids = manifest.label_ids()  # fail early on an unknown label
        except InputError as error:
            raise InputError(str(error), manifest.source) from None

    def __len__(self) -> int:
        return len(self.manifest.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.manifest.records[index]
        image = read_rgb(record.image)
        height, width = image.shape[:2]
        if self.size is not None:
            image = _resize(image, self.size, nearest=False)
        image_tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).contiguous() / 127.5 - 1.0
        item: dict[str, Any] = {"image": image_tensor, "label": self.label_ids[index], "id": record.id}
        if not self.with_mask:
            return item
        if record.mask is None:
            out_h, out_w = (self.size, self.size) if self.size is not None else (height, width)
            item["mask"] = torch.zeros((out_h, out_w), dtype=torch.long)
            item["mask_known"] = False
            return item
        mask = read_mask(record.mask, self.manifest.classes)
        if mask.shape != (height, width):
            raise InputError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but image {record.image.name} is {width}x{height}",
                record.mask,
            )
        if self.size is not None:
            mask = _resize(mask, self.size, nearest=True)
        item["mask"] = torch.from_numpy(mask.astype(np.int64))
        item["mask_known"] = True
        return item
