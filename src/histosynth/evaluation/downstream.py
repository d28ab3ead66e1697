"""Downstream utility: does adding synthetic tiles to scarce real tiles improve a model?

Protocol (seed 002, Figure 3, widened for issue I): for each fraction f of the real train split (whole
cases, stratified by label) and each seed (which draws the subset and the training seed), train a small
model on each arm of the grid and score it on the real test split:

* ``real``: the subset alone, with flips, quarter turns and mild colour jitter (the paired baseline);
  ``real-noaug``: the subset alone, without them;
* ``synthetic``: the subset + synthetic tiles, ``rounds`` mode (k per real tile), ``balanced`` mode
  (every class of the subset topped up to the count of its largest class) or ``filtered`` mode (balanced
  counts, each class taking the tiles the seed's real-only model agrees with most: an oversampled pool culled
  by a model that saw only the subset, so the filter leaks nothing);
* ``pseudo-label``: the subset + train tiles from outside it, unlabelled, with the labels (masks) the seed's
  real-only model predicts, as many per predicted class as the synthetic arm of the same mode adds, the most
  confident first (self-training: the semi-supervised baseline that uses the same unlabelled tiles a leak-free
  generator learns from; rounds and balanced modes, rounds only for segmentation);
* ``extra-real``: the subset + as many real train tiles from outside it, class by class (the upper bound).

Every run trains the same number of steps (so added tiles add data, not compute). ``checkpoint="last"``
(the default of ``histosynth evaluate downstream`` and bench_downstream) keeps the weights after the last
step (cosine decay to zero), so nothing leans on the tiny val split; ``"val"`` (the library default, so that
older runs files resume as they were made) keeps the best val score, scored every ``select_every`` steps.
Runs are appended to a JSONL file as they finish; a rerun skips finished runs and refuses a file made with
other training settings (task, steps, size, checkpoint).

Which synthetic tiles join a run: :mod:`histosynth.evaluation.downstream_draws`. ``synthetic`` may hold
``{fraction}`` and ``{seed}``: each subset then takes its tiles from its own folder (tiles from a
generator that saw only that subset's labels and masks: ``histosynth data subset --unlabel-rest``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from histosynth.data.manifest import TileManifest, TileRecord, load_manifest
from histosynth.errors import InputError
from histosynth.evaluation.audit import load_synthetic
from histosynth.evaluation.downstream_draws import (
    Mode, Task, draw_subset, pick_extra_real, pick_pseudo_labelled, pick_synthetic, synthetic_by_source,
    synthetic_candidates, task_records,
)
from histosynth.evaluation.downstream_runs import DownstreamRun, append_run, read_runs
from histosynth.evaluation.downstream_summary import summarise
from histosynth.training.tensors import TileTensors, load_tile_tensors

__all__ = ["DownstreamConfig", "DownstreamRun", "conditions", "run_downstream", "summarise"]

Arm = Literal["real", "real-noaug", "synthetic", "pseudo-label", "extra-real"]


class DownstreamConfig(BaseModel):
    task: Task = "segmentation"
    fractions: tuple[float, ...] = (1.0, 0.25, 0.1)
    rounds: tuple[int, ...] = (0, 1, 2, 4)  # synthetic (extra real) tiles per real tile; 0 = the real arm
    seeds: int = Field(5, ge=1)
    steps: int = Field(400, ge=1)
    size: int = Field(96, ge=16, multiple_of=8)
    select_every: int = Field(100, ge=1)
    tile_size: int = Field(224, ge=16)
    pairing: Literal["auto", "paired", "pool"] = "auto"
    arms: tuple[Arm, ...] = ("real", "synthetic")
    modes: tuple[Mode, ...] = ("rounds",)  # how the synthetic and extra-real arms add tiles
    checkpoint: Literal["last", "val"] = "val"  # "last" for new grids (see the module notes)


def conditions(config: DownstreamConfig, fraction: float) -> list[tuple[str, str, int]]:
    """(arm, mode, rounds) of every run of one subset; no extra-real runs when the subset is all of train."""
    found: list[tuple[str, str, int]] = [(arm, "rounds", 0) for arm in ("real", "real-noaug") if arm in config.arms]
    for arm in ("synthetic", "pseudo-label", "extra-real"):
        if arm not in config.arms or (arm != "synthetic" and fraction >= 1):
            continue  # no train tile lies outside the whole split
        for mode in config.modes:
            if arm != "synthetic" and mode == "filtered":
                continue  # the same extra tiles as balanced: nothing to filter
            if arm == "pseudo-label" and mode == "balanced" and config.task == "segmentation":
                continue  # unlabelled tiles have no class to balance by
            found += [(arm, mode, k) for k in config.rounds if k > 0] if mode == "rounds" else [(arm, mode, 0)]
    return found


@dataclass
class _Synthetic:
    """One synthetic folder, loaded: records, tensors, pairing to train tiles, and the model that made it."""

    folder: Path
    records: list[TileRecord]
    tensors: TileTensors
    paired: dict[str, list[int]] | None
    generator: str


def _tensors(manifest: TileManifest, size: int) -> TileTensors:
    """Tiles held at ``config.tile_size`` (an explicit resize: the runs train at ``config.size`` anyway)."""
    return load_tile_tensors(manifest, size, resize=True)


def _load_synthetic(folder: Path, real: TileManifest, config: DownstreamConfig) -> _Synthetic:
    manifest = load_synthetic(folder)
    manifest = TileManifest(manifest.source, manifest.records, real.classes)  # label ids in the real class list
    tensors = _tensors(manifest, config.tile_size)
    if config.task == "segmentation" and not bool(tensors.mask_known.all()):
        raise InputError("synthetic tiles without masks cannot train a segmentation task", folder)
    paired = None
    if config.pairing != "pool":
        paired = synthetic_by_source(manifest.records, {r.id for r in real.records if r.split == "train"})
    if config.pairing == "paired" and paired is None:
        raise InputError("pairing 'paired' needs every synthetic tile's mask_source to be train:<id> of this "
                         "manifest's train split", folder)
    models = Counter(r.extra.get("model", "") for r in manifest.records if r.extra.get("model"))
    return _Synthetic(folder, manifest.records, tensors, paired, models.most_common(1)[0][0] if models else folder.name)


def _synthetic_tensors(tiles: TileTensors, picks: list[int], task: Task, num_labels: int,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and targets (masks, or labels: unlabelled tiles dropped) of the picked synthetic tiles."""
    index = torch.tensor(picks, dtype=torch.long)
    if task == "segmentation":
        return tiles.images[index], tiles.masks[index].long()
    labels = tiles.labels[index]
    return tiles.images[index][labels < num_labels], labels[labels < num_labels]


def _score(task: Task, model: torch.nn.Module, tiles: TileTensors, config: DownstreamConfig, labels: list[str],
           per_class: bool = False) -> tuple[float, dict[str, float]]:
    """Dice (segmentation) or balanced accuracy, and optionally the per-class recall / Dice by tile label."""
    if task == "segmentation":
        from histosynth.evaluation.segmentation import dice_per_image, predict_masks

        dice = dice_per_image(predict_masks(model, tiles.images, config.size), tiles.masks)
        target = tiles.labels.numpy()
        by_class = {labels[c]: float(dice[target == c].mean()) for c in sorted(set(target.tolist())) if c < len(labels)}
        return float(dice.mean()), by_class if per_class else {}
    from histosynth.evaluation.classification import balanced_accuracy, predict_labels, recall_per_class

    predicted, target = predict_labels(model, tiles.images), tiles.labels.numpy()
    return balanced_accuracy(predicted, target), recall_per_class(predicted, target, labels) if per_class else {}


def _agreement(task: Task, model: torch.nn.Module, tiles: TileTensors, candidates: list[int],
               config: DownstreamConfig, num_labels: int) -> dict[int, float]:
    """How far a real-only model agrees with each candidate synthetic tile's condition: its probability of the
    tile's label (classification), or its predicted mask's Dice against the tile's mask (segmentation)."""
    if not candidates:
        return {}
    index = torch.tensor(candidates, dtype=torch.long)
    if task == "segmentation":
        from histosynth.evaluation.segmentation import dice_per_image, predict_masks

        scores = dice_per_image(predict_masks(model, tiles.images[index], config.size), tiles.masks[index])
    else:
        from histosynth.evaluation.classification import predict_logits

        labels = tiles.labels[index]
        probabilities = predict_logits(model, tiles.images[index]).softmax(1)
        known = labels < num_labels  # an unlabelled tile never joins a classification run: it agrees with nothing
        scores = torch.where(known, probabilities.gather(1, labels.clamp(max=num_labels - 1)[:, None])[:, 0],
                             torch.zeros(())).numpy()
    return {i: float(score) for i, score in zip(candidates, scores)}


@dataclass
class _PseudoLabels:
    """The real-only model's predictions on the train tiles outside a subset (indices into the train split)."""

    index: list[int]
    names: list[str | None]  # predicted class names (None throughout for segmentation)
    confidence: np.ndarray
    targets: torch.Tensor  # predicted class ids, or masks

    def tiles(self, picks: list[int], train: TileTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (from the train split's tensors) and pseudo-targets of the picked tiles."""
        chosen = torch.tensor(picks, dtype=torch.long)
        return train.images[torch.tensor([self.index[i] for i in picks], dtype=torch.long)], self.targets[chosen]


def _pseudo_labels(task: Task, model: torch.nn.Module, tiles: TileTensors, index: list[int],
                   config: DownstreamConfig, labels: list[str]) -> _PseudoLabels:
    images = tiles.images[torch.tensor(index, dtype=torch.long)]
    if task == "segmentation":
        from histosynth.evaluation.segmentation import predict_masks_with_confidence

        masks, confidence = predict_masks_with_confidence(model, images, config.size)
        return _PseudoLabels(index, [None] * len(index), confidence, masks.long())
    from histosynth.evaluation.classification import predict_logits

    chosen, predicted = predict_logits(model, images).softmax(1).max(1)
    return _PseudoLabels(index, [labels[int(c)] for c in predicted], chosen.numpy(), predicted)


def _pseudo_score(task: Task, pseudo: _PseudoLabels, picks: list[int], tiles: TileTensors, num_labels: int,
                  ) -> float | None:
    """How right the picked pseudo-labels are: accuracy against the true labels, or mean Dice against the true
    masks where known (None when nothing is known)."""
    index = torch.tensor([pseudo.index[i] for i in picks], dtype=torch.long)
    chosen = torch.tensor(picks, dtype=torch.long)
    if task == "segmentation":
        from histosynth.evaluation.segmentation import dice_per_image

        known = tiles.mask_known[index]
        if not bool(known.any()):
            return None
        return float(dice_per_image(pseudo.targets[chosen][known], tiles.masks[index][known]).mean())
    truth = tiles.labels[index]
    known = truth < num_labels
    return float((pseudo.targets[chosen][known] == truth[known]).float().mean()) if bool(known.any()) else None


def _train(config: DownstreamConfig, images: torch.Tensor, targets: torch.Tensor, num_classes: int, seed: int,
           augment: bool, select: Callable | None, device: str) -> torch.nn.Module:
    if config.task == "segmentation":
        from histosynth.evaluation.segmentation import SegmentationTrainConfig, train_segmenter

        seg = SegmentationTrainConfig(size=config.size, steps=config.steps, seed=seed, num_classes=num_classes)
        return train_segmenter(images, targets, seg, device=device, select=select, select_every=config.select_every,
                               augment=augment)
    from histosynth.evaluation.classification import ClassifierTrainConfig, train_classifier

    cls = ClassifierTrainConfig(size=config.size, steps=config.steps, seed=seed)
    return train_classifier(images, targets, num_classes, cls, select=select, select_every=config.select_every,
                            augment=augment, device=device)


_Scorer = tuple[tuple[float, int], torch.nn.Module]


def _real_only(scorer: _Scorer | None, key: tuple[float, int], config: DownstreamConfig, images: torch.Tensor,
               targets: torch.Tensor, num_classes: int, val: TileTensors, labels: list[str], device: str) -> _Scorer:
    """The real arm's model of subset ``key`` (fraction, seed): ``scorer`` when it is that model, else retrained
    on ``images`` (the subset alone): training is deterministic, so this is the model of its real run."""
    if scorer is not None and scorer[0] == key:
        return scorer
    return key, _train(config, images, targets, num_classes, key[1], True, _select(config, val, labels), device)


def _select(config: DownstreamConfig, val: TileTensors, labels: list[str]) -> Callable | None:
    """The checkpoint pick: none (the last weights), or the best val score."""
    return None if config.checkpoint == "last" else (lambda m: _score(config.task, m, val, config, labels)[0])


def _check_resumable(done: list[DownstreamRun], config: DownstreamConfig, path: Path) -> None:
    from histosynth.io import check_same_settings

    wanted = {"task": config.task, "steps": config.steps, "size": config.size, "checkpoint": config.checkpoint}
    for recorded in {tuple(sorted(r.settings().items())) for r in done}:
        check_same_settings(dict(recorded), {k: v for k, v in wanted.items() if k in dict(recorded)}, path,
                            what="the runs file holds runs trained with other settings",
                            hint="choose another --out, or the settings it was made with")


def run_downstream(
    real: str | Path, synthetic: str | Path | None, config: DownstreamConfig, results_path: str | Path,
    on_run: Callable[[DownstreamRun], None] | None = None, device: str = "cpu",
) -> list[DownstreamRun]:
    """Run (or resume) the grid; returns every run of the runs file, finished earlier or now."""
    results_path = Path(results_path)
    if any(not 0 < f <= 1 for f in config.fractions):
        raise InputError(f"fractions must be in (0, 1], got {', '.join(f'{f:g}' for f in config.fractions)}")
    if "synthetic" in config.arms and synthetic is None:
        raise InputError("the synthetic arm needs a synthetic folder (--synthetic)")
    manifest = load_manifest(real)
    train_m, val_m, test_m = (manifest.select_split(s) for s in ("train", "val", "test"))
    labels, task = manifest.classes.labels, config.task
    val, test = (_tensors(TileManifest(m.source, task_records(m.records, task), m.classes), config.tile_size)
                 for m in (val_m, test_m))
    train_all = _tensors(train_m, config.tile_size)
    index_of = {r.id: i for i, r in enumerate(train_m.records)}
    num_classes = manifest.classes.num_mask_classes if task == "segmentation" else len(labels)
    done = read_runs(results_path)
    _check_resumable(done, config, results_path)
    finished = {(r.cell, r.seed) for r in done}
    loaded: _Synthetic | None = None
    scorer: _Scorer | None = None  # the real-only model of the last subset (filtered mode, pseudo-labels)
    pseudo: tuple[tuple[float, int], _PseudoLabels] | None = None  # its predictions on the tiles outside the subset
    for fraction in config.fractions:
        for seed in range(config.seeds):
            todo = [c for c in conditions(config, fraction) if ((fraction, *c), seed) not in finished]
            if not todo:
                continue
            subset = draw_subset(train_m.records, fraction, seed, task)
            for arm, mode, rounds in todo:
                started = time.perf_counter()
                extra = pick_extra_real(train_m.records, subset, mode, rounds, task, seed) if arm == "extra-real" else []
                real_idx = torch.tensor([index_of[r.id] for r in [*subset, *extra]], dtype=torch.long)
                images = train_all.images[real_idx]
                targets = train_all.masks[real_idx].long() if task == "segmentation" else train_all.labels[real_idx]
                n_synth, n_pseudo, generator, pseudo_score = 0, 0, "", None
                if arm == "pseudo-label":
                    key = (fraction, seed)
                    if pseudo is None or pseudo[0] != key:
                        scorer = _real_only(scorer, key, config, images, targets, num_classes, val, labels, device)
                        inside = {r.id for r in subset}
                        outside = [i for i, r in enumerate(train_m.records) if r.id not in inside]
                        pseudo = (key, _pseudo_labels(task, scorer[1], train_all, outside, config, labels))
                    subset_labels = [r.label if task == "classification" else None for r in subset]
                    picks = pick_pseudo_labelled(subset_labels, pseudo[1].names, pseudo[1].confidence, mode, rounds)
                    more_images, more_targets = pseudo[1].tiles(picks, train_all)
                    images, targets = torch.cat([images, more_images]), torch.cat([targets, more_targets])
                    n_pseudo = len(picks)
                    pseudo_score = _pseudo_score(task, pseudo[1], picks, train_all, len(labels))
                if arm == "synthetic":
                    folder = Path(str(synthetic).format(fraction=fraction, seed=seed))
                    if loaded is None or loaded.folder != folder:
                        loaded = None  # drop the last folder's tiles before reading the next
                        loaded = _load_synthetic(folder, manifest, config)
                    rng = np.random.default_rng([seed, rounds, int(fraction * 1000), int(mode == "balanced")])
                    agreement = None
                    if mode == "filtered":
                        scorer = _real_only(scorer, (fraction, seed), config, images, targets, num_classes, val,
                                            labels, device)
                        candidates = synthetic_candidates(subset, loaded.records, loaded.paired)
                        agreement = _agreement(task, scorer[1], loaded.tensors, candidates, config, len(labels))
                    picks = pick_synthetic(subset, loaded.records, mode, rounds, loaded.paired, rng, agreement)
                    more_images, more_targets = _synthetic_tensors(loaded.tensors, picks, task, len(labels))
                    images, targets = torch.cat([images, more_images]), torch.cat([targets, more_targets])
                    n_synth, generator = len(more_images), loaded.generator
                model = _train(config, images, targets, num_classes, seed, arm != "real-noaug",
                               _select(config, val, labels), device)
                if arm == "real":
                    scorer = ((fraction, seed), model)  # a later filtered or pseudo-label run of this subset uses it
                val_score = _score(task, model, val, config, labels)[0]
                test_score, per_class = _score(task, model, test, config, labels, per_class=True)
                run = DownstreamRun(fraction, rounds, seed, len(subset), n_synth, val_score, test_score,
                                    round(time.perf_counter() - started, 1), arm=arm, mode=mode,
                                    augment=arm != "real-noaug", n_extra=len(extra) + n_pseudo, task=task,
                                    steps=config.steps, size=config.size, checkpoint=config.checkpoint,
                                    generator=generator, test_per_class=per_class, pseudo_score=pseudo_score)
                append_run(results_path, run)
                done.append(run)
                if on_run is not None:
                    on_run(run)
    return done
