"""The pseudo-label arm of the downstream grid: train tiles outside the subset, unlabelled, join a run with the
labels (masks) the subset's own real-only model predicts, the most confident first (the semi-supervised baseline
a leak-free generator has to beat)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.data.manifest import load_manifest
from histosynth.evaluation import downstream
from histosynth.evaluation.classification import ClassifierTrainConfig, TileClassifier
from histosynth.evaluation.downstream import DownstreamConfig, conditions, run_downstream
from histosynth.evaluation.downstream_draws import class_targets, draw_subset, pick_pseudo_labelled
from histosynth.evaluation.downstream_summary import cell_name, summarise
from histosynth.evaluation.segmentation import SegmentationUNet, predict_masks, predict_masks_with_confidence

N = 48


@pytest.fixture
def real(tmp_path: Path, make_tile_dataset) -> Path:
    return make_tile_dataset(tmp_path / "real", n=N, labels=("Polyp", "Polyp", "Polyp", "Normal"),
                             splits=("train", "val", "test"), cases=[f"c{k}" for k in range(24)])


class _AllGland(torch.nn.Module):
    """A segmenter with one logit, +1 everywhere: every pixel gland with probability sigmoid(1)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(x), 1, *x.shape[-2:])


def test_pick_takes_the_most_confident_tiles_of_each_predicted_class() -> None:
    subset_labels = ["Polyp"] * 6 + ["Normal"] * 2
    predicted = ["Polyp", "Normal", "Normal", "Normal", "Polyp", "Normal", "Normal", "Serrated adenoma"]
    confidence = [0.9, 0.2, 0.8, 0.6, 0.5, 0.95, 0.1, 0.99]
    picks = pick_pseudo_labelled(subset_labels, predicted, confidence, "balanced", 0)
    assert picks == [1, 2, 3, 5]  # Normal topped up by 4 (6 - 2): its four most confident (not 6); Polyp none
    # rounds 1: 6 Polyp wanted, 2 predicted (both taken); 2 Normal wanted: the two most confident (ties: lower index)
    assert pick_pseudo_labelled(subset_labels, predicted, confidence, "rounds", 1) == [0, 2, 4, 5]
    assert pick_pseudo_labelled(subset_labels, predicted, [0.5] * 8, "rounds", 1) == [0, 1, 2, 4]
    with pytest.raises(ValueError, match="rounds or balanced"):
        pick_pseudo_labelled(subset_labels, predicted, confidence, "filtered", 0)
    masks = pick_pseudo_labelled([None] * 3, [None] * 8, confidence, "rounds", 2)  # segmentation: no classes
    assert masks == sorted(np.argsort(confidence)[::-1][:6].tolist())


def test_rounds_pick_is_capped_by_confidence_within_each_class() -> None:
    subset_labels = ["Polyp", "Normal"]
    predicted = ["Normal"] * 4 + ["Polyp"] * 4
    confidence = [0.1, 0.9, 0.3, 0.7, 0.4, 0.8, 0.2, 0.6]
    picks = pick_pseudo_labelled(subset_labels, predicted, confidence, "rounds", 2)
    assert picks == [1, 3, 5, 7]
    assert Counter(predicted[i] for i in picks) == class_targets(subset_labels, "rounds", 2)


def test_pseudo_labels_are_the_models_prediction_and_probability(real: Path) -> None:
    tiles = downstream._tensors(load_manifest(real), 16)
    classifier = TileClassifier(2, ClassifierTrainConfig(size=16))
    with torch.no_grad():
        classifier.head.weight.zero_()
        classifier.head.bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # p = (0.25, 0.75): class 1 everywhere
    config = DownstreamConfig(task="classification", size=16, tile_size=16)
    pseudo = downstream._pseudo_labels("classification", classifier, tiles, [0, 3, 5], config, ["Normal", "Polyp"])
    assert pseudo.index == [0, 3, 5] and pseudo.names == ["Polyp"] * 3
    assert pseudo.targets.tolist() == [1, 1, 1] and pseudo.confidence == pytest.approx([0.75] * 3)
    truth = (tiles.labels[[0, 3, 5]] == 1).float().mean().item()
    assert downstream._pseudo_score("classification", pseudo, [0, 1, 2], tiles, 2) == pytest.approx(truth)

    seg = downstream._pseudo_labels("segmentation", _AllGland(), tiles, [1, 2], config, ["Normal", "Polyp"])
    assert seg.names == [None, None] and bool((seg.targets == 1).all())
    assert seg.confidence == pytest.approx([1 / (1 + math.exp(-1))] * 2)
    gland = [float((tiles.masks[i] == 1).sum()) for i in (1, 2)]
    dice = [2 * g / (tiles.masks[i].numel() + g) for g, i in zip(gland, (1, 2))]
    assert downstream._pseudo_score("segmentation", seg, [0, 1], tiles, 2) == pytest.approx(np.mean(dice))


def test_masks_with_confidence_match_predict_masks() -> None:
    torch.manual_seed(0)
    model = SegmentationUNet(num_classes=2).eval()
    images = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8)
    masks, confidence = predict_masks_with_confidence(model, images, 16)
    assert torch.equal(masks, predict_masks(model, images, 16))
    assert confidence.shape == (3,) and bool(((confidence >= 0.5) & (confidence <= 1)).all())
    multi = SegmentationUNet(num_classes=3).eval()
    masks3, confidence3 = predict_masks_with_confidence(multi, images, 16)
    assert torch.equal(masks3, predict_masks(multi, images, 16))
    assert bool(((confidence3 >= 1 / 3) & (confidence3 <= 1)).all())


def test_conditions_leave_out_what_pseudo_labels_cannot_be() -> None:
    config = DownstreamConfig(task="classification", rounds=(0, 1), modes=("rounds", "balanced", "filtered"),
                              arms=("real", "pseudo-label"))
    assert conditions(config, 0.1) == [("real", "rounds", 0), ("pseudo-label", "rounds", 1),
                                       ("pseudo-label", "balanced", 0)]
    assert conditions(config, 1.0) == [("real", "rounds", 0)]  # nothing unlabelled outside all of train
    segmentation = config.model_copy(update={"task": "segmentation"})
    assert conditions(segmentation, 0.1) == [("real", "rounds", 0), ("pseudo-label", "rounds", 1)]


def test_pseudo_label_runs_add_unlabelled_tiles_with_the_real_models_labels(real: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    manifest = load_manifest(real)
    train = manifest.select_split("train").records
    trained: list[tuple[int, list[int]]] = []
    train_fn = downstream._train

    def spy_train(config, images, targets, num_classes, seed, augment, select, device):
        trained.append((len(images), targets.tolist()))
        return train_fn(config, images, targets, num_classes, seed, augment, select, device)

    monkeypatch.setattr(downstream, "_train", spy_train)
    config = DownstreamConfig(task="classification", fractions=(0.5,), rounds=(0, 1), seeds=1, steps=2, size=16,
                              tile_size=16, modes=("rounds", "balanced"), checkpoint="last",
                              arms=("real", "pseudo-label"))
    runs_path = tmp_path / "runs.jsonl"
    runs = run_downstream(real, None, config, runs_path)
    subset = draw_subset(train, 0.5, 0, "classification")
    by_cell = {(r.arm, r.mode): r for r in runs}
    assert set(by_cell) == {("real", "rounds"), ("pseudo-label", "rounds"), ("pseudo-label", "balanced")}
    assert len(trained) == 3  # the real run's model labels the tiles: it is not trained again
    outside = len(train) - len(subset)
    # the real-only model: what does it predict for each tile outside the subset?
    real_model = train_fn(config, *_subset_tensors(real, subset, config), 2, 0, True, None, "cpu")
    inside = {r.id for r in subset}
    index = [i for i, r in enumerate(train) if r.id not in inside]
    tiles = downstream._tensors(manifest.select_split("train"), 16)
    pseudo = downstream._pseudo_labels("classification", real_model, tiles, index, config, manifest.classes.labels)
    labels = manifest.classes.labels
    for (n, targets), run in zip(trained[1:], runs[1:]):
        picks = pick_pseudo_labelled([r.label for r in subset], pseudo.names, pseudo.confidence, run.mode, run.rounds)
        assert run.n_extra == len(picks) == n - len(subset) and run.n_synthetic == 0
        assert run.n_extra <= outside
        assert targets[len(subset):] == [labels.index(pseudo.names[i]) for i in picks]  # predicted, not true
        assert run.pseudo_score == pytest.approx(downstream._pseudo_score("classification", pseudo, picks, tiles, 2))
    assert by_cell[("pseudo-label", "rounds")].n_extra > 0
    assert by_cell[("pseudo-label", "rounds")].pseudo_score < 1  # some labels wrong: the check above can fail
    rows = summarise(runs)
    assert {cell_name(row) for row in rows} == {"real", "pseudo-label x1", "pseudo-label balanced"}
    assert all(0 <= row["pseudo_score"] <= 1 for row in rows if row["arm"] == "pseudo-label")
    # resumed without the real run in this call: the labeller is the real arm retrained on the subset alone
    runs_path.write_text("".join(line + "\n" for line in runs_path.read_text().splitlines()
                                 if '"balanced"' not in line))
    first_balanced = dict(zip([(r.arm, r.mode) for r in runs], [t for _, t in trained]))[("pseudo-label", "balanced")]
    trained.clear()
    again = run_downstream(real, None, config, runs_path)
    assert [n for n, _ in trained] == [len(subset), by_cell[("pseudo-label", "balanced")].n_train]
    assert trained[1][1] == first_balanced
    assert again[-1].test_score == pytest.approx(by_cell[("pseudo-label", "balanced")].test_score)


def _subset_tensors(real: Path, subset: list, config: DownstreamConfig) -> tuple[torch.Tensor, torch.Tensor]:
    manifest = load_manifest(real)
    train = manifest.select_split("train")
    tiles = downstream._tensors(train, config.tile_size)
    index = {r.id: i for i, r in enumerate(train.records)}
    picks = torch.tensor([index[r.id] for r in subset], dtype=torch.long)
    return tiles.images[picks], tiles.labels[picks]


def test_segmentation_pseudo_masks_join_a_run(real: Path, tmp_path: Path) -> None:
    config = DownstreamConfig(task="segmentation", fractions=(0.5,), rounds=(0, 1), seeds=1, steps=2, size=16,
                              tile_size=16, checkpoint="last", arms=("real", "pseudo-label"))
    runs = run_downstream(real, None, config, tmp_path / "seg.runs.jsonl")
    pseudo = [r for r in runs if r.arm == "pseudo-label"]
    assert len(pseudo) == 1 and pseudo[0].n_extra == pseudo[0].n_real
    assert 0 <= pseudo[0].pseudo_score <= 1
