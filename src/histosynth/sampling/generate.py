"""Generate a synthetic dataset folder: the engine behind ``histosynth sample``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.data.images import read_mask
from histosynth.checks import check_seed
from histosynth.errors import InputError
from histosynth.io import check_free_space
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.masks import (
    MASK_MODEL_GUIDANCE,
    MASK_MODEL_STEPS,
    generate_tile_masks,
    mask_model_identity,
    procedural_mask,
)
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.sampling.writer import SyntheticDatasetWriter, SyntheticRow, check_resume, read_finished


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


MAX_PER_CLASS = 1_000_000  # ids carry six digits


def check_request(n: int, seed: int) -> None:
    """Tile counts and seeds the plan can hold; one line otherwise."""
    if not 1 <= n <= MAX_PER_CLASS:
        raise InputError(f"--n {n} is out of range: 1 to {MAX_PER_CLASS:,} tiles per class")
    check_seed(seed, n)


def tile_bytes(tile_size: int) -> int:
    """Disk space one tile may take: its image and mask uncompressed (PNG seldom beats that by much on H&E)."""
    return tile_size * tile_size * 4


def plan_rows(model: LatentDiffusionModel, n: int, labels: list[int], masks: MaskSource, settings: SamplingSettings,
              seed: int = 0, mask_names: list[str] | None = None) -> list[tuple[SyntheticRow, int]]:
    """Every tile of the request with its class id, in manifest order: tile ``i`` of a label has id
    ``<label-slug>_<i:06d>``, seed ``seed + i`` and (folder masks) mask ``mask_names[i % len]``."""
    generated = masks.describe(mask_model_identity(model) if masks.kind == "model" else "")
    identity = model.identity
    planned = []
    for label in labels:
        name = model.classes.labels[label]
        for i in range(n):
            tile_id = f"{_slug(name)}_{i:06d}"
            source = f"{masks.folder.name}/{mask_names[i % len(mask_names)]}" if masks.folder and mask_names \
                else generated
            planned.append((SyntheticRow(
                id=tile_id, image=f"images/{tile_id}.png", mask=f"masks/{tile_id}.png", label=name, split="synthetic",
                seed=seed + i, model=identity, sampler=settings.sampler, steps=settings.steps,
                guidance=settings.guidance_record, mask_source=source), label))
    return planned


def check_plan(out: str | Path, planned: list[SyntheticRow], tile_size: int) -> dict[str, SyntheticRow]:
    """The finished rows of ``out`` once every check has passed, with nothing written: the folder is
    writable and ours, its tiles come from the same model and settings, and the missing tiles fit on disk."""
    finished = read_finished(out, tile_size)
    check_resume(out, finished, planned)
    pending = sum(row.id not in finished for row in planned)
    check_free_space(out, pending * tile_bytes(tile_size), f"writing {pending:,} tiles of {tile_size} px")
    return finished


def check_output(model: LatentDiffusionModel, out: str | Path, n: int, labels: list[int], masks: MaskSource,
                 settings: SamplingSettings, seed: int = 0, device: str = "cpu") -> None:
    """Every check :func:`generate_dataset` makes before it writes, for callers that want them done before
    a progress bar starts, or that write with another engine (Ray)."""
    check_request(n, seed)
    sampler = TileSampler(model, settings, device)
    names = [name for name, _ in _load_folder_masks(masks.folder, sampler)] if masks.folder else None
    check_plan(out, [row for row, _ in plan_rows(model, n, labels, masks, settings, seed, names)], sampler.tile_size)


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

    Ids are ``<label-slug>_<i>``, so a rerun skips finished tiles and produces the same set. Bad
    requests, an ``out`` that is not ours, and a rerun with another model or settings fail in one
    line before anything is written (see :func:`check_plan`).
    """
    check_request(n, seed)
    sampler = TileSampler(model, settings, device)
    folder_masks = _load_folder_masks(masks.folder, sampler) if masks.folder else None
    from_model = masks.kind == "model"
    planned = plan_rows(model, n, labels, masks, settings, seed, [m[0] for m in folder_masks] if folder_masks else None)
    order = [row.id for row, _ in planned]
    finished = check_plan(out, [row for row, _ in planned], sampler.tile_size)
    writer = SyntheticDatasetWriter(out, sampler.tile_size, rows=finished)
    done = writer.done_ids()
    jobs = []
    for index, (row, label) in enumerate(planned):
        if row.id in done:
            continue
        i = index % n
        if folder_masks:
            mask = folder_masks[i % len(folder_masks)][1]
        elif from_model:  # generated per batch, below: the progress bar moves and memory stays small
            mask = None
        else:
            mask = procedural_mask(sampler.tile_size, masks.foreground, row.seed)
        jobs.append((row, label, mask))
    skipped = len(order) - len(jobs)
    if on_tile is not None and skipped:
        on_tile(skipped)
    for start in range(0, len(jobs), settings.batch_size):
        batch = jobs[start:start + settings.batch_size]
        if from_model:
            generated = masks.model_masks(model, [j[1] for j in batch], [j[0].seed for j in batch], device)
            batch = [(row, label, mask) for (row, label, _), mask in zip(batch, generated)]
        images = sampler.sample([j[1] for j in batch], [j[2] for j in batch], [j[0].seed for j in batch])
        for (row, _, mask), image in zip(batch, images):
            writer.add(row, image, mask)
        writer.flush(order)
        if on_tile is not None:
            on_tile(len(batch))
    writer.flush(order)
    model.classes.save(Path(out) / "classes.json")
    return GenerationResult(Path(out), len(jobs), skipped)
