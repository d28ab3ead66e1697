"""``histosynth export``: copy a synthetic dataset for sharing, behind the near-copy gate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(
    synthetic: Path = typer.Argument(..., help="Synthetic dataset folder to export."),
    real: Path = typer.Option(..., "--real", help="Real manifest with the generator's training split and a held-out split."),
    out: Path = typer.Option(..., "--out", help="Destination folder (written atomically; an earlier export there "
                             "is replaced, any other non-empty folder refused)."),
    drop_near_copies: bool = typer.Option(False, "--drop-near-copies", help="Leave near copies out instead of refusing."),
    quantile: float = typer.Option(0.01, "--quantile", help="Threshold = this quantile of held-out real tiles' "
                                   "distances to their nearest training tile."),
    train_split: str = typer.Option("train", "--train-split"),
    heldout_split: str = typer.Option("test", "--heldout-split"),
    encoder: str = typer.Option("inception", "--encoder", help="Feature encoder: inception, efficientnet-lite0, histology, pixels."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Export SYNTHETIC to OUT, refusing (exit 2) if any tile is closer to a training tile than
    nearly all new real tiles are; with --drop-near-copies those tiles are left out and counted."""
    from histosynth.checks import check_device
    from histosynth.cli.progress import progress_bar
    from histosynth.data.manifest import load_manifest
    from histosynth.encoders.features import prepare_cache_dir
    from histosynth.encoders.registry import get_encoder
    from histosynth.evaluation.audit import load_synthetic
    from histosynth.evaluation.gate import export_gated
    from histosynth.io import prepare_output_dir

    check_device(device)
    # the export replaces OUT as a whole: only an earlier export (export.json) may be there
    prepare_output_dir(out, kind="export", marker="export.json")
    cache = prepare_cache_dir(cache)
    manifest = load_manifest(real)
    total = len(load_synthetic(synthetic).records) + len(manifest.select_split(train_split).records) + \
        len(manifest.select_split(heldout_split).records)
    enc = get_encoder(encoder, device)
    with progress_bar(f"export gate: {encoder} features", total) as advance:
        result = export_gated(synthetic, real, out, enc, drop_near_copies, quantile, train_split, heldout_split,
                              cache, advance)
    typer.echo(f"exported {result.exported} tiles to {out}; dropped {len(result.dropped_ids)} near copies "
               f"(threshold {result.threshold:.4g}, {encoder})")
