"""Uploaded bytes -> arrays, through the package's one image reader, with one-line errors naming the form field.

Uploads are read by :mod:`histosynth.data.images`, as files are by every command: the same formats,
the same pixel limit (:func:`~histosynth.data.images.max_image_pixels`) and the same messages. Their
header is checked before any pixel is decoded, against that limit, the service's ``max_side`` and the
model's tile size, so an oversized (or decompression-bomb) upload costs nothing; any failure is a
one-line ``InputError`` (HTTP 400), never a server error.
"""

from __future__ import annotations

import base64
import io
from typing import Literal

import numpy as np

from histosynth.data.classes import ClassList
from histosynth.data.images import Size, mask_to_class_ids, read_raw_mask, read_rgb
from histosynth.errors import InputError

MaskEncoding = Literal["ids", "raw"]

#: Mask class colours (RGB), shared with the page so painted and returned masks look alike.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 40, 48), (236, 112, 160), (90, 170, 250), (250, 200, 60), (120, 210, 120),
    (170, 120, 230), (250, 140, 70), (80, 210, 210), (200, 200, 200), (150, 90, 60),
)


def _require_upload(data: bytes, field: str) -> bytes:
    if not data:
        raise InputError("empty upload; choose an image file", field)
    return data


def decode_rgb(data: bytes, field: str, max_side: int, size: Size | None = None) -> np.ndarray:
    """An uploaded image as H x W x 3 uint8 RGB; ``size`` (width, height): the size it must have."""
    return read_rgb(_require_upload(data, field), size, max_side=max_side, name=field)


def decode_mask(data: bytes, field: str, max_side: int, classes: ClassList, encoding: MaskEncoding,
                size: Size | None = None) -> np.ndarray:
    """An uploaded mask as H x W uint8 class ids; ``size`` (width, height): the size it must have.

    ``ids``: pixel values are mask class ids (what the page's painter sends, as grey RGBA); ``raw``: raw
    values mapped through ``classes.mask_values``, like masks on disk (EBHI's 0/255).
    """
    array = read_raw_mask(_require_upload(data, field), size, max_side=max_side, name=field)
    if encoding == "raw":
        return mask_to_class_ids(array, classes, field)
    if array.max(initial=0) >= classes.num_mask_classes:
        raise InputError(f"mask holds class id {int(array.max())} but the model knows "
                         f"{classes.num_mask_classes} mask classes", field)
    return array


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 H x W or H x W x 3 array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(array: np.ndarray) -> str:
    """A uint8 image as a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(array)).decode()


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """Class ids H x W -> RGB with :data:`PALETTE` (ids beyond it cycle)."""
    palette = np.array(PALETTE, dtype=np.uint8)
    return palette[mask.astype(np.int64) % len(palette)]
