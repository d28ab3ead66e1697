"""`evaluate downstream --quick`: the grid runs, resumes without redoing runs, and refuses bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testkit import run_cli
from histosynth.evaluation.downstream import DownstreamRun, summarise
from histosynth.evaluation.downstream_runs import read_runs

SIZE = 32


def _write(root: Path, n: int, splits: list[str], masks: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[: rng.integers(4, SIZE - 4)] = 255
        image = np.where(mask[..., None] > 0, [200, 80, 160], [240, 220, 230]).astype(np.uint8)
        image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"t{i}.png")
        row = {"id": f"t{i}", "image": f"images/t{i}.png", "mask": "", "label": ["Normal", "Polyp"][i % 2],
               "split": splits[i % len(splits)], "case": f"c{i // 2}"}
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / f"t{i}.png")
            row["mask"] = f"masks/t{i}.png"
        rows.append(row)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture
def real(tmp_path: Path) -> Path:
    return _write(tmp_path / "real", 24, ["train", "train", "val", "test"])


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_quick_grid_runs_then_resumes_without_redoing_runs(real: Path, tmp_path: Path, task: str, capsys) -> None:
    synthetic = _write(tmp_path / "synth", 16, [""], seed=1).parent
    out = tmp_path / "downstream.json"
    args = ["evaluate", "downstream", "--real", str(real), "--synthetic", str(synthetic), "--task", task,
            "--quick", "--out", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0, stdout
    result = json.loads(out.read_text())
    rows = {(r["fraction"], r["rounds"]): r for r in result["summary"]}
    assert set(rows) == {(1.0, 0), (1.0, 1)}
    assert rows[(1.0, 0)]["n_synthetic"] == 0 and rows[(1.0, 1)]["n_synthetic"] == 12  # 12 real train tiles
    assert all(0.0 <= r["test_mean"] <= 1.0 for r in rows.values())
    runs_file = Path(result["runs_file"])
    before = runs_file.read_text()
    assert len(before.splitlines()) == 2
    assert run_cli(args, capsys)[0] == 0
    assert runs_file.read_text() == before  # nothing redone, nothing duplicated


def test_a_run_cut_mid_write_is_dropped_and_redone(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    good = DownstreamRun(1.0, 0, 0, 10, 0, 0.5, 0.6, 1.0)
    path.write_text(json.dumps(good.__dict__) + "\n" + '{"fraction": 1.0, "rou')
    assert read_runs(path) == [good]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 1


def test_summary_reports_mean_and_sd_over_seeds() -> None:
    runs = [DownstreamRun(0.25, 1, s, 10, 10, 0.0, score, 1.0) for s, score in enumerate([0.5, 0.7])]
    (row,) = summarise(runs)
    assert row["test_mean"] == pytest.approx(0.6) and row["test_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_segmentation_needs_synthetic_masks_and_a_known_task(real: Path, tmp_path: Path, capsys) -> None:
    unmasked = _write(tmp_path / "nomasks", 8, [""], masks=False).parent
    code, _, err = run_cli(["evaluate", "downstream", "--real", str(real), "--synthetic", str(unmasked), "--quick"], capsys)
    assert code == 2 and "without masks" in err
    code, _, err = run_cli(["evaluate", "downstream", "--real", str(real), "--synthetic", str(unmasked), "--task", "nope"],
                        capsys)
    assert code == 2 and "unknown task 'nope'" in err


def test_report_plots_the_downstream_grid(real: Path, tmp_path: Path, capsys) -> None:
    synthetic = _write(tmp_path / "synth", 16, [""], seed=1).parent
    assert run_cli(["evaluate", "downstream", "--real", str(real), "--synthetic", str(synthetic), "--quick"], capsys)[0] == 0
    assert (synthetic / "audit" / "downstream_segmentation.json").is_file()
    assert run_cli(["report", str(synthetic), "--real", str(real), "--cache", str(tmp_path / "cache")], capsys)[0] == 0
    html = (synthetic / "audit" / "report.html").read_text()
    assert "Downstream utility: segmentation" in html and "<polyline" in html


def test_paired_synthetic_tiles_follow_the_real_subset(real: Path, tmp_path: Path) -> None:
    from histosynth.data.manifest import TileManifest, TileRecord, load_manifest
    from histosynth.evaluation.downstream_draws import pick_synthetic, synthetic_by_source

    train = load_manifest(real).select_split("train")
    records = [TileRecord(f"{r.id}_r{k}", Path("x.png"), extra={"mask_source": f"train:{r.id}"})
               for k in range(3) for r in train.records]
    synth = TileManifest(tmp_path, records, train.classes)
    paired = synthetic_by_source(synth.records, {r.id for r in train.records})
    assert paired is not None and all(len(v) == 3 for v in paired.values())
    subset = train.records[:4]
    picked = pick_synthetic(subset, records, "rounds", 2, paired, np.random.default_rng(0))
    assert sorted(records[i].id for i in picked) == sorted(f"{t.id}_r{k}" for t in subset for k in range(2))
    assert pick_synthetic(subset, records, "rounds", 0, paired, np.random.default_rng(0)) == []
    # one tile from an unknown source (or without mask_source) turns pairing off
    records.append(TileRecord("stray", Path("y.png"), extra={"mask_source": "train:not-a-train-tile"}))
    assert synthetic_by_source(records, {r.id for r in train.records}) is None
    pooled = pick_synthetic(subset, records, "rounds", 2, None, np.random.default_rng(0))
    assert len(pooled) == 8 and len(set(pooled)) == 8
