"""Filtered mode of the downstream grid: an oversampled synthetic pool, balanced counts, each class taking the
tiles the seed's real-only model agrees with most (nothing outside the subset informs the pick)."""

from __future__ import annotations

import math
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from testkit import case_records, write_rows
from histosynth.data.manifest import TileRecord, load_manifest
from histosynth.evaluation import downstream
from histosynth.evaluation.classification import ClassifierTrainConfig, TileClassifier
from histosynth.evaluation.downstream import DownstreamConfig, conditions, run_downstream
from histosynth.evaluation.downstream_draws import (
    class_targets, draw_subset, pick_synthetic, synthetic_by_source, synthetic_candidates,
)
from histosynth.evaluation.downstream_summary import cell_name, size_series, summarise

N = 48


@pytest.fixture
def real(tmp_path: Path, make_tile_dataset) -> Path:
    return make_tile_dataset(tmp_path / "real", n=N, labels=("Polyp", "Polyp", "Polyp", "Normal"),
                             splits=("train", "val", "test"), cases=[f"c{k}" for k in range(24)])


def test_filtered_picks_the_best_agreeing_candidates_of_each_class_from_the_subset_only() -> None:
    train = case_records()
    subset = draw_subset(train, 0.25, 1, "classification")
    synth = [TileRecord(f"{r.id}__r{k}", Path("s.png"), label=r.label, extra={"mask_source": f"train:{r.id}"})
             for k in range(6) for r in train]
    paired = synthetic_by_source(synth, {r.id for r in train})
    candidates = synthetic_candidates(subset, synth, paired)
    inside = {r.id for r in subset}
    assert {synth[i].extra["mask_source"][len("train:"):] for i in candidates} == inside
    assert len(candidates) == 6 * len(subset)
    agreement = {i: float((i * 7919) % 101) / 100 for i in candidates}  # an arbitrary, fixed ranking
    picks = pick_synthetic(subset, synth, "filtered", 0, paired, np.random.default_rng(0), agreement)
    need = class_targets([r.label for r in subset], "balanced", 0)
    assert Counter(synth[i].label for i in picks) == {k: v for k, v in need.items() if v}
    normal = [i for i in candidates if synth[i].label == "Normal"]
    kept = set(picks)
    assert min(agreement[i] for i in kept) >= max(agreement[i] for i in normal if i not in kept)
    assert set(picks) <= set(candidates)
    with pytest.raises(ValueError, match="agreement"):
        pick_synthetic(subset, synth, "filtered", 0, paired, np.random.default_rng(0))
    pooled = synthetic_candidates(subset, synth, None)  # an unpaired folder: every tile is a candidate
    assert pooled == list(range(len(synth)))


def test_agreement_is_the_label_probability_or_the_mask_dice(real: Path) -> None:
    manifest = load_manifest(real)
    tiles = downstream._tensors(manifest, 16)
    classifier = TileClassifier(2, ClassifierTrainConfig(size=16))
    with torch.no_grad():
        classifier.head.weight.zero_()
        classifier.head.bias.copy_(torch.tensor([math.log(3.0), 0.0]))  # p = (0.75, 0.25) for every tile
    config = DownstreamConfig(task="classification", size=16, tile_size=16)
    labels = tiles.labels.clone()
    labels[0] = 5  # an unlabelled tile (id past the class list) agrees with nothing
    tiles.labels = labels
    got = downstream._agreement("classification", classifier, tiles, [0, 1, 2, 3], config, 2)
    expected = {i: (0.0 if i == 0 else 0.75 if int(labels[i]) == 0 else 0.25) for i in range(4)}
    assert got == pytest.approx(expected)

    class AllGland(torch.nn.Module):  # predicts foreground everywhere
        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(x), 1, *x.shape[-2:])

    seg = downstream._agreement("segmentation", AllGland(), tiles, [1, 2], config.model_copy(update={"task": "segmentation"}), 2)
    for i in (1, 2):
        gland = float((tiles.masks[i] == 1).sum())
        assert seg[i] == pytest.approx(2 * gland / (tiles.masks[i].numel() + gland))
    assert downstream._agreement("classification", classifier, tiles, [], config, 2) == {}


def test_filtered_runs_score_the_pool_with_the_subsets_own_real_model(real: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    manifest = load_manifest(real)
    train = manifest.select_split("train").records
    folder = tmp_path / "synth"
    rows = [{"id": f"{r.id}__r{k}", "image": str(r.image), "mask": str(r.mask), "label": r.label,
             "mask_source": f"train:{r.id}", "model": "tiny-gen"} for k in range(4) for r in train]
    folder.mkdir()
    write_rows(folder / "manifest.csv", rows, ["id", "image", "mask", "label", "mask_source", "model"])
    trained: list[int] = []
    scored: list[list[int]] = []
    picked: list[list[int]] = []
    train_fn, agree_fn, pick_fn = downstream._train, downstream._agreement, downstream.pick_synthetic

    def spy_train(config, images, targets, num_classes, seed, augment, select, device):
        trained.append(len(images))
        return train_fn(config, images, targets, num_classes, seed, augment, select, device)

    def favour_late_rounds(task, model, tiles, candidates, config, num_labels):
        scored.append(list(candidates))
        agree_fn(task, model, tiles, candidates, config, num_labels)  # runs on the real scorer
        return {i: float(rows[i]["id"][-1]) for i in candidates}  # __r3 first, then __r2, ...

    def spy_pick(*args, **kwargs):
        picked.append(pick_fn(*args, **kwargs))
        return picked[-1]

    monkeypatch.setattr(downstream, "_train", spy_train)
    monkeypatch.setattr(downstream, "_agreement", favour_late_rounds)
    monkeypatch.setattr(downstream, "pick_synthetic", spy_pick)
    config = DownstreamConfig(task="classification", fractions=(0.5,), rounds=(0,), seeds=1, steps=2, size=16,
                              tile_size=16, modes=("balanced", "filtered"), checkpoint="last",
                              arms=("real", "synthetic", "extra-real"))
    assert conditions(config, 0.5) == [("real", "rounds", 0), ("synthetic", "balanced", 0),
                                       ("synthetic", "filtered", 0), ("extra-real", "balanced", 0)]
    runs = run_downstream(real, folder, config, tmp_path / "runs.jsonl")
    subset = draw_subset(train, 0.5, 0, "classification")
    counts = Counter(r.label for r in subset)
    by_mode = {(r.arm, r.mode): r for r in runs}
    filtered = by_mode[("synthetic", "filtered")]
    assert filtered.n_synthetic == by_mode[("synthetic", "balanced")].n_synthetic == counts["Polyp"] - counts["Normal"]
    # real (also the filter's scorer), balanced, filtered, extra real: the real-only model is not trained twice
    assert trained == [len(subset), len(subset) + filtered.n_synthetic, len(subset) + filtered.n_synthetic,
                       len(subset) + by_mode[("extra-real", "balanced")].n_extra]
    inside = {r.id for r in subset}
    assert len(scored) == 1 and {rows[i]["mask_source"][len("train:"):] for i in scored[0]} == inside
    normal_rounds = sorted((int(rows[i]["id"][-1]) for i in scored[0] if rows[i]["label"] == "Normal"), reverse=True)
    assert sorted((int(rows[i]["id"][-1]) for i in picked[-1]), reverse=True) == normal_rounds[:filtered.n_synthetic]
    assert normal_rounds[:filtered.n_synthetic] != sorted(normal_rounds)[:filtered.n_synthetic]  # the pick mattered
    # resumed without the real run in this call: the scorer is the real arm retrained on the subset alone
    runs_path = tmp_path / "runs.jsonl"
    runs_path.write_text("".join(line + "\n" for line in runs_path.read_text().splitlines()
                                 if '"filtered"' not in line))
    trained.clear()
    picked_before = picked[-1]
    run_downstream(real, folder, config, runs_path)
    assert trained == [len(subset), len(subset) + filtered.n_synthetic] and picked[-1] == picked_before
    summary = summarise(runs)
    assert "synthetic filtered" in {cell_name(row) for row in summary}
    assert "50% + synthetic filtered" in size_series(summary)


def test_label_adherence_judges_synthetic_tiles_as_it_judges_real_ones(real: Path, tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    """A folder of copies of the test tiles must score exactly the judge's test recall; seeds pool; the judge
    is trained once and then read from its cache."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import issue_i_label_adherence as adherence

    test = load_manifest(real).select_split("test").records
    for seed in range(2):
        folder = tmp_path / f"gen_s{seed}"
        folder.mkdir()
        rows = [{"id": f"{r.id}__{seed}", "image": str(r.image), "label": r.label, "model": f"g{seed}"} for r in test]
        write_rows(folder / "manifest.csv", rows, ["id", "image", "label", "model"])
    out = tmp_path / "adherence.json"
    args = [f"copies={tmp_path}/gen_s{{seed}}", "--seeds", "2", "--data", str(real), "--train-steps", "3",
            "--size", "16", "--tile-size", "16", "--out", str(out)]
    monkeypatch.chdir(tmp_path)  # the judge's cache goes under bench_out/ here
    assert adherence.main(args) == 0
    result = json.loads(out.read_text())
    copies = result["synthetic"]["copies"]
    assert copies["per_class"] == pytest.approx(result["real test"]["per_class"])
    assert copies["n"] == 2 * result["real test"]["n"] == 2 * len(test)
    assert copies["generators"] == ["g0", "g1"]
    assert result["synthetic"]["copies, seed 1"]["n"] == len(test)
    for label, row in copies["called_as"].items():  # rows of the confusion matrix: sum to 1, diagonal is recall
        assert sum(row.values()) == pytest.approx(1.0)
        assert row.get(label, 0.0) == pytest.approx(copies["per_class"][label])
    assert "| copies |" in capsys.readouterr().out

    def no_training(*args, **kwargs):
        raise AssertionError("the cached judge should have been used")

    monkeypatch.setattr("histosynth.evaluation.classification.train_classifier", no_training)
    assert adherence.main(args) == 0 and json.loads(out.read_text())["real test"] == result["real test"]
