"""Group-aware splitting and subsampling of tile records (no case in two splits).

Tiles are grouped by a column (``case`` by default: tiles of one patient or biopsy). Each group
goes whole into one split; groups are stratified by their majority label so every split holds
every class in about the requested share. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from histosynth.data.manifest import STANDARD_COLUMNS, TileRecord
from histosynth.errors import InputError

SPLIT_NAMES = ("train", "val", "test")
Task = Literal["segmentation", "classification"]


def group_of(record: TileRecord, group_key: str) -> str:
    """The group a record belongs to; a record with an empty group cell is its own group."""
    value = getattr(record, group_key) if group_key in STANDARD_COLUMNS else record.extra.get(group_key)
    return str(value) if value not in (None, "") else f"\0{record.id}"


def _groups(records: Sequence[TileRecord], group_key: str) -> dict[str, list[TileRecord]]:
    if group_key not in STANDARD_COLUMNS and not any(group_key in r.extra for r in records):
        raise InputError(f"the manifest has no {group_key!r} column to group tiles by")
    groups: dict[str, list[TileRecord]] = {}
    for record in records:
        groups.setdefault(group_of(record, group_key), []).append(record)
    return groups


def _strata(groups: dict[str, list[TileRecord]], stratify_by_label: bool) -> dict[str, list[str]]:
    """Group names per stratum (the group's most common label; ties by name), sorted by name."""
    strata: dict[str, list[str]] = {}
    for name in sorted(groups):
        if stratify_by_label:
            counts = Counter(r.label or "" for r in groups[name])
            label = min(counts, key=lambda lab: (-counts[lab], lab))
        else:
            label = ""
        strata.setdefault(label, []).append(name)
    return strata


def case_split(
    records: Sequence[TileRecord],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    group_key: str = "case",
    stratify_by_label: bool = True,
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> dict[str, str]:
    """Assign each record id a split name so that no group spans two splits.

    Within each label stratum, groups are shuffled (seeded), ordered largest first, and each
    goes to the split furthest below its target tile count. Returns ``{id: split}``.
    """
    if len(fractions) != len(names):
        raise InputError(f"{len(fractions)} fractions given for {len(names)} splits ({', '.join(names)})")
    if any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError(f"split fractions must be non-negative and sum above 0, got {list(fractions)}")
    shares = [f / sum(fractions) for f in fractions]
    groups = _groups(records, group_key)
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for _, group_names in sorted(_strata(groups, stratify_by_label).items()):
        order = list(group_names)
        rng.shuffle(order)
        order.sort(key=lambda name: -len(groups[name]))  # stable: the shuffle breaks ties
        total = sum(len(groups[name]) for name in order)
        assigned = [0] * len(names)
        for name in order:
            best = max(range(len(names)), key=lambda i: (shares[i] * total - assigned[i], -i))
            assigned[best] += len(groups[name])
            for record in groups[name]:
                assignment[record.id] = names[best]
    return assignment


def subsample_by_case(
    records: Sequence[TileRecord],
    fraction: float,
    seed: int = 0,
    group_key: str = "case",
    stratify_by_label: bool = True,
) -> list[TileRecord]:
    """About ``fraction`` of the records, taken as whole groups, stratified by label.

    Groups are taken in a seeded random order per stratum until the stratum's share is reached
    (at least one group per stratum, so a tiny fraction holds every label and is never empty, and may
    hold more than ``fraction`` of the tiles), so for one seed a smaller fraction is a subset of a
    larger one. Records keep their original order.
    """
    if not 0 < fraction <= 1:
        raise InputError(f"subsample fraction must be in (0, 1], got {fraction}")
    if not records:
        raise InputError("there are no tiles to subsample")
    groups = _groups(records, group_key)
    rng = random.Random(seed)
    chosen: set[str] = set()
    for _, group_names in sorted(_strata(groups, stratify_by_label).items()):
        order = list(group_names)
        rng.shuffle(order)
        target = fraction * sum(len(groups[name]) for name in order)
        taken = 0
        for index, name in enumerate(order):
            size = len(groups[name])
            if index > 0 and taken + size / 2 > target:
                break
            chosen.add(name)
            taken += size
    return [r for r in records if group_of(r, group_key) in chosen]


def task_records(records: Sequence[TileRecord], task: Task) -> list[TileRecord]:
    """The tiles a task can train on: those with a mask (segmentation) or a label (classification)."""
    return [r for r in records if (r.mask if task == "segmentation" else r.label) is not None]


def draw_subset(train: Sequence[TileRecord], fraction: float, seed: int, task: Task) -> list[TileRecord]:
    """The real subset of a (fraction, seed) cell of ``evaluate downstream`` (``data subset`` makes the same draw):
    whole cases stratified by label, among the train tiles the task can use."""
    usable = task_records(train, task)
    if not usable:
        what = "a mask" if task == "segmentation" else "a label"
        raise InputError(f"no train tile has {what}, so there is nothing to train a {task} model on")
    return usable if fraction >= 1 else subsample_by_case(usable, fraction, seed)
