"""Downstream utility: does adding synthetic tiles to scarce real tiles improve a model?

Protocol (seed 002, Figure 3): for each fraction f of the real train split (whole cases, stratified
by label) and each number of rounds k, train a small model on the f-subset plus k synthetic tiles
per real tile, select its weights on the real val split, and score it on the real test split; repeat
over seeds. Every run trains the same number of steps, so extra tiles add data, not compute. Runs are
appended to a JSONL file as they finish; a rerun skips finished (fraction, rounds, seed) triples.

Which synthetic tiles join a run: when every synthetic tile names the train tile whose mask it was
generated from (``mask_source`` = ``train:<id>``, as ``histosynth sample`` and the benchmarks write),
a run with k rounds takes the first k tiles made from each tile *of its real subset* ("paired", the
seed-002 protocol: the synthetic data carries no mask layout the subset lacks). Otherwise it draws
k x (real tiles) at random from the whole folder ("pool").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from histosynth.data.manifest import TileManifest, load_manifest
from histosynth.data.splits import subsample_by_case
from histosynth.errors import InputError
from histosynth.evaluation.audit import load_synthetic
from histosynth.training.tensors import TileTensors, load_tile_tensors

Task = Literal["segmentation", "classification"]


class DownstreamConfig(BaseModel):
    task: Task = "segmentation"
    fractions: tuple[float, ...] = (1.0, 0.25, 0.1)
    rounds: tuple[int, ...] = (0, 1, 2, 4)
    seeds: int = Field(3, ge=1)
    steps: int = Field(400, ge=1)
    size: int = Field(96, ge=16, multiple_of=8)
    select_every: int = Field(100, ge=1)
    tile_size: int = Field(224, ge=16)
    pairing: Literal["auto", "paired", "pool"] = "auto"


@dataclass
class DownstreamRun:
    fraction: float
    rounds: int
    seed: int
    n_real: int
    n_synthetic: int
    val_score: float
    test_score: float
    seconds: float


def _tensors(manifest: TileManifest, size: int) -> TileTensors:
    """Tiles held at ``config.tile_size`` (an explicit resize: the runs train at ``config.size`` anyway)."""
    return load_tile_tensors(manifest, size, resize=True)


def synthetic_by_source(synth: TileManifest, train_ids: set[str]) -> dict[str, list[int]] | None:
    """Synthetic tile indices grouped by the train tile their mask came from, or None if any is unpaired."""
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(synth.records):
        source = record.extra.get("mask_source", "")
        if not source.startswith("train:") or source[len("train:"):] not in train_ids:
            return None
        groups.setdefault(source[len("train:"):], []).append(index)
    return groups


def _pick_synthetic(subset_ids: list[str], rounds: int, n_pool: int, paired: dict[str, list[int]] | None,
                    rng: np.random.Generator) -> torch.Tensor:
    if paired is None:
        n_synth = min(rounds * len(subset_ids), n_pool)
        return torch.from_numpy(rng.choice(n_pool, n_synth, replace=False)).long()
    picks = [i for tile_id in subset_ids for i in paired.get(tile_id, [])[:rounds]]
    return torch.tensor(picks, dtype=torch.long)


def _check_synthetic(synth: TileTensors, task: Task, folder: Path) -> None:
    if task == "segmentation" and not bool(synth.mask_known.all()):
        raise InputError("synthetic tiles without masks cannot train a segmentation task", folder)


def _train_and_score(task: Task, config: DownstreamConfig, train_x, train_y, val: TileTensors, test: TileTensors,
                     num_classes: int, seed: int) -> tuple[float, float]:
    if task == "segmentation":
        from histosynth.evaluation.segmentation import (
            SegmentationTrainConfig, dice_per_image, predict_masks, train_segmenter,
        )

        seg = SegmentationTrainConfig(size=config.size, steps=config.steps, seed=seed, num_classes=num_classes)

        def score(model, tiles: TileTensors) -> float:
            known = tiles.mask_known
            return float(dice_per_image(predict_masks(model, tiles.images[known], seg.size), tiles.masks[known]).mean())

        model = train_segmenter(train_x, train_y, seg, select=lambda m: score(m, val), select_every=config.select_every)
        return score(model, val), score(model, test)
    from histosynth.evaluation.classification import (
        ClassifierTrainConfig, balanced_accuracy, predict_labels, train_classifier,
    )

    cls = ClassifierTrainConfig(size=config.size, steps=config.steps, seed=seed)

    def score(model, tiles: TileTensors) -> float:
        return balanced_accuracy(predict_labels(model, tiles.images), tiles.labels.numpy())

    model = train_classifier(train_x, train_y, num_classes, cls, select=lambda m: score(m, val),
                             select_every=config.select_every)
    return score(model, val), score(model, test)


def run_downstream(
    real: str | Path, synthetic: str | Path, config: DownstreamConfig, results_path: str | Path,
    on_run: Callable[[DownstreamRun], None] | None = None,
) -> list[DownstreamRun]:
    """Run (or resume) the grid; returns every run, finished earlier or now."""
    import time

    results_path = Path(results_path)
    manifest = load_manifest(real)
    train_m, val_m, test_m = (manifest.select_split(s) for s in ("train", "val", "test"))
    synth_m = load_synthetic(synthetic)
    synth_m = TileManifest(synth_m.source, synth_m.records, manifest.classes)  # label ids in the real class list
    val, test = _tensors(val_m, config.tile_size), _tensors(test_m, config.tile_size)
    train_all, synth = _tensors(train_m, config.tile_size), _tensors(synth_m, config.tile_size)
    _check_synthetic(synth, config.task, Path(synthetic))
    num_classes = manifest.classes.num_mask_classes if config.task == "segmentation" else len(manifest.classes.labels)
    index_of = {r.id: i for i, r in enumerate(train_m.records)}
    paired = None if config.pairing == "pool" else synthetic_by_source(synth_m, set(index_of))
    if config.pairing == "paired" and paired is None:
        raise InputError("pairing 'paired' needs every synthetic tile's mask_source to be train:<id> of this "
                         "manifest's train split", Path(synthetic))

    done = _read_runs(results_path)
    finished = {(r.fraction, r.rounds, r.seed) for r in done}
    for fraction in config.fractions:
        for seed in range(config.seeds):
            subset = subsample_by_case(train_m.records, fraction, seed) if fraction < 1 else train_m.records
            real_idx = torch.tensor([index_of[r.id] for r in subset])
            for rounds in config.rounds:
                if (fraction, rounds, seed) in finished:
                    continue
                started = time.perf_counter()
                rng = np.random.default_rng([seed, rounds, int(fraction * 1000)])
                synth_idx = _pick_synthetic([r.id for r in subset], rounds, len(synth), paired, rng)
                n_synth = len(synth_idx)
                images = torch.cat([train_all.images[real_idx], synth.images[synth_idx]])
                if config.task == "segmentation":
                    keep = torch.cat([train_all.mask_known[real_idx], synth.mask_known[synth_idx]])
                    targets = torch.cat([train_all.masks[real_idx], synth.masks[synth_idx]])[keep].long()
                    images = images[keep]
                else:
                    targets = torch.cat([train_all.labels[real_idx], synth.labels[synth_idx]])
                    keep = targets < len(manifest.classes.labels)
                    images, targets = images[keep], targets[keep]
                val_score, test_score = _train_and_score(config.task, config, images, targets, val, test,
                                                         num_classes, seed)
                run = DownstreamRun(fraction, rounds, seed, len(real_idx), n_synth, val_score, test_score,
                                    round(time.perf_counter() - started, 1))
                _append_run(results_path, run)
                done.append(run)
                if on_run is not None:
                    on_run(run)
    return done


def _read_runs(path: Path) -> list[DownstreamRun]:
    if not path.exists():
        return []
    from histosynth.io import atomic_open

    runs, lines = [], path.read_text().splitlines()
    for line in lines:
        try:
            runs.append(DownstreamRun(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut by a kill mid-write: that run is simply redone
    if len(runs) != len(lines) or (lines and not path.read_text().endswith("\n")):
        with atomic_open(path, "w") as handle:  # drop the cut line before appending again
            handle.writelines(json.dumps(asdict(run)) + "\n" for run in runs)
    return runs


def _append_run(path: Path, run: DownstreamRun) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(asdict(run)) + "\n")
        handle.flush()


def summarise(runs: list[DownstreamRun]) -> list[dict]:
    """Mean +- sd of the test score over seeds for each (fraction, rounds), sorted."""
    groups: dict[tuple[float, int], list[DownstreamRun]] = {}
    for run in runs:
        groups.setdefault((run.fraction, run.rounds), []).append(run)
    rows = []
    for (fraction, rounds), group in sorted(groups.items(), key=lambda item: (-item[0][0], item[0][1])):
        scores = np.array([r.test_score for r in group])
        rows.append({"fraction": fraction, "rounds": rounds, "seeds": len(group),
                     "n_real": int(np.mean([r.n_real for r in group])),
                     "n_synthetic": int(np.mean([r.n_synthetic for r in group])),
                     "test_mean": float(scores.mean()), "test_sd": float(scores.std(ddof=1)) if len(group) > 1 else 0.0})
    return rows
