"""The package's one reader of image files (tiles, masks, reference images), with one-line errors.

Every read checks the header before any pixel is decoded: the format (PNG, JPEG, TIFF, BMP, WebP
only), the declared size against a pixel limit (:func:`max_image_pixels`: 50 MP unless the
environment variable ``HISTOSYNTH_MAX_IMAGE_PIXELS`` or a ``max_pixels`` argument says otherwise)
and, when the caller knows them, the expected size and the longest side allowed. Pillow's
process-wide decompression-bomb limit is neither used nor changed. Missing, corrupt, truncated,
oversized or wrong-sized files raise :class:`~histosynth.errors.InputError` naming the file.

A source is a path, or the bytes (or a binary file object) of an image, e.g. a web upload; errors
about bytes name ``name`` (a form field) instead of a file.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

import numpy as np

from histosynth.data.classes import ClassList
from histosynth.errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image

Size = tuple[int, int]  # (width, height)
#: A file path, or an image's bytes / a binary file object holding them (read from its start).
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]

MAX_PIXELS_ENV = "HISTOSYNTH_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
#: Formats read, with the Pillow plugin module of each (nothing else is tried: no EPS, no GIF, ...).
IMAGE_FORMATS = {"PNG": "PngImagePlugin", "JPEG": "JpegImagePlugin", "TIFF": "TiffImagePlugin",
                 "BMP": "BmpImagePlugin", "WEBP": "WebPImagePlugin"}
FORMAT_NAMES = "PNG, JPEG, TIFF, BMP or WebP"
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # more than 8 bits per pixel
_MASK_MODES = ("L", "P", "1", *_WIDE_MODES)
# What Pillow raises on a malformed file (at open or while decoding), besides DecompressionBombError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error,
                  zlib.error)


def max_image_pixels(limit: int | None = None) -> int:
    """The pixel limit of a read: ``limit`` if given, else ``$HISTOSYNTH_MAX_IMAGE_PIXELS``, else 50 MP."""
    if limit is not None:
        return limit
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got {text!r}")
    return value


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g} MP" if pixels >= 1_000_000 else f"{pixels} px"


def size_text(size: Size) -> str:
    """``(width, height)`` as ``WxH``."""
    return f"{size[0]}x{size[1]}"


def _shape_size(array: np.ndarray) -> Size:
    return int(array.shape[1]), int(array.shape[0])


def require_file(path: str | Path, what: str = "image") -> Path:
    """``path`` as a Path; ``InputError`` when it is not an existing file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} path is a folder, not a file", path)
    if not path.is_file():
        raise InputError(f"{what} file not found", path)
    return path


@functools.cache
def _openers() -> tuple[tuple[str, Callable[..., Any], Callable[[bytes], Any] | None], ...]:
    """``(format, factory, accept)`` of each readable format, from Pillow's plugin registry."""
    from PIL import Image

    found = []
    for name, module in IMAGE_FORMATS.items():
        try:
            importlib.import_module(f"PIL.{module}")
        except ImportError:
            continue
        if name in Image.OPEN:
            found.append((name, *Image.OPEN[name]))
    return tuple(found)


def _error_name(source: ImageSource, what: str, name: str | Path | None) -> Path:
    """What an error about ``source`` names: its path, else ``name`` (else ``what``)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    return Path(name if name is not None else what)


def _where(source: ImageSource, what: str, name: str | Path | None) -> tuple[Path, str | IO[bytes]]:
    """What errors name, and what Pillow opens: a checked path, or the bytes as a seekable stream."""
    if isinstance(source, (str, os.PathLike)):
        path = require_file(source, what)
        return path, os.fspath(path)
    where = _error_name(source, what, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return where, io.BytesIO(source)
    if not source.seekable():
        return where, io.BytesIO(source.read())
    return where, source


def _identify(source: ImageSource, what: str, name: str | Path | None) -> tuple[Image, Path]:
    """Open ``source`` lazily (header only) as one of :data:`IMAGE_FORMATS`, without Pillow's global size
    check; returns the image and what errors name.

    This is what ``PIL.Image.open`` does, minus its decompression-bomb check (which reads a
    process-wide setting); the caller applies :func:`max_image_pixels` before decoding.
    """
    where, target = _where(source, what, name)
    try:
        if isinstance(target, str):
            with open(target, "rb") as handle:
                prefix = handle.read(16)
        else:
            target.seek(0)
            prefix = target.read(16)
    except OSError as error:
        raise InputError(f"cannot read {what} ({type(error).__name__})", where) from None
    if not prefix:
        raise InputError(f"corrupt or unreadable {what} (empty file)", where)
    for _name, factory, accept in _openers():
        accepted = accept(prefix) if accept is not None else True
        if not accepted or isinstance(accepted, str):
            continue
        try:
            if isinstance(target, str):
                return factory(target), where  # opens (and on close releases) the file itself
            target.seek(0)
            return factory(target, ""), where
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # not this format after all
        except _DECODE_ERRORS as error:
            raise InputError(f"corrupt or unreadable {what} ({type(error).__name__})", where) from None
    raise InputError(f"corrupt or unreadable {what} (not a {FORMAT_NAMES} file)", where)


@contextlib.contextmanager
def open_image(source: ImageSource, what: str = "image", size: Size | None = None, max_pixels: int | None = None,
               *, max_side: int | None = None, name: str | Path | None = None) -> Iterator[Image]:
    """An image (a file, or bytes named ``name``) opened but not decoded, after its header passed the checks.

    ``size`` (width, height): the size it must have; ``max_pixels``: see :func:`max_image_pixels`;
    ``max_side``: the longest side it may have. Errors while the block decodes it (``load``,
    ``convert``) become ``InputError`` naming the file.
    """
    from PIL import Image as PILImage

    limit = max_image_pixels(max_pixels)
    image, where = _identify(source, what, name)
    try:
        width, height = image.size
        if width * height > limit:
            raise InputError(f"declares {width} x {height} px, above the {_megapixels(limit)} limit; "
                             f"set {MAX_PIXELS_ENV} to raise it", where)
        if max_side is not None and max(width, height) > max_side:
            raise InputError(f"{what} is {width}x{height} px, more than {max_side} px a side", where)
        if size is not None and (width, height) != tuple(size):
            raise InputError(f"{what} is {width}x{height} px, expected {size_text(size)}", where)
        try:
            yield image
        except PILImage.DecompressionBombError as error:  # a TIFF tile or MPO frame beyond Pillow's own limit
            raise InputError(f"{what} too large to decode ({error})", where) from None
        except _DECODE_ERRORS as error:
            raise InputError(f"corrupt or unreadable {what} ({type(error).__name__})", where) from None
    finally:
        image.close()


def image_size(source: ImageSource, what: str = "image", *, name: str | Path | None = None) -> Size:
    """``(width, height)`` from the header alone (no pixel limit: nothing is decoded)."""
    image, _ = _identify(source, what, name)
    try:
        return image.size
    finally:
        image.close()


def _convert(image: Image, mode: str, what: str, where: Path) -> Image:
    """``image.convert(mode)``; a mode Pillow cannot convert is one line (not reported as corruption)."""
    try:
        return image.convert(mode)
    except ValueError:
        raise InputError(f"{what} has mode {image.mode}, which cannot be read as {mode}", where) from None


def read_rgb(source: ImageSource, size: Size | None = None, max_pixels: int | None = None, *,
             max_side: int | None = None, name: str | Path | None = None) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB (alpha dropped); ``InputError`` naming the file if it cannot be.

    ``size`` (width, height): reject an image of another size before decoding it; ``max_side``, ``name``:
    see :func:`open_image`.
    """
    with open_image(source, "image", size, max_pixels, max_side=max_side, name=name) as image:
        where = _error_name(source, "image", name)
        if image.mode in _WIDE_MODES:
            raise InputError(f"image is single-channel with more than 8 bits (mode {image.mode}); "
                             "tiles must be 8-bit RGB", where)
        image.load()
        return np.asarray(_convert(image, "RGB", "image", where))


def read_raw_mask(source: ImageSource, size: Size | None = None, max_pixels: int | None = None, *,
                  max_side: int | None = None, name: str | Path | None = None) -> np.ndarray:
    """Read a mask as an HxW uint8 array of raw pixel values (no class mapping).

    Single-channel masks (8-bit, 16-bit with values up to 255, 1-bit, palette indices) are read as
    stored; an RGB(A) mask must be grey (equal channels) and is read as that grey value.
    ``max_side``, ``name``: see :func:`open_image`.
    """
    where = _error_name(source, "mask", name)
    with open_image(source, "mask", size, max_pixels, max_side=max_side, name=name) as image:
        image.load()
        if image.mode not in _MASK_MODES:
            rgb = np.asarray(_convert(image, "RGB", "mask", where))
            if (rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 0] != rgb[..., 2]).any():
                raise InputError(f"mask is a colour image (mode {image.mode}); save masks as single-channel "
                                 "class values", where)
            return np.ascontiguousarray(rgb[..., 0])
        array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim != 2:
        raise InputError("mask must be a single-channel 8-bit image", where)
    if array.dtype != np.uint8:
        low, high = array.min(initial=0), array.max(initial=0)
        if low < 0 or high > 255 or (array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0)):
            raise InputError(f"mask must be a single-channel 8-bit image (mode {image.mode} holds values "
                             f"{low:g}..{high:g})", where)
    return array.astype(np.uint8)


def undeclared_mask_values(raw: np.ndarray, classes: ClassList) -> tuple[str, str] | None:
    """``(values, allowed)`` as text when ``raw`` holds values that ``classes`` does not declare, else None."""
    present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    bad = [int(v) for v in present if int(v) not in classes.mask_values]
    if not bad:
        return None
    shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
    return shown, ", ".join(map(str, sorted(classes.mask_values)))


def mask_to_class_ids(raw: np.ndarray, classes: ClassList, path: str | Path | None = None) -> np.ndarray:
    """Map raw mask values to class ids; ``InputError`` listing values the class list lacks."""
    undeclared = undeclared_mask_values(raw, classes)
    if undeclared is not None:
        raise InputError(f"mask values {undeclared[0]} are outside the declared classes (allowed: {undeclared[1]})",
                         path)
    lookup = np.zeros(256, dtype=np.uint8)
    for value, class_id in classes.mask_values.items():
        lookup[value] = class_id
    return lookup[raw]


def read_mask(source: ImageSource, classes: ClassList, size: Size | None = None, max_pixels: int | None = None, *,
              max_side: int | None = None, name: str | Path | None = None) -> np.ndarray:
    """Read a mask and map it to uint8 class ids through ``classes``."""
    raw = read_raw_mask(source, size, max_pixels, max_side=max_side, name=name)
    return mask_to_class_ids(raw, classes, _error_name(source, "mask", name))


def pair_mismatch(mask_name: str, mask: np.ndarray, image_name: str, image: np.ndarray) -> str | None:
    """``"<mask_name> is WxH but <image_name> is WxH"`` when a mask and its image differ in size, else None."""
    mask_size, image_size_ = _shape_size(mask), _shape_size(image)
    if mask_size == image_size_:
        return None
    return f"{mask_name} is {size_text(mask_size)} but {image_name} is {size_text(image_size_)}"


def resize_tile(image: np.ndarray, mask: np.ndarray | None, size: Size) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an image (bicubic) and its mask (nearest) to ``size`` (width, height) when they differ."""
    from PIL import Image as PILImage

    if _shape_size(image) != tuple(size):
        image = np.array(PILImage.fromarray(image).resize(size, PILImage.Resampling.BICUBIC))
    if mask is not None and _shape_size(mask) != tuple(size):
        mask = np.array(PILImage.fromarray(mask).resize(size, PILImage.Resampling.NEAREST))
    return image, mask


def read_tile(image_path: str | Path, mask_path: str | Path | None, classes: ClassList, size: Size | None = None,
              resize: bool = False, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A tile's image (HxWx3 RGB) and, with ``mask_path``, its mask as class ids (HxW).

    The mask must be as large as its image. ``size`` (width, height): the size every tile must have;
    an image of another size raises naming the file and its size, unless ``resize`` (then image and
    mask are resized to it, bicubic and nearest).
    """
    image = read_rgb(image_path, None if resize else size, max_pixels)
    if mask_path is None:
        mask = None
    else:
        mask = read_mask(mask_path, classes, max_pixels=max_pixels)
        mismatch = pair_mismatch("mask", mask, f"image {Path(image_path).name}", image)
        if mismatch:
            raise InputError(mismatch, mask_path)
    if resize and size is not None:
        image, mask = resize_tile(image, mask, size)
    return image, mask
