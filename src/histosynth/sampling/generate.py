"""Generate a synthetic dataset folder: the engine behind ``histosynth sample``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.data.images import read_mask
from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.masks import procedural_mask
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.sampling.writer import SyntheticDatasetWriter, SyntheticRow


@dataclass
class MaskSource:
    """Masks from a folder of PNGs (cycled in name order), or procedural blobs."""

    folder: Path | None = None
    foreground: float = 0.6

    def describe(self) -> str:
        return str(self.folder) if self.folder else f"procedural(fg={self.foreground})"


@dataclass
class GenerationResult:
    folder: Path
    written: int
    skipped_existing: int


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _load_folder_masks(folder: Path, sampler: TileSampler) -> list[tuple[str, np.ndarray]]:
    if not folder.is_dir():
        raise InputError("mask folder not found", folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise InputError("mask folder holds no .png masks", folder)
    masks = []
    for path in files:
        mask = read_mask(path, sampler.model.classes)
        sampler.check_mask(mask, str(path))
        masks.append((path.name, mask))
    return masks


def generate_dataset(
    model: LatentDiffusionModel,
    out: str | Path,
    n: int,
    labels: list[int],
    masks: MaskSource,
    settings: SamplingSettings,
    seed: int = 0,
    device: str = "cpu",
    on_tile: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Write ``n`` tiles per label in ``labels``; tile ``i`` of a label uses seed ``seed + i``.

    Ids are ``<label-slug>_<i>``, so a rerun skips finished tiles and produces the same set.
    """
    sampler = TileSampler(model, settings, device)
    folder_masks = _load_folder_masks(masks.folder, sampler) if masks.folder else None
    writer = SyntheticDatasetWriter(out)
    identity = model.identity
    done = writer.done_ids()
    jobs, order = [], []
    for label in labels:
        name = model.classes.labels[label]
        for i in range(n):
            tile_id = f"{_slug(name)}_{i:06d}"
            order.append(tile_id)
            if tile_id in done:
                continue
            if folder_masks:
                mask_name, mask = folder_masks[i % len(folder_masks)]
                source = f"{masks.folder.name}/{mask_name}"
            else:
                mask, source = procedural_mask(sampler.tile_size, masks.foreground, seed + i), masks.describe()
            jobs.append((tile_id, label, mask, seed + i, source))
    skipped = len(order) - len(jobs)
    if on_tile is not None and skipped:
        on_tile(skipped)
    for start in range(0, len(jobs), settings.batch_size):
        batch = jobs[start:start + settings.batch_size]
        images = sampler.sample([j[1] for j in batch], [j[2] for j in batch], [j[3] for j in batch])
        for (tile_id, label, mask, tile_seed, source), image in zip(batch, images):
            row = SyntheticRow(
                id=tile_id, image=f"images/{tile_id}.png", mask=f"masks/{tile_id}.png",
                label=model.classes.labels[label], split="synthetic", seed=tile_seed, model=identity,
                sampler=settings.sampler, steps=settings.steps, guidance=settings.guidance, mask_source=source,
            )
            writer.add(row, image, mask)
        writer.flush(order)
        if on_tile is not None:
            on_tile(len(batch))
    writer.flush(order)
    model.classes.save(Path(out) / "classes.json")
    return GenerationResult(Path(out), len(jobs), skipped)
