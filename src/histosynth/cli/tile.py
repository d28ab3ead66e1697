"""``histosynth data tile``: cut a whole-slide image into tissue tiles."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from histosynth.errors import InputError


@contextlib.contextmanager
def _late_bar(description: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yield ``(on_total, advance)`` for a rich bar on stderr that appears only once the total is
    known, so an error found while opening the slide stays a single line."""
    state: dict[str, Any] = {}

    def on_total(total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
        )
        progress.start()
        state["progress"], state["task"] = progress, progress.add_task(description, total=total)

    def advance(n: int = 1) -> None:
        if "progress" in state:
            state["progress"].advance(state["task"], n)

    try:
        yield on_total, advance
    finally:
        if "progress" in state:
            state["progress"].stop()


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
    from histosynth.data.slides.tiler import TilingOptions, tile_slide

    if level is not None and mpp is not None:
        raise InputError("give either --level or --mpp, not both")
    if overlap >= tile_size:
        raise InputError(f"--overlap {overlap} must be smaller than --tile-size {tile_size}")
    options = TilingOptions(
        tile_size=tile_size, level=level, mpp=mpp, overlap=overlap, min_tissue=min_tissue,
        label=label, split=split,
    )
    with _late_bar("tiling") as (on_total, advance):
        result = tile_slide(slide, out, options, on_tile=advance, on_total=on_total)
    typer.echo(
        f"{result.kept} tissue tiles of {result.candidates} candidates "
        f"({result.skipped_existing} already done, {result.written} written) -> {result.manifest_path}"
    )
