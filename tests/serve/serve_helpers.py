"""PNG and mask helpers for the web-app tests (imported by name; conftest modules shadow each other)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TILE = 32  # tests/tiny_models.py


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_url(url: str) -> np.ndarray:
    import base64

    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def half_mask(size: int = TILE) -> np.ndarray:
    """Class ids: gland (1) on the top half, background below."""
    mask = np.zeros((size, size), np.uint8)
    mask[: size // 2] = 1
    return mask
