"""Cut a whole-slide image into tissue tiles: PNGs, a manifest CSV and a metadata-free slide.json.

Layout of ``out_dir``::

    images/<stem>_<L2|mpp0.5>_x<X>_y<Y>.png   one per kept tile (X, Y: level-0 pixels)
    manifest.csv    id,image,mask,label,split,x,y,level,mpp,tissue_fraction
    slide.json      dimensions, levels, mpp, vendor, objective power, tiling and tissue settings

Every file is written atomically. A killed run is resumed by running the same command again:
complete tiles already on disk are kept as they are and only the missing ones are written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from histosynth.data.slides.outputs import SLIDE_JSON, check_out_dir, check_resumable, slide_json, write_manifest
from histosynth.data.slides.open import open_slide
from histosynth.data.slides.reader import SlideReader
from histosynth.data.slides.tissue import detect_tissue
from histosynth.errors import InputError
from histosynth.io import is_complete_png, remove_stale_temporaries, save_png, write_json

MANIFEST_EVERY = 200  # kept tiles between periodic manifest rewrites


@dataclass(frozen=True)
class TilingOptions:
    """What to cut: tile edge and overlap in output pixels, at ``level`` or at ``mpp`` (not both;
    neither means level 0), keeping tiles with tissue fraction >= ``min_tissue``."""

    tile_size: int = 224
    level: int | None = None
    mpp: float | None = None
    overlap: int = 0
    min_tissue: float = 0.5
    label: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        if self.tile_size < 1:
            raise InputError(f"tile size must be positive (got {self.tile_size})")
        if self.level is not None and self.mpp is not None:
            raise InputError("give either --level or --mpp, not both")
        if self.level is not None and self.level < 0:
            raise InputError(f"--level must be >= 0 (got {self.level})")
        if self.mpp is not None and not (math.isfinite(self.mpp) and self.mpp > 0):
            raise InputError(f"--mpp must be a positive number (got {self.mpp})")
        if not 0 <= self.overlap < self.tile_size:
            raise InputError(f"--overlap {self.overlap} must be >= 0 and smaller than --tile-size {self.tile_size}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise InputError(f"--min-tissue must lie in [0, 1] (got {self.min_tissue})")


@dataclass(frozen=True)
class TilingResult:
    """Counts of one run and where its manifest is."""

    kept: int  # tissue tiles in the manifest (written now + reused)
    candidates: int  # grid positions examined
    skipped_existing: int  # kept tiles found complete on disk and not rewritten
    manifest_path: Path
    written: int = 0  # tiles written by this run


@dataclass(frozen=True)
class TileGrid:
    """Tile positions on one level; ``scale`` level pixels per output pixel (1 unless --mpp)."""

    level: int
    scale: float
    output_mpp: float | None
    tag: str  # "L0" or "mpp0.5": part of every tile id
    tile_size: int
    stride: int  # output pixels
    columns: int
    rows: int
    downsample: float  # level-0 pixels per level pixel

    @property
    def read_size(self) -> int:
        """Edge of the region read from ``level`` for one tile (level pixels)."""
        return max(1, round(self.tile_size * self.scale))

    def positions(self) -> Iterator[tuple[int, int]]:
        """Level-pixel top-left corners, row by row."""
        for row in range(self.rows):
            for col in range(self.columns):
                yield round(col * self.stride * self.scale), round(row * self.stride * self.scale)


def plan_grid(reader: SlideReader, options: TilingOptions) -> TileGrid:
    """Choose the level (and resampling) and lay out the grid; bad level/mpp -> InputError."""
    levels = reader.level_dimensions
    if options.mpp is None:
        level = options.level or 0
        if level >= len(levels):
            sizes = ", ".join(f"{i}: {w}x{h}" for i, (w, h) in enumerate(levels))
            raise InputError(f"--level {level} out of range: the slide has levels {sizes}", reader.path)
        scale = 1.0
        output_mpp = reader.mpp * reader.level_downsamples[level] if reader.mpp else None
        tag = f"L{level}"
    else:
        if reader.mpp is None:
            raise InputError("--mpp needs the slide's microns per pixel, and this slide does not record it; use --level", reader.path)
        level_mpps = [reader.mpp * ds for ds in reader.level_downsamples]
        finer = [i for i, m in enumerate(level_mpps) if m <= options.mpp * 1.01]
        if not finer:
            raise InputError(
                f"--mpp {options.mpp:g} is finer than the slide's full resolution ({reader.mpp:.4g} um/px)",
                reader.path,
            )
        level = max(finer, key=lambda i: level_mpps[i])
        scale = options.mpp / level_mpps[level]
        output_mpp = options.mpp
        tag = f"mpp{options.mpp:g}"
    width, height = levels[level]
    out_w, out_h = math.floor(width / scale + 1e-6), math.floor(height / scale + 1e-6)
    stride = options.tile_size - options.overlap

    if min(out_w, out_h) < options.tile_size:
        where, finer = (f"at level {level}", " or a lower --level" if level else "") if options.mpp is None \
            else (f"at {options.mpp:g} um/px", " or a smaller --mpp")
        raise InputError(f"--tile-size {options.tile_size} is larger than the slide {where} ({out_w}x{out_h} px); "
                         f"use a smaller --tile-size{finer}", reader.path)

    def count(extent: int) -> int:
        return (extent - options.tile_size) // stride + 1

    return TileGrid(
        level=level, scale=scale, output_mpp=output_mpp, tag=tag, tile_size=options.tile_size,
        stride=stride, columns=count(out_w), rows=count(out_h), downsample=reader.level_downsamples[level],
    )


def safe_stem(path: Path) -> str:
    """File stem reduced to ``[A-Za-z0-9._-]`` for tile ids."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "slide"


def _read_tile(reader: SlideReader, grid: TileGrid, x: int, y: int) -> np.ndarray:
    from PIL import Image

    size = grid.read_size
    region = reader.read_region(grid.level, x, y, size, size)
    if size != grid.tile_size:
        region = np.asarray(Image.fromarray(region).resize((grid.tile_size,) * 2, Image.Resampling.LANCZOS))
    return region


def tile_slide(
    slide_path: str | Path,
    out_dir: str | Path,
    options: TilingOptions,
    on_tile: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> TilingResult:
    """Cut ``slide_path`` into tissue tiles under ``out_dir`` (resuming a killed run there).

    ``on_total(n)`` is called once with the number of grid positions, ``on_tile(1)`` after each.
    Tiles are read and encoded in this thread: Pillow's PNG encoder holds the GIL, and threads
    measured no faster on the CMU slide.
    Bad input (unreadable slide, level out of range, a tile larger than the slide, no mpp for ``--mpp``,
    an ``out_dir`` that cannot be written, holds someone else's files, or tiles of another slide or
    geometry) raises :class:`InputError` before anything is written; slide data found corrupt midway
    raises it too, leaving the tiles and manifest written so far valid.
    """
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    check_out_dir(out_dir)  # unwritable, a file, or someone else's files: refused before the slide is read
    with open_slide(slide_path) as reader:
        grid = plan_grid(reader, options)
        tissue = detect_tissue(reader, grid.read_size * grid.downsample)
        name = safe_stem(slide_path)
        tiling = {
            **asdict(options), "read_level": grid.level, "output_mpp": grid.output_mpp,
            "level_pixels_per_tile": grid.read_size, "stride": grid.stride, "grid": [grid.columns, grid.rows],
        }
        facts = slide_json(name, reader, tiling, tissue)
        check_resumable(out_dir / SLIDE_JSON, facts)

        images = out_dir / "images"
        images.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)
        remove_stale_temporaries(images)
        write_json(out_dir / SLIDE_JSON, facts)

        manifest_path = out_dir / "manifest.csv"
        if not manifest_path.exists():
            write_manifest(manifest_path, [])  # valid (empty) even if killed before the first batch
        candidates = grid.columns * grid.rows
        if on_total:
            on_total(candidates)
        extent = grid.read_size * grid.downsample  # level-0 pixels
        mpp_text = f"{grid.output_mpp:.6g}" if grid.output_mpp else ""
        rows: list[dict[str, str]] = []
        written = reused = 0
        for x, y in grid.positions():
            x0, y0 = round(x * grid.downsample), round(y * grid.downsample)
            fraction = tissue.fraction(x0, y0, extent, extent)
            if fraction >= options.min_tissue:
                tile_id = f"{name}_{grid.tag}_x{x0:06d}_y{y0:06d}"
                image = images / f"{tile_id}.png"
                if is_complete_png(image, grid.tile_size):
                    reused += 1
                else:
                    save_png(image, _read_tile(reader, grid, x, y))
                    written += 1
                rows.append({
                    "id": tile_id, "image": f"images/{tile_id}.png", "mask": "", "label": options.label,
                    "split": options.split, "x": str(x0), "y": str(y0), "level": str(grid.level),
                    "mpp": mpp_text, "tissue_fraction": f"{fraction:.4f}",
                })
                if len(rows) % MANIFEST_EVERY == 0:  # a killed run leaves a manifest of what is done
                    write_manifest(manifest_path, rows)
            if on_tile:
                on_tile(1)
        write_manifest(manifest_path, rows)
    return TilingResult(
        kept=len(rows), candidates=candidates, skipped_existing=reused, manifest_path=manifest_path, written=written,
    )
