"""``histosynth sample --from-manifest``: synthetic tiles made from each labelled tile of a manifest's split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histosynth.sampling.settings import SamplingSettings


def sample_variations(model: Optional[Path], manifest: Path, split: str, per_tile: int, settings: SamplingSettings,
                      seed: int, device: str, out: Path) -> None:
    """``per_tile`` tiles from each tile of ``split`` that has a mask; resumes into ``out``."""
    from histosynth.checks import check_device, check_seed
    from histosynth.cli.progress import progress_bar
    from histosynth.data.manifest import load_manifest
    from histosynth.errors import InputError
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.variations import generate_variations, plan_variations
    from histosynth.sampling.writer import check_folder
    from histosynth.training.tensors import load_tile_tensors
    from histosynth.weights import default_model_dir

    check_device(device)
    check_folder(out)
    loaded = LatentDiffusionModel.load(model or default_model_dir())
    tiles_m = load_manifest(manifest, classes=loaded.classes).select_split(split)
    with progress_bar("reading tiles", len(tiles_m.records)) as advance:
        tiles = load_tile_tensors(tiles_m, loaded.tile_size, on_item=advance)
    planned = plan_variations(tiles, per_tile, seed)
    if not planned:
        raise InputError(f"no tile of split {split!r} has a mask to condition on", manifest)
    check_seed(seed, max(s for _, _, s in planned) - seed + 1)
    skipped = len(tiles) - len(planned) // per_tile
    if skipped:
        typer.echo(f"note: {skipped} tile(s) of split {split!r} have no mask and are skipped")
    with progress_bar("sampling", len(planned)) as advance:
        result = generate_variations(loaded, tiles, planned, settings, out, device, source_split=split,
                                     on_tile=advance)
    typer.echo(f"{result.written} tiles written, {result.skipped_existing} already there -> {result.folder}")
