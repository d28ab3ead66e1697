"""``histosynth report``: one self-contained HTML page from a synthetic folder's audit results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def report(
    synthetic: Path = typer.Argument(..., help="Synthetic dataset folder (its audit/ holds the evaluate results)."),
    real: Path = typer.Option(..., "--real", help="Real manifest (train split shown beside the synthetic tiles)."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default SYNTHETIC/audit/report.html)."),
    per_label: int = typer.Option(6, "--per-label", min=1, help="Tiles shown per class, real and synthetic."),
    gallery: int = typer.Option(8, "--gallery", min=0, help="Synthetic tiles shown with their nearest training tiles."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache (for the feature-space projection)."),
) -> None:
    """An overall verdict (classifier two-sample test, precision/recall vs the real floor), sample grids
    with mask outlines, real vs synthetic per class, fidelity tables with real floors, a feature-space
    projection, the nearest-neighbour gallery and downstream plots, in one HTML file."""
    from histosynth.encoders.features import prepare_cache_dir
    from histosynth.io import prepare_output_file
    from histosynth.report.html import write_report

    prepare_output_file(out or synthetic / "audit" / "report.html")
    path = write_report(synthetic, real, out, per_label, gallery, prepare_cache_dir(cache, read_only=True))
    typer.echo(f"wrote {path}")
