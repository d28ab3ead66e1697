"""Spot embeddings from a frozen encoder, cached on disk and saved chunk by chunk (so a killed run resumes).

Pre-cut tile files are keyed by their file SHA-256 (``encoders.features``); tiles cut from a slide
are keyed by the SHA-256 of their pixels, so the same spot at the same diameter is encoded once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from histosynth.composition.inputs import SpotTable
from histosynth.composition.tiles import SlideImage, check_inside, cut_tiles
from histosynth.encoders.base import FeatureEncoder
from histosynth.encoders.features import image_features
from histosynth.io import VectorCache

#: Spots encoded between two cache saves.
CHUNK = 256


def tile_key(tile: np.ndarray) -> str:
    """Cache key of an in-memory tile: SHA-256 of its shape and pixels."""
    digest = hashlib.sha256(str(tile.shape).encode())
    digest.update(np.ascontiguousarray(tile).tobytes())
    return digest.hexdigest()


def embed_arrays(encoder: FeatureEncoder, tiles: Sequence[np.ndarray], cache: VectorCache | None,
                 batch_size: int = 32, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Features (N, dim) of in-memory tiles; vectors already in ``cache`` are reused, new ones saved."""
    keys = [tile_key(t) for t in tiles]
    known = cache.vectors if cache is not None else {}
    missing = [i for i, k in enumerate(keys) if k not in known]
    if on_batch is not None and len(missing) < len(tiles):
        on_batch(len(tiles) - len(missing))
    if missing:
        computed = encoder.encode((tiles[i] for i in missing), batch_size, on_batch)
        known = {**known, **{keys[i]: v for i, v in zip(missing, computed)}}
        if cache is not None:
            cache.vectors = known
            cache.save()
    if not tiles:
        return np.zeros((0, encoder.dim))
    return np.stack([known[k] for k in keys]).astype(np.float64)


def embed_cut(encoder: FeatureEncoder, image_path: Path, coords: np.ndarray, ids: Sequence[str], diameter: float,
              tile_size: int, cache_dir: str | Path | None, batch_size: int = 32,
              on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Embeddings of tiles cut from one slide image at ``coords`` (checked to lie inside first)."""
    cache = VectorCache(cache_dir, encoder.identity) if cache_dir is not None else None
    parts = []
    with SlideImage(image_path) as image:
        check_inside(image.width, image.height, coords, diameter, ids, image_path)
        for start in range(0, len(coords), CHUNK):
            tiles = list(cut_tiles(image, coords[start : start + CHUNK], diameter, tile_size))
            parts.append(embed_arrays(encoder, tiles, cache, batch_size, on_batch))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim))


def check_spot_tiles(table: SpotTable, diameter: float | None) -> float | None:
    """Before any encoding: every spot's tile must fit in its section's image. Returns the diameter used."""
    from histosynth.composition.tiles import image_size
    from histosynth.errors import InputError

    if table.tiles is not None:
        return diameter
    diameter = diameter or table.diameter
    if diameter is None:
        raise InputError("tiles are cut from the slide image, so their size is needed: give --diameter "
                         "(level-0 pixels)", table.source)
    coords = table.require_coords("cutting tiles")
    for section, path in table.images.items():
        rows = np.flatnonzero(table.sections == section)
        check_inside(*image_size(path), coords[rows], diameter, [table.ids[i] for i in rows], path)
    return diameter


def embed_spots(table: SpotTable, encoder: FeatureEncoder, cache_dir: str | Path | None, *,
                diameter: float | None = None, tile_size: int = 224, batch_size: int = 32,
                on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Embeddings (N, dim) of every spot of ``table``, in row order.

    Tile files are encoded as they are; otherwise tiles of ``diameter`` px (default: the file's
    ``spot_diameter_fullres``) are cut from each section's image and resized to ``tile_size``.
    """
    if table.tiles is not None:
        parts = [image_features(encoder, table.tiles[s : s + CHUNK], cache_dir, batch_size, on_batch)
                 for s in range(0, len(table.tiles), CHUNK)]
        return np.concatenate(parts)
    diameter = check_spot_tiles(table, diameter)
    assert diameter is not None
    coords = table.require_coords("cutting tiles")
    out = np.zeros((len(table), encoder.dim))
    for section, path in table.images.items():
        rows = np.flatnonzero(table.sections == section)
        out[rows] = embed_cut(encoder, path, coords[rows], [table.ids[i] for i in rows], diameter, tile_size,
                              cache_dir, batch_size, on_batch)
    return out


def tile_file_width(table: SpotTable) -> int | None:
    """Width in pixels of the first tile file (the slide pixels a pre-cut tile covers when cut natively)."""
    if not table.tiles:
        return None
    from histosynth.data.images import image_size

    return image_size(table.tiles[0])[0]
