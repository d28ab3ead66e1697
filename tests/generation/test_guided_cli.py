"""CLI: sample --like / --prototype, synthesize-balanced, train like-model / prototype-classifier."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histosynth.errors import HistosynthError

from testkit import run_cli
from guided_models import like_model_dir, classifier_dir  # noqa: F401  (fixtures)
from tiny_models import TILE


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _reference(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 255, (TILE + 8, TILE + 8, 3), dtype=np.uint8)).save(path)  # resized to the tile
    return path


def _balanced(args: list[str], capsys) -> tuple[int, str]:
    """Run ``synthesize-balanced`` as ``histosynth`` would (one error line, exit 2)."""
    import typer

    from histosynth.cli.synthesize import synthesize_balanced

    app = typer.Typer()
    app.command("synthesize-balanced")(synthesize_balanced)
    app.command("unused")(lambda: None)
    try:
        app(args=["synthesize-balanced", *args], standalone_mode=False)
        code = 0
    except HistosynthError as error:
        print(f"error: {error}")
        code = 2
    return code, capsys.readouterr().out


def test_sample_like_writes_unmasked_tiles_and_resumes(tmp_path: Path, like_model_dir: Path, capsys) -> None:
    out, ref = tmp_path / "out", _reference(tmp_path)
    args = ["sample", "--model", str(like_model_dir), "--like", str(ref), "--n", "3", "--steps", "2", "--out", str(out)]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["like_000000", "like_000001", "like_000002"]
    assert {r["mask"] for r in rows} == {""} and {r["label"] for r in rows} == {""}
    assert rows[0]["condition"].startswith("like ref.png@") and rows[0]["condition"].endswith("w=2")
    assert not any((out / "masks").iterdir()) and len(list((out / "images").iterdir())) == 3
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "0 tiles written, 3 already there" in stdout
    labelled = tmp_path / "labelled"
    code, _, err = run_cli([*args[:-1], str(labelled), "--label", "Polyp", "--masks", "procedural",
                            "--like-weight", "3"], capsys)
    assert code == 0, err
    rows = _rows(labelled)
    assert {r["label"] for r in rows} == {"Polyp"} and rows[0]["mask"] == "masks/like_000000.png"
    assert not np.array_equal(np.asarray(Image.open(out / "images" / "like_000000.png")),
                              np.asarray(Image.open(labelled / "images" / "like_000000.png")))


def test_sample_like_and_prototype_errors_are_one_line(tmp_path: Path, tiny_model_dir: Path, classifier_dir: Path,
                                                       capsys) -> None:
    ref, out = _reference(tmp_path), str(tmp_path / "out")
    base = ["sample", "--model", str(tiny_model_dir), "--steps", "2", "--out", out]
    cases = [
        (["--like", str(ref)], "not conditioned on tile embeddings"),
        (["--like", str(tmp_path / "missing.png")], "not conditioned on tile embeddings"),
        (["--prototype", "1"], "--prototype needs --prototype-classifier"),
        (["--prototype", "5", "--prototype-classifier", str(classifier_dir)], "prototype id 5 is out of range"),
        (["--prototype", "1", "--prototype-classifier", str(classifier_dir), "--sampler", "dpm"], "DDIM"),
        (["--prototype", "1", "--like", str(ref)], "separate modes"),
        (["--prototype", "1", "--prototype-classifier", str(tiny_model_dir)], "not a histosynth model folder"),
    ]
    for extra, message in cases:
        code, _, err = run_cli([*base, *extra], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)


def test_sample_prototype_and_synthesize_balanced(tmp_path: Path, tiny_model_dir: Path, classifier_dir: Path,
                                                  capsys) -> None:
    out = tmp_path / "one"
    code, _, err = run_cli(["sample", "--model", str(tiny_model_dir), "--prototype", "tiny/1", "--prototype-classifier",
                            str(classifier_dir), "--n", "2", "--steps", "2", "--out", str(out)], capsys)
    assert code == 0, err
    assert [(r["id"], r["prototype"]) for r in _rows(out)] == [("proto001_000000", "1"), ("proto001_000001", "1")]
    balanced = tmp_path / "balanced"
    args = ["--model", str(tiny_model_dir), "--prototype-classifier", str(classifier_dir), "--per-prototype", "2",
            "--steps", "2", "--batch-size", "4", "--out", str(balanced)]
    code, stdout = _balanced(args, capsys)
    assert code == 0, stdout
    rows = _rows(balanced)
    assert [r["prototype"] for r in rows] == ["0", "0", "1", "1", "2", "2"]
    assert [int(r["seed"]) for r in rows] == list(range(6)) and "classifier@" in rows[0]["condition"]
    # tiles of prototype 1 share the single-prototype run's noise only where the seed is the same
    assert np.array_equal(np.asarray(Image.open(out / "images" / "proto001_000000.png")),
                          np.asarray(Image.open(balanced / "images" / "proto000_000000.png"))) is False
    code, stdout = _balanced([*args[:-2], "--prototype", "9", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "prototype id 9 is out of range" in stdout


def test_train_commands_for_like_model_and_classifier(tmp_path: Path, tiny_model_dir: Path, make_tile_dataset,
                                                      capsys) -> None:
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.embeddings.prototypes import write_prototype_table

    manifest = make_tile_dataset(tmp_path / "data", n=6, size=(TILE, TILE))
    like = tmp_path / "like"
    code, stdout, err = run_cli(["train", "like-model", "--data", str(manifest), "--init", str(tiny_model_dir),
                                 "--encoder", "pixels", "--steps", "2", "--batch-size", "2", "--out", str(like)],
                                capsys)
    assert code == 0, err
    assert LatentDiffusionModel.load(like).denoiser.config.embedding_encoder == "pixels"
    images = [str(tmp_path / "data" / "images" / f"tile_{i}.png") for i in range(6)]
    table = tmp_path / "protos.h5ad"
    write_prototype_table(table, images, np.arange(6) % 3, ["a/0", "a/1", "a/2"], np.eye(3))
    config = tmp_path / "clf.yaml"
    config.write_text("model:\n  widths: [8, 16]\n  norm_num_groups: 4\nobjective:\n  latent_variants: 1\n")
    clf = tmp_path / "clf"
    code, stdout, err = run_cli(["train", "prototype-classifier", "--prototypes", str(table), "--model",
                                 str(tiny_model_dir), "--config", str(config), "--steps", "2", "--batch-size", "3",
                                 "--out", str(clf)], capsys)
    assert code == 0, err
    assert "3 prototypes" in stdout and (clf / "classifier.safetensors").is_file()
    code, _, err = run_cli(["train", "like-model", "--data", str(manifest), "--init", str(tiny_model_dir),
                            "--config", str(config), "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "invalid config value widths" in err


@pytest.mark.parametrize("flag", ["--like-weight", "--prototype-guidance"])
def test_guidance_weights_must_not_be_negative(flag: str, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["sample", flag, "-1", "--out", str(tmp_path)], capsys)
    assert code == 2 and flag in err
