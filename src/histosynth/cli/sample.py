"""``histosynth sample``: generate image + mask pairs into a synthetic dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def sample(
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder (default: the shipped EBHI model)."),
    n: int = typer.Option(8, "--n", min=1, help="Tiles per class."),
    label: list[str] = typer.Option(
        ["all"], "--label", help="Class name or id; repeat for several; 'all' for every class."),
    masks: str = typer.Option("procedural", "--masks", help="Folder of PNG masks (class values), or 'procedural'."),
    foreground: float = typer.Option(0.6, min=0.0, max=1.0, help="Foreground fraction of procedural masks."),
    steps: int = typer.Option(50, min=1, help="Sampling steps."),
    guidance: float = typer.Option(2.0, min=0.0, help="Classifier-free guidance weight (0 = unconditional, 1 = conditional)."),
    sampler: str = typer.Option("ddim", help="ddim or dpm (DPM-Solver++ 2M)."),
    seed: int = typer.Option(0, help="Base seed: tile i of a class uses seed + i."),
    batch_size: int = typer.Option(16, min=1, help="Tiles per batch."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, masks/, manifest.csv (rerun resumes)."),
) -> None:
    """Generate class- and mask-conditioned tiles with their masks (resumes an interrupted run)."""
    from histosynth.cli.progress import progress_bar
    from histosynth.errors import InputError
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.generate import MaskSource, generate_dataset
    from histosynth.sampling.sampler import SamplingSettings
    from histosynth.weights import default_model_dir

    if sampler not in ("ddim", "dpm"):
        raise InputError(f"unknown sampler {sampler!r}; choose ddim or dpm")
    loaded = LatentDiffusionModel.load(model or default_model_dir())
    classes = loaded.classes
    ids = list(range(len(classes.labels))) if label == ["all"] else [classes.resolve_label(x) for x in label]
    source = MaskSource(None, foreground) if masks == "procedural" else MaskSource(Path(masks), foreground)
    settings = SamplingSettings(steps=steps, guidance=guidance, sampler=sampler, batch_size=batch_size)
    with progress_bar("sampling", n * len(ids)) as advance:
        result = generate_dataset(loaded, out, n, ids, source, settings, seed=seed, device=device, on_tile=advance)
    typer.echo(f"{result.written} tiles written, {result.skipped_existing} already there -> {result.folder}")
