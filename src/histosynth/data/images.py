"""Reading tile images and masks with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histosynth.data.classes import ClassList
from histosynth.errors import InputError


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB; ``InputError`` if missing or not a readable image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError("image file not found", path)
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"corrupt or unreadable image ({type(error).__name__})", path) from None


def read_raw_mask(path: str | Path) -> np.ndarray:
    """Read a mask as an HxW uint8 array of raw pixel values (no class mapping)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError("mask file not found", path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "P", "1", "I", "I;16"):
                image = image.convert("L")
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"corrupt or unreadable mask ({type(error).__name__})", path) from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim != 2 or array.max(initial=0) > 255 or array.min(initial=0) < 0:
        raise InputError("mask must be a single-channel 8-bit image", path)
    return array.astype(np.uint8)


def mask_to_class_ids(raw: np.ndarray, classes: ClassList, path: str | Path | None = None) -> np.ndarray:
    """Map raw mask values to class ids; ``InputError`` listing values the class list lacks."""
    lookup = np.full(256, 255, dtype=np.uint8)
    for value, class_id in classes.mask_values.items():
        lookup[value] = class_id
    ids = lookup[raw]
    if (ids == 255).any():
        bad = sorted(int(v) for v in np.unique(raw[ids == 255]))
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        allowed = ", ".join(map(str, sorted(classes.mask_values)))
        raise InputError(f"mask values {shown} are outside the declared classes (allowed: {allowed})", path)
    return ids


def read_mask(path: str | Path, classes: ClassList) -> np.ndarray:
    """Read a mask and map it to uint8 class ids through ``classes``."""
    return mask_to_class_ids(read_raw_mask(path), classes, path)
