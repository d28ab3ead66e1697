"""Synthetic tiles made from real ones: each takes a real tile's class and mask (and, with ``strength`` < 1, starts
from the tile itself: SDEdit), so a labelled set grows by ``k`` tiles per tile it holds.

The engine behind ``histosynth sample --from-manifest`` and the downstream benchmarks. Tile ``k`` of source tile
``j`` (of ``n`` sources) has id ``<source id>__r<k>`` and seed ``seed + k * n + j``, and its manifest row names
the source (``mask_source`` = ``<split>:<source id>``), which is how the downstream grid pairs synthetic tiles
with the real subset they were made from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.sampling.writer import GenerationResult, SyntheticRow, write_dataset
from histosynth.training.tensors import TileTensors

__all__ = ["generate_variations", "plan_variations"]

#: One planned tile: (its id, index of its source tile in the tensors, its seed).
Variation = tuple[str, int, int]


def plan_variations(tiles: TileTensors, per_tile: int | dict[str, int], seed: int = 0,
                    sources: Sequence[int] | None = None) -> list[Variation]:
    """Tiles ``<id>__r<k>`` for ``k < per_tile`` (one count for all, or by source id) of each source tile
    (``sources``: indices into ``tiles``, default every tile whose mask is known), round by round."""
    if sources is None:
        sources = [j for j in range(len(tiles)) if bool(tiles.mask_known[j])]
    counts = {tiles.ids[j]: per_tile if isinstance(per_tile, int) else per_tile.get(tiles.ids[j], 0) for j in sources}
    rounds = max(counts.values(), default=0)
    return [(f"{tiles.ids[j]}__r{k}", j, seed + k * len(tiles) + j)
            for k in range(rounds) for j in sources if k < counts[tiles.ids[j]]]


def generate_variations(model: LatentDiffusionModel, tiles: TileTensors, planned: Sequence[Variation],
                        settings: SamplingSettings, out: str | Path, device: str = "cpu", source_split: str = "train",
                        on_tile: Callable[[int], None] | None = None) -> GenerationResult:
    """Write (or resume) the planned tiles into ``out``, each conditioned on its source tile's class and mask
    and, at ``settings.strength`` < 1, started from the source tile's own latents.

    ``tiles`` must be at the model's tile size; an unlabelled source gives an unconditional-class tile.
    A resumed folder must hold tiles of the same model and settings (one line otherwise).
    """
    sampler = TileSampler(model, settings, device)
    settings = sampler.settings  # precision resolved
    identity, labels = model.identity, model.classes.labels
    jobs = []
    for tile_id, j, tile_seed in planned:
        label = int(tiles.labels[j])
        row = SyntheticRow.of(tile_id, label=labels[label] if label < len(labels) else "", seed=tile_seed,
                              model=identity, sampler=settings.sampler_record, steps=settings.steps,
                              guidance=settings.guidance_record, mask_source=f"{source_split}:{tiles.ids[j]}")
        jobs.append((row, j))

    def make(batch: list[tuple[SyntheticRow, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        index = [j for _, j in batch]
        masks = [tiles.masks[j].numpy() for j in index]
        references = tiles.images[index].permute(0, 2, 3, 1).numpy() if settings.strength < 1 else None
        images = sampler.sample([int(tiles.labels[j]) for j in index], masks, [row.seed for row, _ in batch],
                                references=references)
        return list(zip(images, masks))

    return write_dataset(out, jobs, make, tile_size=model.tile_size, batch_size=settings.batch_size,
                         classes=model.classes, on_tile=on_tile)
