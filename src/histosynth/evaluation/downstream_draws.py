"""What one downstream run trains on: the real subset, extra real tiles, and which synthetic tiles.

* The subset of a (fraction, seed) cell: :func:`draw_subset` (whole cases, stratified by label, among the
  train tiles the task can use). ``histosynth data subset`` makes the same draw for a leak-free generator.
* Synthetic tiles, mode ``rounds``: k per real tile of the subset. Mode ``balanced``: every class of the
  subset topped up to the count of its largest class. Mode ``filtered``: the same counts, but each class takes
  the candidates the real-only model of the run's seed agrees with most (``agreement``: its probability of the
  tile's label, or its mask's Dice against the tile's mask), so a pool larger than the top-up is culled by a
  model that saw only the subset. When every synthetic tile names its source
  (``mask_source`` = ``train:<id>``, "paired"), only tiles made from the subset's own tiles are drawn;
  otherwise ("pool") they are drawn at random from the folder (by label in balanced mode).
* Extra real tiles (the upper bound synthetic data chases): per class, as many as the synthetic tiles of
  the same mode would add, drawn from train tiles outside the subset (never val or test).
* Pseudo-labelled tiles (the semi-supervised baseline a leak-free generator has to beat): train tiles outside
  the subset, unlabelled, taking the label (or mask) the subset's real-only model predicts; per predicted
  label as many as the synthetic tiles of the same mode would add, the most confident first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from histosynth.data.manifest import TileRecord
from histosynth.data.splits import Task, draw_subset, task_records

__all__ = ["Mode", "Task", "class_targets", "draw_subset", "pick_extra_real", "pick_pseudo_labelled", "pick_synthetic",
           "synthetic_by_source", "synthetic_candidates", "task_records"]

Mode = Literal["rounds", "balanced", "filtered"]


def class_targets(labels: Sequence[str | None], mode: Mode, rounds: int) -> dict[str | None, int]:
    """Tiles to add per label: ``rounds`` x its count, or (balanced, filtered) up to the largest class's count."""
    counts = Counter(labels)
    if mode == "rounds":
        return {label: rounds * n for label, n in counts.items()}
    top = max(counts.values(), default=0)
    return {label: top - n for label, n in counts.items()}


def synthetic_by_source(synth: Sequence[TileRecord], train_ids: set[str]) -> dict[str, list[int]] | None:
    """Synthetic tile indices grouped by the train tile their mask came from, or None if any is unpaired."""
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(synth):
        source = record.extra.get("mask_source", "")
        if not source.startswith("train:") or source[len("train:"):] not in train_ids:
            return None
        groups.setdefault(source[len("train:"):], []).append(index)
    return groups


def synthetic_candidates(subset: Sequence[TileRecord], synth: Sequence[TileRecord],
                         paired: dict[str, list[int]] | None) -> list[int]:
    """Indices of the synthetic tiles a run of ``subset`` may draw: those made from its tiles, or (pool) all."""
    if paired is None:
        return list(range(len(synth)))
    return sorted(i for r in subset for i in paired.get(r.id, []))


def pick_synthetic(subset: Sequence[TileRecord], synth: Sequence[TileRecord], mode: Mode, rounds: int,
                   paired: dict[str, list[int]] | None, rng: np.random.Generator,
                   agreement: dict[int, float] | None = None) -> list[int]:
    """Indices into ``synth`` of the synthetic tiles one run adds (see the module notes).

    ``agreement`` (mode ``filtered`` only) scores every candidate (:func:`synthetic_candidates`).
    """
    if mode == "rounds" and paired is not None:
        return [i for r in subset for i in paired.get(r.id, [])[:rounds]]
    if mode == "rounds":
        return sorted(rng.choice(len(synth), min(rounds * len(subset), len(synth)), replace=False).tolist())
    if mode == "filtered" and agreement is None:
        raise ValueError("mode 'filtered' needs the real-only model's agreement with each candidate")
    picks: list[int] = []
    for label, need in sorted(class_targets([r.label for r in subset], "balanced", 0).items(), key=str):
        if need <= 0 or label is None:
            continue
        if mode == "filtered":
            pool = [i for i in synthetic_candidates(subset, synth, paired) if synth[i].label == label]
            picks += _best(pool, agreement, need)
            continue
        if paired is None:
            pool = [i for i, s in enumerate(synth) if s.label == label]
            picks += sorted(rng.choice(pool, min(need, len(pool)), replace=False).tolist()) if pool else []
            continue
        queues = [[i for i in paired.get(r.id, []) if synth[i].label == label] for r in subset if r.label == label]
        order = [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]
        picks += order[:need]  # round-robin: the first tile made from each source, then the second, ...
    return picks


def _best(pool: Sequence[int], score: Mapping[int, float] | Sequence[float], need: int) -> list[int]:
    """The ``need`` indices of ``pool`` with the highest ``score`` (ties: lower index), in index order."""
    return sorted(sorted(pool, key=lambda i: (-score[i], i))[:need])


def pick_pseudo_labelled(subset_labels: Sequence[str | None], predicted: Sequence[str | None],
                         confidence: Sequence[float], mode: Mode, rounds: int) -> list[int]:
    """Indices of the unlabelled tiles one pseudo-label run adds (see the module notes).

    ``predicted`` and ``confidence`` hold the real-only model's label and its probability for each unlabelled
    tile; a segmentation run passes ``None`` labels throughout, so rounds mode takes the ``rounds`` x subset
    most confident masks.
    """
    if mode == "filtered":
        raise ValueError("pseudo-labelled tiles come in rounds or balanced mode")
    picks: list[int] = []
    for label, need in sorted(class_targets(subset_labels, mode, rounds).items(), key=str):
        if need > 0:
            picks += _best([i for i, p in enumerate(predicted) if p == label], confidence, need)
    return sorted(picks)


def pick_extra_real(train: Sequence[TileRecord], subset: Sequence[TileRecord], mode: Mode, rounds: int,
                    task: Task, seed: int) -> list[TileRecord]:
    """Train tiles outside ``subset``, per label as many as ``mode`` would add synthetic ones (at most all).

    One seeded order per (subset, label), so a smaller draw is a prefix of a larger one.
    """
    inside = {r.id for r in subset}
    outside: dict[str | None, list[TileRecord]] = {}
    for record in task_records(train, task):
        if record.id not in inside:
            outside.setdefault(record.label, []).append(record)
    picks: list[TileRecord] = []
    for label, need in sorted(class_targets([r.label for r in subset], mode, rounds).items(), key=str):
        pool = outside.get(label, [])
        order = np.random.default_rng([seed, len(subset), sum(map(ord, label or ""))]).permutation(len(pool))
        picks += [pool[i] for i in order[:need]]
    return picks
