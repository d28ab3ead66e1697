"""`histosynth train ... --out` at the model-family level: a folder holding another family of model (or a part
folder, or a part of the wrong kind) is refused in one line naming the folder and what it holds, exit 2, nothing
written; the recipes of one diffusion model share its folder and a rerun resumes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from histosynth.training.destination import RECIPES, check_training_out, folder_holds
from testkit import run_cli, write_tile_dataset
from tiny_models import TILE, save_tiny_mask_model


def _declare(folder: Path, kind: str, **extra: str) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "histosynth.json").write_text(json.dumps({"kind": kind, "format_version": 1, "config": {}, **extra}))


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _mask_model(model: Path) -> Path:
    return save_tiny_mask_model(model) / "mask_model"


def _part(name: str) -> Callable[[Path, Path], Path]:
    """A maker of a copy of the tiny model's ``name``/ part alone (a part folder given as ``--out``)."""
    return lambda model, out: shutil.copytree(_mask_model(model) if name == "mask_model" else model / name, out)


def _declared(kind: str) -> Callable[[Path, Path], Path]:
    return lambda model, out: (_declare(out, kind), out)[1]


def _swapped(part: str, source: str) -> Callable[[Path, Path], Path]:
    """A maker of a copy of the tiny model (with a mask model) whose ``part``/ is a copy of its ``source``/."""
    def make(model: Path, out: Path) -> Path:
        shutil.copytree(save_tiny_mask_model(model), out)
        shutil.rmtree(out / part)
        shutil.copytree(out / source, out / part)
        return out

    return make


#: Folders of another family: name -> (recipe, maker from the tiny model folder and OUT, what the line says).
FOREIGN: dict[str, tuple[str, Callable[[Path, Path], Path], str]] = {
    "a mask model folder": ("denoiser", _part("mask_model"), "holds a mask model (the mask_model/ part of a "
                            "model folder), not a diffusion model folder"),
    "a denoiser folder": ("mask-model", _part("denoiser"), "holds an image denoiser (the denoiser/ part of a "
                          "model folder), not a diffusion model folder"),
    "an autoencoder folder": ("decoder", _part("autoencoder"), "holds an autoencoder (the autoencoder/ part of a "
                              "model folder), not a diffusion model folder"),
    "a composition model": ("denoiser", _declared("composition-model"),
                            "holds a composition model, not a diffusion model folder"),
    "a prototype classifier": ("autoencoder", _declared("prototype-classifier"),
                               "holds a prototype classifier, not a diffusion model folder"),
    "a histology encoder": ("encoder", _declared("histology-encoder"),
                            "holds a histology encoder, not a diffusion model folder"),
    "a segmenter": ("like-model", _declared("segmenter"),
                    "holds a model of kind 'segmenter', not a diffusion model folder"),
    "a diffusion model, for a classifier": ("prototype-classifier", lambda model, out: shutil.copytree(model, out),
                                            "holds a diffusion model folder, not a prototype classifier"),
    "a composition model, for a classifier": ("prototype-classifier", _declared("composition-model"),
                                              "holds a composition model, not a prototype classifier"),
    "a mask model in denoiser/": ("denoiser", _swapped("denoiser", "mask_model"),
                                  "its denoiser/ holds a mask model, not an image denoiser"),
    "an image denoiser in mask_model/": ("mask-model", _swapped("mask_model", "denoiser"),
                                         "its mask_model/ holds an image denoiser, not a mask model"),
    "a denoiser in autoencoder/": ("encoder", _swapped("autoencoder", "denoiser"),
                                   "its autoencoder/ holds an image denoiser, not an autoencoder"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_a_folder_of_another_model_family_is_refused_naming_what_it_holds(case, tiny_model_dir, tmp_path,
                                                                           capsys) -> None:
    recipe, make, says = FOREIGN[case]
    out = make(tiny_model_dir, tmp_path / "out")
    before = _snapshot(tmp_path)
    inputs = ["--prototypes", str(tmp_path / "table.h5ad")] if recipe == "prototype-classifier" else \
        ["--data", str(tmp_path / "manifest.csv")]
    code, _, err = run_cli(["train", recipe, *inputs, "--out", str(out)], capsys)
    written_by = "" if says.startswith("its ") else f" (what `histosynth train {recipe}` writes)"
    assert code == 2 and err == f"error: {out}: {says}{written_by}; choose an empty or new --out\n", err
    assert _snapshot(tmp_path) == before


def test_what_a_folder_holds(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert folder_holds(tiny_model_dir) == "a diffusion model folder"
    assert folder_holds(_mask_model(tiny_model_dir)) == "a mask model (the mask_model/ part of a model folder)"
    assert folder_holds(tmp_path) is None
    (tmp_path / "histosynth.json").write_text("{")  # unreadable: not a declared model (prepare_output_dir refuses it)
    assert folder_holds(tmp_path) is None


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r != "prototype-classifier"])
def test_every_diffusion_recipe_accepts_a_complete_model_folder(recipe, tiny_model_dir: Path) -> None:
    """Autoencoder, denoiser, mask model, encoder and every recipe's runs/ share one folder."""
    from histosynth.models.histology_encoder import KIND as ENCODER_KIND

    save_tiny_mask_model(tiny_model_dir)
    _declare(tiny_model_dir / "encoder", ENCODER_KIND)
    for run in ("autoencoder", "denoiser", "decoder", "mask_model", "encoder", "like"):
        (tiny_model_dir / "runs" / run).mkdir(parents=True)
    assert check_training_out(tiny_model_dir, recipe) == tiny_model_dir


def test_a_mask_model_trains_into_the_model_folder_and_a_rerun_resumes(tiny_model_dir, tmp_path, capsys) -> None:
    manifest = write_tile_dataset(tmp_path / "data", n=4, size=(TILE, TILE), splits=("train",))
    image_model = {p: p.read_bytes() for p in sorted(tiny_model_dir.rglob("*")) if p.is_file()}
    args = ["train", "mask-model", "--data", str(manifest), "--out", str(tiny_model_dir), "--steps", "2",
            "--batch-size", "2", "--tile-size", str(TILE), "--factor", "4", "--threads", "1"]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "mask model: 2 steps" in out, err
    assert folder_holds(tiny_model_dir / "mask_model") == "a mask model (the mask_model/ part of a model folder)"
    assert all(p.read_bytes() == data for p, data in image_model.items())  # the image model is untouched
    weights = (tiny_model_dir / "mask_model" / "denoiser.safetensors").read_bytes()
    code, out, err = run_cli(args, capsys)  # the same run again: resumes from its finished checkpoint
    assert code == 0 and "mask model: 2 steps" in out, err
    assert (tiny_model_dir / "mask_model" / "denoiser.safetensors").read_bytes() == weights
    for recipe in ("autoencoder", "denoiser", "decoder", "encoder", "like-model"):
        check_training_out(tiny_model_dir, recipe)
