"""Generate a synthetic dataset folder: the engine behind ``histosynth sample``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.checks import check_seed
from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.masks import (
    MASK_MODEL_GUIDANCE,
    MASK_MODEL_STEPS,
    generate_tile_masks,
    load_folder_masks,
    mask_model_identity,
    procedural_mask,
)
from histosynth.sampling.sampler import SamplingSettings, TileSampler, resolve_precision
from histosynth.sampling.writer import GenerationResult, SyntheticRow, check_plan, write_dataset


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


@dataclass(frozen=True)
class TileJob:
    """One planned tile of :func:`generate_dataset`: its manifest row, class id and mask (folder index, or
    None: generated from ``(label, row.seed)`` as the run's mask source says, procedurally or by the mask model)."""

    row: SyntheticRow
    label: int
    mask_index: int | None


def slug(label: str) -> str:
    """A label as an id prefix: lower case, runs of other characters than letters and digits as ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


MAX_PER_CLASS = 1_000_000  # ids carry six digits


def check_request(n: int, seed: int) -> None:
    """Tile counts and seeds the plan can hold; one line otherwise."""
    if not 1 <= n <= MAX_PER_CLASS:
        raise InputError(f"--n {n} is out of range: 1 to {MAX_PER_CLASS:,} tiles per class")
    check_seed(seed, n)


def plan_rows(model: LatentDiffusionModel, n: int, labels: list[int], masks: MaskSource, settings: SamplingSettings,
              seed: int = 0, mask_names: list[str] | None = None) -> list[TileJob]:
    """Every tile of the request, in manifest order: tile ``i`` of a label has id ``<label-slug>_<i:06d>``,
    seed ``seed + i`` and (folder masks) mask ``mask_names[i % len]``. Its pixels and mask depend on
    nothing else, so Ray shards of the plan write the same files."""
    generated = masks.describe(mask_model_identity(model) if masks.kind == "model" else "")
    identity = model.identity
    planned = []
    for label in labels:
        name = model.classes.labels[label]
        for i in range(n):
            index = i % len(mask_names) if masks.folder and mask_names else None
            source = generated if index is None else f"{masks.folder.name}/{mask_names[index]}"
            row = SyntheticRow.of(f"{slug(name)}_{i:06d}", label=name, seed=seed + i, model=identity,
                                  sampler=settings.sampler_record, steps=settings.steps, guidance=settings.guidance_record,
                                  mask_source=source)
            planned.append(TileJob(row, label, index))
    return planned


def tile_maker(sampler: TileSampler, masks: MaskSource,
               folder_masks: list[np.ndarray] | None) -> Callable[[list[tuple[SyntheticRow, TileJob]]], list]:
    """The plain tile maker: a batch of planned tiles -> (image, mask) each, every mask from its own job only."""
    model, size = sampler.model, sampler.tile_size

    def make(batch: list[tuple[SyntheticRow, TileJob]]) -> list[tuple[np.ndarray, np.ndarray]]:
        jobs = [job for _, job in batch]
        if masks.kind == "model":  # one at a time inside: the same mask whatever the batch
            tile_masks = list(masks.model_masks(model, [j.label for j in jobs], [j.row.seed for j in jobs],
                                                sampler.device))
        else:
            tile_masks = [folder_masks[j.mask_index] if folder_masks is not None and j.mask_index is not None
                          else procedural_mask(size, masks.foreground, j.row.seed) for j in jobs]
        images = sampler.sample([j.label for j in jobs], tile_masks, [j.row.seed for j in jobs])
        return list(zip(images, tile_masks))

    return make


def plan_request(model: LatentDiffusionModel, n: int, labels: list[int], masks: MaskSource, settings: SamplingSettings,
                 seed: int) -> tuple[list[TileJob], list[np.ndarray] | None]:
    """The request checked and planned, with the folder masks (read and checked) when masks come from one."""
    check_request(n, seed)
    if masks.folder is None:
        return plan_rows(model, n, labels, masks, settings, seed), None
    named = load_folder_masks(masks.folder, model)
    names, folder_masks = [name for name, _ in named], [mask for _, mask in named]
    return plan_rows(model, n, labels, masks, settings, seed, names), folder_masks


def check_output(model: LatentDiffusionModel, out: str | Path, n: int, labels: list[int], masks: MaskSource,
                 settings: SamplingSettings, seed: int = 0, device: str = "cpu") -> list[TileJob]:
    """Every check :func:`generate_dataset` makes before it writes, for callers that want them done before
    a progress bar starts, or that write with another engine (Ray); returns the plan."""
    planned, _ = plan_request(model, n, labels, masks, resolve_precision(settings, device), seed)
    check_plan(out, [job.row for job in planned], model.tile_size)
    return planned


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
    line before anything is written (see :func:`~histosynth.sampling.writer.check_plan`).
    """
    settings = resolve_precision(settings, device)
    planned, folder_masks = plan_request(model, n, labels, masks, settings, seed)
    sampler = TileSampler(model, settings, device)
    return write_dataset(out, [(job.row, job) for job in planned], tile_maker(sampler, masks, folder_masks),
                         tile_size=model.tile_size, batch_size=settings.batch_size, classes=model.classes,
                         on_tile=on_tile)
