"""Transfer one appearance onto a folder of target masks, into the synthetic dataset contract.

Each target mask is used for ``rounds`` tiles: round k applies the k-th of the 8 square symmetries to
the mask (flips and rotations, as the seed recommends for diversity) and uses its own seed. With
``select``, only the target masks whose class fractions are closest to the appearance mask's are used
(the seed found transfer works best between similar class distributions). Resumes by tile id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.data.images import read_mask, read_raw_mask
from histosynth.errors import InputError
from histosynth.models.conditioning import dihedral_mask
from histosynth.sampling.transfer.appearance import AppearanceTransfer, fit_appearance
from histosynth.sampling.writer import GenerationResult, SyntheticRow, check_plan, write_dataset


@dataclass
class TransferResult(GenerationResult):
    targets: list[str]


def class_fractions(mask: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes] / mask.size


def select_targets(appearance_mask: np.ndarray, targets: dict[str, np.ndarray], num_classes: int,
                   count: int | None) -> list[str]:
    """Target names ordered by L1 distance of class fractions to the appearance mask; the closest ``count``."""
    reference = class_fractions(appearance_mask, num_classes)
    ordered = sorted(targets, key=lambda name: (float(np.abs(class_fractions(targets[name], num_classes) - reference).sum()),
                                                name))
    return ordered if count is None else ordered[:count]


def transfer_dataset(transfer: AppearanceTransfer, appearance: np.ndarray, appearance_mask: np.ndarray,
                     target_folder: str | Path, out: str | Path, rounds: int = 1, select: int | None = None,
                     label: int | None = None, seed: int = 0, raw_masks: bool = False,
                     on_tile: Callable[[int], None] | None = None,
                     on_total: Callable[[int], None] | None = None) -> TransferResult:
    """Write ``rounds`` transferred tiles per (selected) target mask to ``out`` (images/, masks/, manifest.csv).

    ``raw_masks``: the mask files hold class ids 0..C-1 of their own (any C), not the model's mask values.
    ``on_total`` gets the number of tiles once every input has been checked (before any work).
    """
    classes = transfer.classes
    if classes is None and not raw_masks:
        raise InputError("this model has no mask classes: give masks of class ids 0..C-1 (raw masks) or a class list",
                         target_folder)
    paths = sorted(p for p in Path(target_folder).iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff"))
    if not paths:
        raise InputError("no mask images (.png/.tif) in the target folder", target_folder)
    targets = {p.stem: read_raw_mask(p) if raw_masks else read_mask(p, classes) for p in paths}
    size = transfer.backbone.tile_size
    appearance, appearance_mask = fit_appearance(appearance, appearance_mask, size)
    for path in paths:  # every problem before any work
        height, width = targets[path.stem].shape
        if (height, width) == (size, size):
            continue
        if min(height, width) >= size:  # no windowed transfer exists (`histosynth large` only generates)
            raise InputError(f"target mask is {width}x{height}, larger than the {size}x{size} tile the model works "
                             f"on: transfer makes one tile per mask, so cut it into {size}x{size} tiles first "
                             "(or generate, without transfer, a large image on it with `histosynth large --mask`)",
                             path)
        raise InputError(f"target mask is {width}x{height}, the model works on {size}x{size}", path)
    n_classes = max([int(appearance_mask.max())] + [int(m.max()) for m in targets.values()]) + 1
    names = select_targets(appearance_mask, targets, max(n_classes, classes.num_mask_classes if classes else 0), select)
    for name in names:
        transfer.check(appearance, appearance_mask, targets[name], str(Path(target_folder) / name))
    identity, settings = transfer.backbone.identity, transfer.settings
    label_name = classes.labels[label] if label is not None and classes is not None else ""
    planned = []
    for index, name in enumerate(names):
        for k in range(rounds):
            tile_id, tile_seed = f"{name}_r{k}", seed + index * rounds + k
            row = SyntheticRow.of(tile_id, label=label_name, seed=tile_seed, model=identity,
                                  sampler=f"transfer-{settings.adain}", steps=settings.steps,
                                  guidance=settings.swap_guidance, mask_source=f"target:{name}@d{k % 8}")
            planned.append((row, (str(Path(target_folder) / name), dihedral_mask(targets[name], k))))
    check_plan(out, [row for row, _ in planned], size)  # a rerun with other settings: one line, before the bar
    if on_total is not None:
        on_total(len(planned))

    def make(batch: list[tuple[SyntheticRow, tuple[str, np.ndarray]]]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(transfer.transfer(appearance, appearance_mask, mask, label, row.seed, source), mask)
                for row, (source, mask) in batch]

    result = write_dataset(out, planned, make, tile_size=size, batch_size=1,
                           classes=classes if not raw_masks else None, on_tile=on_tile)
    return TransferResult(result.folder, result.written, result.skipped_existing, names)
