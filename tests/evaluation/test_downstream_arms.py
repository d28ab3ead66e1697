"""The downstream grid's arms (issue I): balanced top-up, extra real tiles, per-subset synthetic tiles,
per-class recall, resume, paired gains, and old runs files still summarised and drawn."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from testkit import case_records, tile_colour, write_rows
from histosynth.data.manifest import TileRecord, load_manifest
from histosynth.errors import InputError
from histosynth.evaluation import downstream
from histosynth.evaluation.downstream import DownstreamConfig, conditions, run_downstream
from histosynth.evaluation.downstream_draws import (
    class_targets, draw_subset, pick_extra_real, pick_synthetic, synthetic_by_source,
)
from histosynth.evaluation.downstream_runs import DownstreamRun, read_runs
from histosynth.evaluation.downstream_summary import size_series, summarise

N = 48  # tile i: label Polyp x3 then Normal (i % 4), split train/val/test (i % 3), case c(i % 24): 2 tiles each


@pytest.fixture
def real(tmp_path: Path, make_tile_dataset) -> Path:
    return make_tile_dataset(tmp_path / "real", n=N, labels=("Polyp", "Polyp", "Polyp", "Normal"),
                             splits=("train", "val", "test"), cases=[f"c{k}" for k in range(24)])


def _synthetic(real: Path, folder: Path, per_source: int) -> Path:
    """``per_source`` "synthetic" tiles per train tile (its own image, mask and label; mask_source train:<id>)."""
    train = load_manifest(real).select_split("train").records
    rows = [{"id": f"{r.id}__r{k}", "image": str(r.image), "mask": str(r.mask), "label": r.label,
             "mask_source": f"train:{r.id}", "model": "tiny-gen"} for k in range(per_source) for r in train]
    folder.mkdir(parents=True)
    write_rows(folder / "manifest.csv", rows, ["id", "image", "mask", "label", "mask_source", "model"])
    return folder


def test_balanced_top_up_reaches_the_largest_class_from_the_subsets_own_tiles() -> None:
    train = case_records()
    subset = draw_subset(train, 0.25, 1, "classification")
    counts = Counter(r.label for r in subset)
    assert counts["Normal"] < counts["Polyp"]
    assert class_targets([r.label for r in subset], "balanced", 0) == {"Polyp": 0,
                                                                       "Normal": counts["Polyp"] - counts["Normal"]}
    assert class_targets([r.label for r in subset], "rounds", 2) == {k: 2 * v for k, v in counts.items()}
    synth = [TileRecord(f"{r.id}__r{k}", Path("s.png"), label=r.label, extra={"mask_source": f"train:{r.id}"})
             for k in range(8) for r in train]
    paired = synthetic_by_source(synth, {r.id for r in train})
    picks = pick_synthetic(subset, synth, "balanced", 0, paired, np.random.default_rng(0))
    after = counts + Counter(synth[i].label for i in picks)
    assert after["Normal"] == after["Polyp"] == counts["Polyp"]
    inside = {r.id for r in subset}
    assert all(synth[i].extra["mask_source"][len("train:"):] in inside for i in picks)
    per_source = Counter(synth[i].extra["mask_source"] for i in picks)
    assert max(per_source.values()) - min(per_source.values()) <= 1  # round-robin over the rare class's tiles
    # too few synthetic tiles: take what the subset's own tiles have, never borrow from outside
    one_each = synth[:len(train)]
    few = pick_synthetic(subset, one_each, "balanced", 0, synthetic_by_source(one_each, {r.id for r in train}),
                         np.random.default_rng(0))
    assert len(few) == counts["Normal"]
    for mode, rounds in (("rounds", 3), ("balanced", 0)):  # unpaired pool: by label, no repeats
        pooled = pick_synthetic(subset, synth, mode, rounds, None, np.random.default_rng(1))
        assert len(set(pooled)) == len(pooled) == (3 * len(subset) if mode == "rounds" else after["Normal"] - counts["Normal"])


def test_extra_real_tiles_come_from_outside_the_subset_class_by_class() -> None:
    train = case_records()
    subset = draw_subset(train, 0.25, 0, "classification")
    inside = {r.id for r in subset}
    for mode, rounds in (("rounds", 1), ("rounds", 2), ("balanced", 0)):
        extra = pick_extra_real(train, subset, mode, rounds, "classification", 0)
        assert not inside & {r.id for r in extra} and len({r.id for r in extra}) == len(extra)
        wanted = class_targets([r.label for r in subset], mode, rounds)
        got = Counter(r.label for r in extra)
        outside = Counter(r.label for r in train if r.id not in inside)
        assert all(got[label] == min(n, outside[label]) for label, n in wanted.items())
    one, two = (pick_extra_real(train, subset, "rounds", k, "classification", 0) for k in (1, 2))
    assert {r.id for r in one} <= {r.id for r in two}  # nested draws


@pytest.mark.parametrize("fraction", [0.02, 0.05])
def test_tiny_fractions_give_whole_cases_of_every_label(fraction: float) -> None:
    train = case_records(200)
    for seed in range(5):
        subset = draw_subset(train, fraction, seed, "segmentation")
        assert subset and {r.label for r in subset} == {"Normal", "Polyp"}
        cases = {r.extra["case"] for r in subset}
        assert subset == [r for r in train if r.extra["case"] in cases]
        assert len(subset) <= max(6, 2 * fraction * len(train))


def test_a_task_without_usable_tiles_is_one_line() -> None:
    unmasked = [TileRecord(r.id, r.image, label=r.label, extra=r.extra) for r in case_records(4)]
    with pytest.raises(InputError, match="no train tile has a mask"):
        draw_subset(unmasked, 0.5, 0, "segmentation")


def test_conditions_of_the_grid() -> None:
    config = DownstreamConfig(task="classification", rounds=(0, 1, 2), modes=("rounds", "balanced"),
                              arms=("real", "real-noaug", "synthetic", "extra-real"))
    assert conditions(config, 0.1) == [("real", "rounds", 0), ("real-noaug", "rounds", 0),
                                       ("synthetic", "rounds", 1), ("synthetic", "rounds", 2),
                                       ("synthetic", "balanced", 0), ("extra-real", "rounds", 1),
                                       ("extra-real", "rounds", 2), ("extra-real", "balanced", 0)]
    assert all(arm != "extra-real" for arm, _, _ in conditions(config, 1.0))  # nothing outside all of train


def test_grid_arms_train_on_the_right_tiles_and_resume(real: Path, tmp_path: Path, monkeypatch) -> None:
    """Tiles are told apart by their solid colour: each run trains only on what its arm allows."""
    synthetic = _synthetic(real, tmp_path / "synth", per_source=4)
    manifest = load_manifest(real)
    index_of_colour = {tile_colour(i): i for i in range(N)}
    split_of = {i: manifest.records[i].split for i in range(N)}
    seen: list[tuple[bool, list[int]]] = []
    train = downstream._train

    def spy(config, images, targets, num_classes, seed, augment, select, device):
        seen.append((augment, [index_of_colour[tuple(int(v) for v in image[:, 0, 0])] for image in images]))
        return train(config, images, targets, num_classes, seed, augment, select, device)

    monkeypatch.setattr(downstream, "_train", spy)
    config = DownstreamConfig(task="classification", fractions=(0.5,), rounds=(0, 1), seeds=1, steps=2, size=16,
                              tile_size=16, modes=("rounds", "balanced"), checkpoint="last",
                              arms=("real", "real-noaug", "synthetic", "extra-real"))
    runs_path = tmp_path / "runs.jsonl"
    runs = run_downstream(real, synthetic, config, runs_path)
    by_cell = {(r.arm, r.mode, r.rounds): r for r in runs}
    assert len(runs) == len(seen) == 6
    subset = {r.id for r in draw_subset(manifest.select_split("train").records, 0.5, 0, "classification")}
    subset_idx = {i for i in range(N) if manifest.records[i].id in subset}
    for (augment, used), run in zip(seen, runs):
        assert augment == (run.arm != "real-noaug") == run.augment
        assert all(split_of[i] == "train" for i in used)  # never a val or test tile
        assert subset_idx <= set(used) and len(used) == run.n_real + run.n_synthetic + run.n_extra
        if run.arm == "extra-real":
            assert run.n_extra > 0 and not subset_idx & set(used[run.n_real:])
        else:  # synthetic tiles are copies of their source tiles: only the subset's own
            assert set(used) == subset_idx
    counts = Counter(manifest.records[i].label for i in subset_idx)
    assert by_cell[("synthetic", "balanced", 0)].n_synthetic == counts["Polyp"] - counts["Normal"]
    assert by_cell[("synthetic", "rounds", 1)].n_synthetic == len(subset_idx)
    assert by_cell[("synthetic", "rounds", 1)].generator == "tiny-gen"
    for run in runs:
        assert set(run.test_per_class) == {"Normal", "Polyp"} and run.checkpoint == "last" and run.task == "classification"
        assert all(0 <= v <= 1 for v in run.test_per_class.values())

    # a kill after two runs, the third cut mid-write: the rerun trains exactly the missing four
    lines = runs_path.read_text().splitlines()
    runs_path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    seen.clear()
    again = run_downstream(real, synthetic, config, runs_path)
    assert len(seen) == 4 and len(again) == 6
    assert sorted(json.loads(line)["arm"] + json.loads(line)["mode"] for line in runs_path.read_text().splitlines()) \
        == sorted(r.arm + r.mode for r in runs)
    assert run_downstream(real, synthetic, config, runs_path) and len(seen) == 4  # all done: nothing trained
    with pytest.raises(InputError, match="other settings.*steps 2 -> 3"):
        run_downstream(real, synthetic, config.model_copy(update={"steps": 3}), runs_path)
    old = tmp_path / "old.runs.jsonl"  # a file from before the checkpoint field: its runs were picked on val
    old.write_text(json.dumps({"fraction": 0.5, "rounds": 0, "seed": 0, "n_real": 8, "n_synthetic": 0,
                               "val_score": 0.5, "test_score": 0.5, "seconds": 1}) + "\n")
    with pytest.raises(InputError, match="checkpoint val -> last"):
        run_downstream(real, synthetic, config, old)


def test_per_subset_synthetic_folders_and_real_only_grids(real: Path, tmp_path: Path) -> None:
    _synthetic(real, tmp_path / "gen" / "f0.5_s0", per_source=1)
    config = DownstreamConfig(task="segmentation", fractions=(0.5,), rounds=(0, 1), seeds=1, steps=2, size=16,
                              tile_size=16, checkpoint="val", select_every=1)
    runs = run_downstream(real, str(tmp_path / "gen" / "f{fraction}_s{seed}"), config, tmp_path / "seg.jsonl")
    assert [(r.arm, r.n_synthetic > 0) for r in runs] == [("real", False), ("synthetic", True)]
    assert set(runs[0].test_per_class) == {"Normal", "Polyp"}  # Dice by tile class
    with pytest.raises(InputError, match="needs a synthetic folder"):
        run_downstream(real, None, config, tmp_path / "other.jsonl")
    only_real = config.model_copy(update={"arms": ("real",)})
    assert [r.arm for r in run_downstream(real, None, only_real, tmp_path / "real.jsonl")] == ["real"]


def test_summary_pairs_each_seed_with_its_own_real_run_and_reads_old_rows() -> None:
    def run(arm: str, seed: int, score: float, **kw) -> DownstreamRun:
        return DownstreamRun(0.1, kw.pop("rounds", 0), seed, 10, kw.pop("n_synthetic", 0), 0.0, score, 1.0, arm=arm,
                             task="classification", steps=5, **kw)

    runs = [run("real", 0, 0.40), run("real", 1, 0.50), run("synthetic", 0, 0.45, mode="balanced", n_synthetic=20),
            run("synthetic", 1, 0.48, mode="balanced", n_synthetic=20,
                test_per_class={"Normal": 0.5}), run("real-noaug", 0, 0.30)]
    rows = {(r["arm"], r["mode"]): r for r in summarise(runs)}
    balanced = rows[("synthetic", "balanced")]
    assert balanced["gain_mean"] == pytest.approx(0.015) and balanced["gain_sd"] == pytest.approx(np.std([0.05, -0.02], ddof=1))
    assert balanced["seeds_gained"] == 1 and balanced["gain_seeds"] == 2 and balanced["per_class"] == {"Normal": 0.5}
    assert rows[("real", "rounds")]["gain_mean"] is None
    assert rows[("real-noaug", "rounds")]["gain_mean"] == pytest.approx(-0.1)
    # a run trained with other settings never pairs
    assert summarise([run("real", 0, 0.4), DownstreamRun(0.1, 1, 0, 10, 10, 0, 0.9, 1, task="classification",
                                                         steps=50)])[1]["gain_mean"] is None
    old = [json.dumps({"fraction": f, "rounds": k, "seed": 0, "n_real": 10, "n_synthetic": 10 * k, "val_score": 0,
                       "test_score": 0.5 + k / 10, "seconds": 1}) for f in (0.1, 1.0) for k in (0, 1)]
    from histosynth.evaluation.downstream_runs import parse_run

    old_runs = [parse_run(line) for line in old]
    assert [r.arm for r in old_runs] == ["real", "synthetic"] * 2
    series = size_series(summarise(old_runs))
    assert series["real only"] == [(10, 0.5, 0.0), (10, 0.5, 0.0)] and series["10% + synthetic"][-1][1] == 0.6
    legacy_summary = [{k: v for k, v in row.items() if k in ("fraction", "rounds", "seeds", "n_real", "n_synthetic",
                                                             "test_mean", "test_sd")} for row in summarise(old_runs)]
    assert size_series(legacy_summary) == series  # summaries written before arms draw the same


def test_read_runs_ignores_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    row = {"fraction": 1.0, "rounds": 0, "seed": 0, "n_real": 1, "n_synthetic": 0, "val_score": 0, "test_score": 1,
           "seconds": 1, "from_the_future": 3}
    path.write_text(json.dumps(row) + "\n")
    assert read_runs(path)[0].arm == "real" and read_runs(path)[0].checkpoint == "val"  # all old runs picked on val
