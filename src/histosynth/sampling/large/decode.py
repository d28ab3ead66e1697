"""Decode a large latent (4 x h x w, possibly a memmap) into image row bands, tile by tile.

Three decoders, all fed by a ``DecodeFn`` that maps a batch of latent tiles to uint8 images:

* :func:`hann_decode_bands`: DiffInfinite (appendix F). Tiles of ``T`` latent px lie on four grids,
  offset by 0 or ``T/2`` in y and in x. A tile's pixels are weighted by the periodic Hann window
  ``sin^2(pi (y + 0.5) / P) sin^2(pi (x + 0.5) / P)`` (``P = 8T`` px); a grid shifted by ``P/2`` has
  ``cos^2`` there, so the four weights sum to 1 at every pixel and each tile's rim (where decoders
  make artefacts) gets weight ~0. The latent is padded by ``T/2`` on top/left (reflect; edge for a
  1-px axis), so in image pixels the unshifted grid's tiles start at ``-P/2 + kP`` and the shifted
  grid's at ``kP``; the image border lies at the centre of a tile, never at its rim.
* :func:`naive_decode_bands`: non-overlapping tiles (the seamy baseline).
* :func:`diffusers_tiled_decode`: diffusers ``AutoencoderKL`` tiling (linear cross-fades).

Bands are yielded top to bottom; only a few tile rows are ever held in memory. A ``DecodeFn``
gets a CPU float32 batch: :meth:`LatentDiffusionModel.decode <histosynth.models.pipeline.LatentDiffusionModel.decode>`
moves it to the autoencoder's device.
Note the shipped decoder uses GroupNorm over the whole input, so a tile decoded alone differs from
the whole-image decode by a tile-dependent colour shift: Hann blending hides the seams, it cannot
reproduce the whole decode exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from histosynth.errors import InputError

DecodeFn = Callable[[torch.Tensor], np.ndarray]
FACTOR = 8  # autoencoder downsampling: one latent px is 8x8 image px


def _check(latent: np.ndarray, tile: int, batch_size: int, even: bool) -> None:
    if latent.ndim != 3 or min(latent.shape) < 1:
        raise InputError(f"a latent must be channels x height x width, got shape {latent.shape}")
    if tile < 1 or (even and tile % 2):
        raise InputError(f"tile must be a positive{' even' if even else ''} number of latent px, got {tile}")
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer positions onto ``0..n-1`` by mirror reflection (edge when ``n == 1``)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


def _decode_batched(tiles: Sequence[np.ndarray], decode: DecodeFn, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(tiles), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(tiles[start:start + batch_size]), np.float32))
        yield from decode(batch)


def hann_window(pixels: int) -> np.ndarray:
    """1D periodic Hann window ``sin^2(pi (i + 0.5) / pixels)``; shifted by half it is the complement."""
    return (np.sin(np.pi * (np.arange(pixels) + 0.5) / pixels) ** 2).astype(np.float32)


def _hann_tile_row(latent: np.ndarray, decode: DecodeFn, tile: int, batch_size: int, row_start: int,
                   window: np.ndarray, factor: int) -> np.ndarray:
    """Decode one row of tiles (both x grids) starting at padded latent row ``row_start``; blend in x.

    Returns a float32 strip (8 tile, 8 w, 3) already weighted by the y window.
    """
    _, height, width = latent.shape
    half, size = tile // 2, tile * factor
    rows = np.asarray(latent[:, _reflect(np.arange(row_start, row_start + tile) - half, height), :])
    starts = [offset + k * tile for offset in (0, half) for k in range(-(-(width + half - offset) // tile))]
    tiles = [rows[:, :, _reflect(np.arange(s, s + tile) - half, width)] for s in starts]
    strip = np.zeros((size, width * factor, 3), np.float32)
    for start, image in zip(starts, _decode_batched(tiles, decode, batch_size), strict=True):
        x0 = (start - half) * factor  # image column of this tile's first pixel
        lo, hi = max(x0, 0), min(x0 + size, width * factor)
        strip[:, lo:hi] += image[:, lo - x0:hi - x0].astype(np.float32) * window[lo - x0:hi - x0, None]
    return strip * window[:, None, None]


def hann_float_bands(latent: np.ndarray, decode: DecodeFn, tile: int = 32, batch_size: int = 8,
                     factor: int = FACTOR) -> Iterator[tuple[int, np.ndarray]]:
    """Like :func:`hann_decode_bands` but yields the unrounded float32 blend (for tests and analysis)."""
    _check(latent, tile, batch_size, even=True)
    height = latent.shape[1] * factor
    size, half_px = tile * factor, tile * factor // 2
    window = hann_window(size)
    cache: dict[int, tuple[int, np.ndarray]] = {}  # grid y offset (0 or half) -> (tile row index, strip)

    def strip(offset: int, index: int) -> np.ndarray:
        if offset not in cache or cache[offset][0] != index:
            cache.pop(offset, None)  # free the old row before decoding the next one
            start = offset + index * tile
            cache[offset] = (index, _hann_tile_row(latent, decode, tile, batch_size, start, window, factor))
        return cache[offset][1]

    # Band j spans padded px rows [j P/2, (j+1) P/2): one tile row of each y grid covers it.
    # Band 0 is all padding; image row y is padded row y + P/2.
    band = 1
    while (y0 := (band - 1) * half_px) < height:
        rows = min(half_px, height - y0)
        top0 = band % 2 * half_px  # offset of the band inside the unshifted grid's tile row
        top1 = (band - 1) % 2 * half_px
        out = strip(0, band // 2)[top0:top0 + rows] + strip(tile // 2, (band - 1) // 2)[top1:top1 + rows]
        yield y0, out
        band += 1


def hann_decode_bands(latent: np.ndarray, decode: DecodeFn, tile: int = 32, batch_size: int = 8,
                      factor: int = FACTOR) -> Iterator[tuple[int, np.ndarray]]:
    """Seamless decode: four half-tile-shifted tile grids blended with Hann windows.

    Yields ``(y0, band)`` with uint8 bands (rows, 8w, 3), top to bottom, covering the 8h x 8w image
    exactly once. Each tile is decoded once; memory holds two tile rows of float pixels.
    """
    for y0, band in hann_float_bands(latent, decode, tile, batch_size, factor):
        yield y0, np.clip(np.rint(band), 0, 255).astype(np.uint8)


def naive_decode_bands(latent: np.ndarray, decode: DecodeFn, tile: int = 32, batch_size: int = 8,
                       factor: int = FACTOR) -> Iterator[tuple[int, np.ndarray]]:
    """Non-overlapping tiles (edge-padded at bottom/right, then cropped), one band per tile row."""
    _check(latent, tile, batch_size, even=False)
    _, height, width = latent.shape
    size = tile * factor
    for top in range(0, height, tile):
        rows = np.asarray(latent[:, np.minimum(np.arange(top, top + tile), height - 1), :])
        starts = list(range(0, width, tile))
        tiles = [rows[:, :, np.minimum(np.arange(s, s + tile), width - 1)] for s in starts]
        band = np.concatenate(list(_decode_batched(tiles, decode, batch_size)), axis=1)
        yield top * factor, np.ascontiguousarray(band[:min(size, (height - top) * factor), :width * factor])


def collect_bands(bands: Iterable[tuple[int, np.ndarray]], height: int, width: int) -> np.ndarray:
    """Assemble ``(y0, band)`` pairs into one (height, width, 3) array; they must tile it exactly."""
    image: np.ndarray | None = None
    next_row = 0
    for y0, band in bands:
        if y0 != next_row or band.shape[1] != width:
            raise ValueError(f"band at row {y0} ({band.shape}) does not continue the image at row {next_row}")
        if image is None:
            image = np.empty((height, width, *band.shape[2:]), band.dtype)
        image[y0:y0 + len(band)] = band
        next_row = y0 + len(band)
    if image is None or next_row != height:
        raise ValueError(f"bands cover {next_row} of {height} rows")
    return image


@torch.inference_mode()
def diffusers_tiled_decode(autoencoder: Any, latent: np.ndarray, scaling_factor: float,
                           latent_shift: Sequence[float], tile: int = 32, overlap: float = 0.25,
                           factor: int = FACTOR) -> np.ndarray:
    """Baseline: diffusers ``AutoencoderKL`` tiled decoding of a scaled latent -> uint8 (8h, 8w, 3).

    Tiles are ``tile`` latent px (``8 tile`` image px) with stride ``int(tile (1 - overlap))``; each
    tile is cross-faded linearly over ``int(8 tile overlap)`` px into the one above/left. The model's
    tiling attributes are restored afterwards. Not streaming: it holds the whole image.
    """
    _check(latent, tile, 1, even=False)
    if not 0 <= overlap < 1 or int(tile * (1 - overlap)) < 1:
        raise InputError(f"overlap must be in [0, 1) and leave a stride of at least 1, got {overlap}")
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")
    saved = {name: getattr(autoencoder, name) for name in names}
    parameter = next(autoencoder.parameters())
    from histosynth.models.autoencoder import AutoencoderConfig

    scaling = AutoencoderConfig(scaling_factor=scaling_factor, latent_shift=tuple(latent_shift))
    z = scaling.unscale(torch.from_numpy(np.asarray(latent, np.float32))[None])
    try:
        autoencoder.enable_tiling()
        autoencoder.tile_latent_min_size, autoencoder.tile_sample_min_size = tile, tile * factor
        autoencoder.tile_overlap_factor = overlap
        image = autoencoder.decode(z.to(parameter.device, parameter.dtype)).sample.float()
    finally:
        for name, value in saved.items():
            setattr(autoencoder, name, value)
    image = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return image[0].permute(1, 2, 0).cpu().numpy()


def _diffusers_axis_edges(pixels: int, tile: int, overlap: float, factor: int) -> list[int]:
    latent = -(-pixels // factor)
    stride, blend = int(tile * (1 - overlap)), int(tile * factor * overlap)
    sizes = [min(tile, latent - s) * factor for s in range(0, latent, stride)]
    edges: list[int] = []
    for i in range(1, len(sizes)):
        start = i * stride * factor
        edges += [start, start + min(blend, sizes[i], sizes[i - 1])]
    return edges


def decoder_edges(name: str, height: int, width: int, tile: int,
                  overlap: float = 0.25, factor: int = FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boundaries (rows, cols) where a decoder's tiles have edges inside an image of height x width px.

    Boundary ``p`` lies between pixel ``p - 1`` and ``p``; ``tile`` is in latent px (``P = 8 tile``).
    ``"hann"``: every ``P/2`` px (the edges of all four grids; the unshifted grid starts at ``-P/2``).
    ``"naive"``: multiples of ``P``. ``"diffusers"``: for each tile after the first, where its
    cross-fade starts (``i * 8 * stride``) and ends (where the previous tile stops); none when the
    latent fits in one tile, since diffusers then decodes it whole.
    """
    def axis(pixels: int) -> np.ndarray:
        if name == "hann":
            step = tile * factor // 2
        elif name == "naive":
            step = tile * factor
        elif name == "diffusers":
            if max(height, width) <= tile * factor:
                return np.zeros(0, np.int64)
            return np.array(sorted({e for e in _diffusers_axis_edges(pixels, tile, overlap, factor) if 0 < e < pixels}),
                            np.int64)
        else:
            raise InputError(f"unknown decoder {name!r}; choose hann, naive or diffusers")
        return np.arange(step, pixels, step, dtype=np.int64)

    return axis(height), axis(width)
