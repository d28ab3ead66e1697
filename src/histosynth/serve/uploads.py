"""Uploaded bytes -> arrays, with limits and one-line errors naming the form field.

Dimensions are checked from the image header before any pixel is decoded, against the service's
``max_side`` and the package's pixel limit (:func:`~histosynth.data.images.max_image_pixels`), so an
oversized (or decompression-bomb) upload costs nothing; only common raster formats are tried, and any
decoder failure is a one-line ``InputError`` (HTTP 400), never a server error.
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import Literal

import numpy as np

from histosynth.data.classes import ClassList
from histosynth.data.images import MAX_PIXELS_ENV, mask_to_class_ids, max_image_pixels
from histosynth.errors import InputError

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "WEBP"})
MaskEncoding = Literal["ids", "raw"]

#: Mask class colours (RGB), shared with the page so painted and returned masks look alike.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 40, 48), (236, 112, 160), (90, 170, 250), (250, 200, 60), (120, 210, 120),
    (170, 120, 230), (250, 140, 70), (80, 210, 210), (200, 200, 200), (150, 90, 60),
)


def _open(data: bytes, field: str, max_side: int):
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("empty upload; choose an image file", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        raise InputError("not an image (send a PNG, JPEG or TIFF file)", field) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"image has too many pixels; at most {max_side} px a side is accepted", field) from None
    except Exception as error:  # noqa: BLE001 -- decoders of untrusted bytes fail in many ways
        raise InputError(f"unreadable image ({type(error).__name__})", field) from None
    if image.format not in ALLOWED_FORMATS:
        raise InputError(f"{image.format} images are not accepted (send a PNG, JPEG or TIFF file)", field)
    width, height = image.size
    if max(width, height) > max_side:
        raise InputError(f"image is {width}x{height}; at most {max_side} px a side is accepted", field)
    if width * height > max_image_pixels():
        raise InputError(f"image is {width}x{height}, above the server's pixel limit ({MAX_PIXELS_ENV})", field)
    try:
        image.load()
    except Exception as error:  # noqa: BLE001
        raise InputError(f"corrupt image ({type(error).__name__})", field) from None
    return image


def _convert(image, mode: str, field: str):
    try:
        return image.convert(mode)
    except Exception as error:  # noqa: BLE001 -- e.g. an exotic mode PIL cannot convert
        raise InputError(f"unsupported image mode {image.mode}", field) from None


def decode_rgb(data: bytes, field: str, max_side: int) -> np.ndarray:
    """An uploaded image as H x W x 3 uint8 RGB."""
    return np.asarray(_convert(_open(data, field, max_side), "RGB", field))


def decode_mask(data: bytes, field: str, max_side: int, classes: ClassList, encoding: MaskEncoding) -> np.ndarray:
    """An uploaded mask as H x W uint8 class ids.

    ``ids``: pixel values are mask class ids (what the page's painter sends); ``raw``: raw values mapped
    through ``classes.mask_values``, like masks on disk (EBHI's 0/255).
    """
    image = _open(data, field, max_side)
    if image.mode not in ("L", "P", "1", "I", "I;16"):
        image = _convert(image, "L", field)  # RGB(A): grey value; the painter's (id, id, id) stays id
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim != 2 or array.max(initial=0) > 255 or array.min(initial=0) < 0:
        raise InputError("mask must be a single-channel 8-bit image", field)
    array = array.astype(np.uint8)
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
