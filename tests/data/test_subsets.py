"""`histosynth data subset`: the grid's draw as a manifest; --unlabel-rest keeps exactly the subset's labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testkit import read_rows, run_cli
from histosynth.data.manifest import load_manifest
from histosynth.data.splits import draw_subset
from histosynth.training.tensors import load_tile_tensors


@pytest.fixture
def real(tmp_path: Path, make_tile_dataset) -> Path:
    return make_tile_dataset(tmp_path / "real", n=48, labels=("Polyp", "Polyp", "Polyp", "Normal"),
                             splits=("train", "val", "test"), cases=[f"c{k}" for k in range(24)])


def test_unlabel_rest_keeps_exactly_the_subsets_labels_and_masks(real: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "subset"
    code, stdout, err = run_cli(["data", "subset", str(real), "--fraction", "0.5", "--seed", "3", "--unlabel-rest",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    source = load_manifest(real)
    train = source.select_split("train").records
    subset = {r.id: r for r in draw_subset(train, 0.5, 3, "classification")}
    rows = read_rows(out / "manifest.csv")
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in train)  # every train tile, no val or test tile
    for row in rows:
        assert row["split"] == "train" and Path(row["image"]).is_file()
        if row["id"] in subset:
            assert row["label"] == subset[row["id"]].label and Path(row["mask"]) == subset[row["id"]].mask.resolve()
        else:
            assert row["label"] == "" and row["mask"] == ""
    written = load_manifest(out)
    assert written.classes == source.classes  # label ids as in the base model
    tiles = load_tile_tensors(written, 6, resize=True)
    labelled = [tile_id in subset for tile_id in tiles.ids]
    assert tiles.mask_known.tolist() == labelled
    assert [int(v) != written.classes.null_id for v in tiles.labels] == labelled
    summary = json.loads((out / "subset.json").read_text())
    assert summary["labelled"] == len(subset) and summary["unlabelled"] == len(train) - len(subset)
    assert sorted(summary["ids"]) == sorted(subset) and f"{len(subset)} labelled" in stdout


def test_without_unlabel_rest_only_the_subset_is_written_and_reruns_overwrite(real: Path, tmp_path: Path,
                                                                             capsys) -> None:
    out = tmp_path / "subset"
    for seed in (0, 1):
        assert run_cli(["data", "subset", str(real), "--fraction", "0.25", "--seed", str(seed), "--task",
                        "segmentation", "--out", str(out)], capsys)[0] == 0
    train = load_manifest(real).select_split("train").records
    assert [r["id"] for r in read_rows(out / "manifest.csv")] == [r.id for r in draw_subset(train, 0.25, 1,
                                                                                              "segmentation")]


@pytest.mark.parametrize("args, message", [
    (["--fraction", "0"], "--fraction must be in (0, 1]"),
    (["--fraction", "0.5", "--task", "nope"], "unknown task 'nope'"),
])
def test_bad_options_are_one_line(real: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code, _, err = run_cli(["data", "subset", str(real), *args, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and message in err


def test_a_foreign_folder_is_refused_untouched(real: Path, tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = run_cli(["data", "subset", str(real), "--fraction", "0.5", "--out", str(foreign)], capsys)
    assert code == 2 and "subset.json" in err and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_generator_fine_tunes_on_the_unlabelled_rest(tiny_model_dir: Path, tmp_path: Path, make_tile_dataset,
                                                      capsys) -> None:
    """The leak-free path end to end, tiny: subset -> `train denoiser --init` (2 steps) on that folder."""
    real = make_tile_dataset(tmp_path / "real", n=24, size=(32, 32), labels=("Polyp", "Normal", "Adenocarcinoma"),
                             splits=("train", "val", "test", "train"), cases=[f"c{k}" for k in range(12)])
    out = tmp_path / "subset"
    assert run_cli(["data", "subset", str(real), "--fraction", "0.3", "--unlabel-rest", "--classes",
                    str(tiny_model_dir / "classes.json"), "--out", str(out)], capsys)[0] == 0
    gen = tmp_path / "gen"
    shutil.copytree(tiny_model_dir / "autoencoder", gen / "autoencoder")  # then OUT is a whole model folder
    code, _, err = run_cli(["train", "denoiser", "--init", str(tiny_model_dir), "--data", str(out), "--out", str(gen),
                            "--steps", "2", "--batch-size", "4"], capsys)
    assert code == 0, err
    facts = json.loads((gen / "denoiser" / "histosynth.json").read_text())
    assert "continued_from" in json.dumps(facts)
    from histosynth.models.pipeline import LatentDiffusionModel

    assert LatentDiffusionModel.load(gen).classes.labels == load_manifest(out).classes.labels  # ready to sample
