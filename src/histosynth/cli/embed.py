"""``histosynth embed`` and ``histosynth prototypes``: tile embeddings and morphological prototypes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def embed(
    source: Path = typer.Argument(..., help="Tile manifest (CSV, or a folder with images/) or a whole-slide image."),
    encoder: str = typer.Option("histology", "--encoder", help="Encoder name. Default: histology, the shipped "
                                "self-supervised H&E encoder (256-d, no download, no --weights). Others: inception, "
                                "efficientnet-lite0, pixels, or a foundation encoder (uni, uni2-h, conch, phikon, "
                                "virchow, virchow2) with --weights."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local weights file (or Hugging Face snapshot "
                                           "folder) of a foundation encoder; a histology encoder folder. Never "
                                           "downloaded."),
    out: Path = typer.Option(..., "--out", help="Output table: .h5ad (AnnData) or .parquet."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Tiles per forward pass."),
    device: str = typer.Option("cpu", "--device", help="torch device (cpu, cuda, ...)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder (default $HISTOSYNTH_CACHE "
                                         "or ~/.cache/histosynth); a rerun after a kill resumes from it."),
    tiles: Optional[Path] = typer.Option(None, "--tiles", help="Slides: folder for the cut tiles "
                                         "(default: OUT's name + _tiles)."),
    tile_size: int = typer.Option(224, "--tile-size", min=16, help="Slides: tile edge in pixels."),
    level: Optional[int] = typer.Option(None, "--level", min=0, help="Slides: pyramid level to read."),
    mpp: Optional[float] = typer.Option(None, "--mpp", min=0.01, help="Slides: target microns per pixel."),
    min_tissue: float = typer.Option(0.5, "--min-tissue", min=0.0, max=1.0, help="Slides: keep tiles with at "
                                     "least this tissue fraction."),
) -> None:
    """Embed every tile of a manifest (or of a slide, cut with the tiler first) into one table:
    obs = manifest rows (tile path, label, case, split; x, y for slides), X = embeddings, uns = encoder
    identity. Features are cached by file hash; rerunning a killed command resumes."""
    from histosynth.checks import check_device
    from histosynth.cli.progress import late_bar  # bars appear once the input has been read and checked
    from histosynth.data.slides.outputs import check_out_dir
    from histosynth.embeddings.embed import (
        default_tiles_dir,
        embed_manifest,
        is_manifest_source,
        tile_for_embedding,
    )
    from histosynth.embeddings.store import check_suffix
    from histosynth.encoders.features import prepare_cache_dir
    from histosynth.encoders.registry import get_encoder
    from histosynth.io import prepare_output_file

    check_suffix(out)
    prepare_output_file(out)
    check_device(device)
    cache = prepare_cache_dir(cache)
    if not source.exists():
        from histosynth.errors import InputError

        raise InputError("no such manifest, folder or slide", source)
    if not is_manifest_source(source):
        check_out_dir(tiles or default_tiles_dir(out))
    enc = get_encoder(encoder, device, weights)  # a wrong name or missing weights fails before any tiling
    extra_obs, extra_uns, manifest = None, None, source
    if not is_manifest_source(source):
        from histosynth.data.slides.tiler import TilingOptions

        options = TilingOptions(tile_size=tile_size, level=level, mpp=mpp, min_tissue=min_tissue)
        tiles = tiles or default_tiles_dir(out)
        with late_bar("tiling") as (on_total, advance):
            cut = tile_for_embedding(source, tiles, options, on_tile=advance, on_total=on_total)
        manifest, extra_obs, extra_uns = cut.manifest, {"case": cut.case}, cut.facts
    with late_bar(f"embedding ({enc.name})") as (on_total, advance):
        result = embed_manifest(manifest, enc, out, cache, batch_size, on_batch=advance,
                                extra_obs=extra_obs, extra_uns=extra_uns, on_total=on_total)
    typer.echo(f"{result.tiles} tiles x {result.dim} ({result.identity}) -> {result.path}")


def prototypes(
    embeddings: Path = typer.Argument(..., help="Embeddings table from `histosynth embed` (.h5ad or .parquet)."),
    group_by: Optional[str] = typer.Option("label", "--group-by", help="obs column whose groups get their own "
                                           "prototypes (e.g. label); 'none', or a column that is empty "
                                           "everywhere (a slide's labels), = one group 'all'."),
    out: Path = typer.Option(..., "--out", help="Output folder: prototypes.h5ad, prototypes.json, elbow.svg, "
                             "contact_sheet.png, per-case maps or histograms."),
    k_max: int = typer.Option(10, "--k-max", min=1, help="Largest k tried per group; k is the WCSS elbow."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help="Fix k for every group (no elbow search)."),
    max_fit: int = typer.Option(5000, "--max-fit", min=10, help="k-means is fitted on a uniform subsample of at "
                                "most this many tiles per group; every tile is then assigned."),
    seed: int = typer.Option(0, "--seed", help="Subsample and k-means seed."),
    nearest: int = typer.Option(8, "--nearest", min=1, help="Tiles per prototype on the contact sheet."),
    case_column: str = typer.Option("case", "--case-column", help="obs column naming the case (per-case maps "
                                    "for slides, prototype histograms for tile manifests)."),
) -> None:
    """Per-group k-means prototypes of tile embeddings, k at the elbow of the within-cluster sum of squares;
    writes every tile's prototype ("<group>/<k>") and id, the elbow curves, a contact sheet of each
    prototype's nearest tiles, and per-case prototype maps (slides) or histograms (tile manifests)."""
    from histosynth.cli.progress import late_bar
    from histosynth.embeddings.build import PrototypeSettings, build_prototypes
    from histosynth.io import prepare_output_dir

    prepare_output_dir(out, kind="prototypes")
    grouping = None if group_by is None or group_by.lower() in ("", "none") else group_by
    settings = PrototypeSettings(grouping, k_max, k, max_fit, seed, nearest, case_column)
    with late_bar("prototypes") as (on_total, advance):  # drawn once the input has been read and checked
        result = build_prototypes(embeddings, out, settings, on_step=advance, on_total=on_total)
    for curve in result.prototypes.curves:
        typer.echo(f"{curve.group}: k={curve.k} ({curve.n_tiles} tiles, {curve.n_fit} fitted)")
    typer.echo(f"{len(result.prototypes.names)} prototypes -> {result.folder}")
