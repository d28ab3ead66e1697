"""Write a large image (and its mask) as a tiled, pyramidal OME-TIFF without holding it in RAM.

Layout (BigTIFF, OME-XML in the first page's description):

* series 0 ``"image"``: RGB uint8, tiled; reduced levels (each half the previous, 2x2 area means)
  in SubIFDs of the level-0 page, down to the first level whose longer side <= ``min_level_size``;
* series 1 ``"mask"`` (optional): uint8 class ids with the same pyramid by nearest neighbour
  (level k == ``mask[::2**k, ::2**k]``).

The image's OME ``Description`` holds JSON ``{"mask_classes": [...], "metadata": {...}}`` (read it
back with :func:`read_ome_metadata`); ``metadata`` is also an OME ``MapAnnotation`` (namespace
``histosynth/metadata``) and the class names a ``MapAnnotation`` of the mask (``histosynth/mask_classes``,
``"0" -> name``), which OMERO and QuPath show. Given ``mpp``, both series carry
``PhysicalSizeX/Y`` in µm per pixel (level 0). Reduced levels are computed block-wise into
temporary memmaps in a ``.<name>.*.tmpdir`` folder beside the output, removed afterwards.

OpenSlide reads such files as "generic-tiff" with one level: it does not follow SubIFDs (the OME
pyramid convention) and ignores the mask page (no reduced-resolution bit). Level 0 reads correctly.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.checks import check_mpp
from histosynth.errors import InputError
from histosynth.io import atomic_path, save_png

OnTile = Callable[[str, int], None]  # (series name, level), called before each tile is written
OUTLINE_COLOUR = (0, 255, 0)
_BAND = 256  # rows of a level processed at once when downsampling


def level_shapes(height: int, width: int, min_level_size: int) -> list[tuple[int, int]]:
    """Pyramid level sizes: halve (rounding up) until the longer side is <= ``min_level_size``."""
    shapes = [(height, width)]
    while max(shapes[-1]) > min_level_size:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def _halve_area(source: np.ndarray, target: np.ndarray) -> None:
    """2x2 area means of ``source`` into ``target`` (ceil size; an odd last row/col averages itself)."""
    height, width = source.shape[:2]
    for y0 in range(0, target.shape[0], _BAND):
        block = np.asarray(source[2 * y0:2 * (y0 + _BAND)], np.float32)
        pad_y, pad_x = len(block) % 2, width % 2
        if pad_y or pad_x:
            block = np.pad(block, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        rows, cols = block.shape[0] // 2, block.shape[1] // 2
        means = block.reshape(rows, 2, cols, 2, -1).mean(axis=(1, 3))
        target[y0:y0 + rows] = np.rint(means).astype(np.uint8)


def _halve_nearest(source: np.ndarray, target: np.ndarray) -> None:
    for y0 in range(0, target.shape[0], _BAND):
        target[y0:y0 + _BAND] = source[2 * y0:2 * (y0 + _BAND):2, ::2]


def _pyramid(base: np.ndarray, shapes: list[tuple[int, int]], folder: Path, name: str) -> list[np.ndarray]:
    levels = [base]
    halve = _halve_area if base.ndim == 3 else _halve_nearest
    for k, shape in enumerate(shapes[1:], start=1):
        level = np.memmap(folder / f"{name}{k}.raw", np.uint8, "w+", shape=(*shape, *base.shape[2:]))
        halve(levels[-1], level)
        levels.append(level)
    return levels


def _tiles(array: np.ndarray, tile: int, on_tile: OnTile | None, series: str, level: int) -> Iterator[np.ndarray]:
    for y in range(0, array.shape[0], tile):
        for x in range(0, array.shape[1], tile):
            if on_tile is not None:
                on_tile(series, level)
            yield np.asarray(array[y:y + tile, x:x + tile])


def _check_inputs(image: np.ndarray, mask: np.ndarray | None, tile: int, mask_classes: list[str] | None,
                  min_level_size: int, metadata: dict[str, str] | None, mpp: float | None, path: Path) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise InputError(f"the image must be H x W x 3 uint8, got {image.shape} {image.dtype}", path)
    if mask is not None and (mask.shape != image.shape[:2] or mask.dtype != np.uint8):
        raise InputError(f"the mask must be {image.shape[0]} x {image.shape[1]} uint8, "
                         f"got {mask.shape} {mask.dtype}", path)
    if tile < 16 or tile % 16:
        raise InputError(f"tile size must be a positive multiple of 16 (a TIFF rule), got {tile}", path)
    check_mpp(mpp, "mpp")
    if min_level_size < 1:
        raise InputError(f"min_level_size must be positive, got {min_level_size}", path)
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InputError("metadata keys and values must be strings", path)
    if mask is not None and mask_classes is not None:
        top = max(int(mask[y:y + _BAND].max()) for y in range(0, mask.shape[0], _BAND))
        if top >= len(mask_classes):
            raise InputError(f"the mask holds class id {top} but only {len(mask_classes)} class names were given",
                             path)


def write_ome_tiff(path: str | Path, image: np.ndarray, mask: np.ndarray | None = None, tile: int = 256,
                   mask_classes: list[str] | None = None, min_level_size: int = 256,
                   metadata: dict[str, str] | None = None, on_tile: OnTile | None = None,
                   compression: str = "zlib", mpp: float | None = None) -> Path:
    """Write ``image`` (H x W x 3 uint8, may be a memmap) and an optional mask as a pyramidal OME-TIFF.

    Tiles are streamed from ``image``/``mask``; the file appears atomically under ``path``. ``mpp``:
    level-0 microns per pixel, written as OME ``PhysicalSizeX/Y`` (omitted when None).
    """
    import tifffile

    path = Path(path)
    _check_inputs(image, mask, tile, mask_classes, min_level_size, metadata, mpp, path)
    shapes = level_shapes(*image.shape[:2], min_level_size)
    description = json.dumps({"mask_classes": mask_classes, "metadata": metadata or {}})
    image_meta: dict[str, Any] = {"Name": "image", "axes": "YXS", "Description": description}
    if metadata:
        image_meta["MapAnnotation"] = {"Namespace": "histosynth/metadata", "Value": dict(metadata)}
    mask_meta: dict[str, Any] = {"Name": "mask", "axes": "YX"}
    if mpp is not None:
        physical = {"PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": mpp, "PhysicalSizeYUnit": "µm"}
        image_meta.update(physical)
        mask_meta.update(physical)
    if mask_classes:
        mask_meta["MapAnnotation"] = {"Namespace": "histosynth/mask_classes",
                                      "Value": {str(i): name for i, name in enumerate(mask_classes)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmpdir", dir=path.parent))
    options = {"tile": (tile, tile), "compression": compression, "maxworkers": 1, "dtype": np.uint8}
    try:
        with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            series = [("image", image, "rgb", image_meta)]
            if mask is not None:
                series.append(("mask", mask, "minisblack", mask_meta))
            for name, base, photometric, meta in series:
                for k, level in enumerate(_pyramid(base, shapes, scratch, name)):
                    extra = {"subifds": len(shapes) - 1, "metadata": meta} if k == 0 else {"subfiletype": 1}
                    tif.write(_tiles(level, tile, on_tile, name, k), shape=level.shape,
                              photometric=photometric, **options, **extra)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def write_overview_png(path: str | Path, image: np.ndarray, mask: np.ndarray | None = None,
                       max_side: int = 1024) -> Path:
    """A PNG at most ``max_side`` px long (integer-factor area means), mask outlines drawn in green."""
    path = Path(path)
    height, width = image.shape[:2]
    factor = max(1, -(-max(height, width) // max_side))
    out = np.empty((-(-height // factor), -(-width // factor), 3), np.uint8)
    step = max(1, _BAND // factor)  # output rows per chunk
    for r0 in range(0, out.shape[0], step):
        block = np.asarray(image[r0 * factor:(r0 + step) * factor], np.float32)
        block = np.pad(block, ((0, -len(block) % factor), (0, -width % factor), (0, 0)), mode="edge")
        rows, cols = block.shape[0] // factor, block.shape[1] // factor
        out[r0:r0 + rows] = np.rint(block.reshape(rows, factor, cols, factor, 3).mean(axis=(1, 3)))
    if mask is not None:
        small = np.asarray(mask[::factor, ::factor])
        edge = np.zeros(small.shape, bool)
        vertical, horizontal = small[1:] != small[:-1], small[:, 1:] != small[:, :-1]
        edge[1:] |= vertical
        edge[:-1] |= vertical
        edge[:, 1:] |= horizontal
        edge[:, :-1] |= horizontal
        out[edge] = OUTLINE_COLOUR
    save_png(path, out)
    return path


def read_ome_levels(path: str | Path) -> dict[str, dict[str, Any]]:
    """For each series (by name): ``{"shapes": [level shapes], "tile": (rows, cols), "dtype": str}``."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            return {series.name or str(i): {"shapes": [tuple(level.shape) for level in series.levels],
                                              "tile": (series.keyframe.tilelength, series.keyframe.tilewidth),
                                              "dtype": str(series.dtype)}
                    for i, series in enumerate(tif.series)}
    except (OSError, tifffile.TiffFileError) as error:
        raise InputError(f"cannot read as TIFF: {error}", path) from error


def read_ome_metadata(path: str | Path) -> dict[str, Any]:
    """``{"mask_classes": [...] or None, "metadata": {...}}`` as stored by :func:`write_ome_tiff`."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
    except (OSError, tifffile.TiffFileError) as error:
        raise InputError(f"cannot read as TIFF: {error}", path) from error
    if not xml:
        raise InputError("not an OME-TIFF", path)
    for element in ET.fromstring(xml).iterfind(".//{*}Image"):
        description = element.find("{*}Description")
        if element.get("Name") == "image" and description is not None and description.text:
            return json.loads(description.text)
    raise InputError("no histosynth metadata in the OME-XML", path)
