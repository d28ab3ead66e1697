"""The downstream grid's outputs: the CLI's arms and checks, the HTML report (new and old summaries), and
benchmarks/summarise_downstream.py (tables with paired gains and per-class recall, one SVG per task)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from testkit import run_cli
from histosynth.evaluation.downstream_runs import DownstreamRun
from histosynth.evaluation.downstream_summary import summarise
from histosynth.report.html import _downstream_section

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import summarise_downstream  # noqa: E402


@pytest.fixture
def real(tmp_path: Path, make_tile_dataset) -> Path:
    return make_tile_dataset(tmp_path / "real", n=24, size=(16, 16), labels=("Polyp", "Normal"),
                             splits=("train", "val", "test"), cases=[f"c{k}" for k in range(12)])


def test_real_only_arms_run_without_a_synthetic_folder(real: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.json"
    base = ["evaluate", "downstream", "--real", str(real), "--task", "classification", "--fractions", "0.5",
            "--arms", "real,real-noaug,extra-real", "--modes", "balanced,rounds", "--rounds", "1", "--seeds", "2",
            "--steps", "2", "--size", "16"]
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "give --out" in err
    code, stdout, err = run_cli([*base, "--out", str(out)], capsys)
    assert code == 0, err
    rows = json.loads(out.read_text())["summary"]
    assert {(r["arm"], r["mode"], r["rounds"]) for r in rows} == {
        ("real", "rounds", 0), ("real-noaug", "rounds", 0), ("extra-real", "rounds", 1), ("extra-real", "balanced", 0)}
    extra = next(r for r in rows if r["arm"] == "extra-real" and r["mode"] == "rounds")
    assert extra["n_extra"] > 0 and extra["gain_seeds"] == 2 and "paired gain" in stdout
    assert all(set(r["per_class"]) == {"Normal", "Polyp"} for r in rows)
    code, _, err = run_cli([*base[:-2], "--size", "16", "--arms", "real,fake", "--out", str(out)], capsys)
    assert code == 2 and "--arms" in err


def _runs(task: str) -> list[DownstreamRun]:
    runs = []
    for seed, base in enumerate([0.40, 0.50, 0.45]):
        common = {"task": task, "steps": 10, "checkpoint": "last"}
        runs.append(DownstreamRun(0.1, 0, seed, 10, 0, 0, base, 1, arm="real", test_per_class={"Normal": 0.2}, **common))
        runs.append(DownstreamRun(0.1, 0, seed, 10, 12, 0, base + 0.05, 1, arm="synthetic", mode="balanced",
                                  generator="gen-a", test_per_class={"Normal": 0.6, "Polyp": 0.5}, **common))
        runs.append(DownstreamRun(1.0, 0, seed, 100, 0, 0, 0.7, 1, arm="real", **common))
        runs.append(DownstreamRun(0.1, 4, seed, 10, 0, 0, base + 0.01, 1, arm="pseudo-label", n_extra=40,
                                  pseudo_score=0.6 + 0.1 * seed, **common))
    return runs


def test_summarise_script_prints_gains_and_rare_class_recall_and_draws_each_task(tmp_path: Path, capsys) -> None:
    paths = []
    for task in ("classification", "segmentation"):
        path = tmp_path / f"{task}.runs.jsonl"
        path.write_text("".join(json.dumps(asdict(run)) + "\n" for run in _runs(task)))
        paths.append(f"{task}={path}")
    svg = tmp_path / "downstream_{task}.svg"
    assert summarise_downstream.main([*paths, "--svg", str(svg), "--classes", "Normal"]) == 0
    text = capsys.readouterr().out
    assert "| 0.1 | synthetic balanced | 10 + 12 + 0 | 0.500 +- 0.050 | +0.050 +- 0.000 (3 of 3 gained) | 3 |" in text
    assert "| 0.1 | synthetic balanced | 0.600 |" in text and "generator gen-a" in text
    assert "| 0.1 | pseudo-label x4 | 10 + 0 + 40 | " in text
    assert "(accuracy of the added tiles' labels against the truth, mean over seeds): 0.1 pseudo-label x4 0.700" in text
    assert "(Dice of the added masks against the truth" in text  # the segmentation file's line
    for task in ("classification", "segmentation"):
        drawn = (tmp_path / f"downstream_{task}.svg").read_text()
        assert "real only" in drawn and "10% + synthetic balanced" in drawn
    with pytest.raises(SystemExit, match="put {task} in --svg"):
        summarise_downstream.main([*paths, "--svg", str(tmp_path / "one.svg")])


def test_report_reads_new_and_old_downstream_summaries() -> None:
    new = _downstream_section({"config": {"task": "classification", "checkpoint": "last"},
                               "summary": summarise(_runs("classification"))})
    assert "synthetic balanced" in new and "3/3 gained" in new and "weights after the last step" in new
    old_rows = [{"fraction": 0.1, "rounds": k, "seeds": 2, "n_real": 10, "n_synthetic": 10 * k, "test_mean": 0.5,
                 "test_sd": 0.01} for k in (0, 1)]
    old = _downstream_section({"config": {"task": "segmentation"}, "summary": old_rows})
    assert "synthetic x1" in old and "<polyline" in old and "weights selected on val" in old
