"""``histosynth data tile``: cut a whole-slide image into tissue tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histosynth.errors import InputError


def tile(
    slide: Path = typer.Argument(..., help="Whole-slide image (.svs, .tif, .ndpi, ... anything OpenSlide reads)."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, manifest.csv, slide.json."),
    tile_size: int = typer.Option(224, min=16, help="Tile edge in pixels at the chosen level or mpp."),
    level: Optional[int] = typer.Option(None, min=0, help="Pyramid level to read (0 = full resolution)."),
    mpp: Optional[float] = typer.Option(None, min=0.01, help="Target microns per pixel (resamples as needed)."),
    overlap: int = typer.Option(0, min=0, help="Overlap between neighbouring tiles, in output pixels."),
    min_tissue: float = typer.Option(0.5, min=0.0, max=1.0, help="Keep tiles with at least this tissue fraction."),
    label: str = typer.Option("", help="Label written for every tile in the manifest."),
    split: str = typer.Option("", help="Split written for every tile in the manifest."),
) -> None:
    """Cut a slide into tissue tiles (PNG + manifest); resumes after a kill; strips identifying metadata.

    Tissue: HSV saturation above Otsu's threshold, on a thumbnail; a tile is kept when it is at least --min-tissue tissue.

    Rerun the same command to resume; tiles already on disk are kept.
    """
    from histosynth.cli.progress import late_bar
    from histosynth.data.slides.tiler import TilingOptions, tile_slide

    if level is not None and mpp is not None:
        raise InputError("give either --level or --mpp, not both")
    if overlap >= tile_size:
        raise InputError(f"--overlap {overlap} must be smaller than --tile-size {tile_size}")
    options = TilingOptions(
        tile_size=tile_size, level=level, mpp=mpp, overlap=overlap, min_tissue=min_tissue,
        label=label, split=split,
    )
    with late_bar("tiling") as (on_total, advance):
        result = tile_slide(slide, out, options, on_tile=advance, on_total=on_total)
    typer.echo(
        f"{result.kept} tissue tiles of {result.candidates} candidates "
        f"({result.skipped_existing} already done, {result.written} written) -> {result.manifest_path}"
    )
