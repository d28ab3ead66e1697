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
from histosynth.sampling.masks import (
    MASK_MODEL_GUIDANCE,
    MASK_MODEL_STEPS,
    generate_tile_masks,
    mask_model_identity,
    procedural_mask,
)
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.sampling.writer import SyntheticDatasetWriter, SyntheticRow


@dataclass
class MaskSource:
    """Masks from a folder of PNGs (cycled in name order), procedural blobs, or the model folder's mask model.

    With ``model=True`` tile ``i`` of a label gets the mask the mask model generates for (label, its seed
    ``seed + i``) with ``model_steps`` DDIM levels and guidance ``model_guidance``.
    """

    folder: Path | None = None
    foreground: float = 0.6
    model: bool = False
    model_steps: int = MASK_MODEL_STEPS
    model_guidance: float = MASK_MODEL_GUIDANCE

    @property
    def kind(self) -> str:
        return "folder" if self.folder else "model" if self.model else "procedural"

    def describe(self, mask_model: str = "") -> str:
        """The manifest's ``mask_source`` for generated masks (``mask_model``: :func:`mask_model_identity`)."""
        if self.folder:
            return str(self.folder)
        if self.model:
            return f"mask_model({mask_model},steps={self.model_steps},guidance={self.model_guidance:g})"
        return f"procedural(fg={self.foreground})"

    def model_masks(self, model: LatentDiffusionModel, labels: list[int], seeds: list[int],
                    device: str = "cpu") -> np.ndarray:
        """The mask model's masks for (label, seed) pairs (each independent of the others)."""
        return generate_tile_masks(model, labels, seeds, self.model_steps, self.model_guidance, device)


def choose_mask_source(model: LatentDiffusionModel, choice: str | None, foreground: float = 0.6,
                       model_steps: int = MASK_MODEL_STEPS) -> tuple[MaskSource, str | None]:
    """The mask source for ``--masks`` ``choice`` (``model``, ``procedural``, a folder, or None = default).

    The default is the mask model when the folder has one, else procedural masks; the second value is
    then a note saying so (None otherwise). An explicit ``model`` without a mask model is a one-line error.
    """
    from histosynth.sampling.masks import require_mask_model

    if choice is None:
        if model.mask_model is not None:
            return MaskSource(None, foreground, model=True, model_steps=model_steps), None
        return MaskSource(None, foreground), (f"note: {model.folder.name} has no mask_model/; "
                                              f"using procedural masks (foreground {foreground:g})")
    if choice == "model":
        require_mask_model(model)
        return MaskSource(None, foreground, model=True, model_steps=model_steps), None
    if choice == "procedural":
        return MaskSource(None, foreground), None
    return MaskSource(Path(choice), foreground), None


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
    """Write ``n`` tiles per label in ``labels``; tile ``i`` of a label uses seed ``seed + i``
    (for its noise and, with the mask-model source, for its mask).

    Ids are ``<label-slug>_<i>``, so a rerun skips finished tiles and produces the same set.
    """
    sampler = TileSampler(model, settings, device)
    folder_masks = _load_folder_masks(masks.folder, sampler) if masks.folder else None
    from_model = masks.kind == "model"
    generated_source = masks.describe(mask_model_identity(model) if from_model else "")
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
            elif from_model:  # generated per batch, below: the progress bar moves and memory stays small
                mask, source = None, generated_source
            else:
                mask, source = procedural_mask(sampler.tile_size, masks.foreground, seed + i), generated_source
            jobs.append((tile_id, label, mask, seed + i, source))
    skipped = len(order) - len(jobs)
    if on_tile is not None and skipped:
        on_tile(skipped)
    for start in range(0, len(jobs), settings.batch_size):
        batch = jobs[start:start + settings.batch_size]
        if from_model:
            generated = masks.model_masks(model, [j[1] for j in batch], [j[3] for j in batch], device)
            batch = [(*job[:2], mask, *job[3:]) for job, mask in zip(batch, generated)]
        images = sampler.sample([j[1] for j in batch], [j[2] for j in batch], [j[3] for j in batch])
        for (tile_id, label, mask, tile_seed, source), image in zip(batch, images):
            row = SyntheticRow(
                id=tile_id, image=f"images/{tile_id}.png", mask=f"masks/{tile_id}.png",
                label=model.classes.labels[label], split="synthetic", seed=tile_seed, model=identity,
                sampler=settings.sampler, steps=settings.steps, guidance=settings.guidance_record, mask_source=source,
            )
            writer.add(row, image, mask)
        writer.flush(order)
        if on_tile is not None:
            on_tile(len(batch))
    writer.flush(order)
    model.classes.save(Path(out) / "classes.json")
    return GenerationResult(Path(out), len(jobs), skipped)
