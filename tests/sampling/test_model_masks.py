"""Tile masks from the model folder's mask model: determinism, valid class maps, the ``model`` mask source
of ``generate_dataset`` / ``histosynth sample`` and its fallback to procedural masks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testkit import run_cli

from histosynth.errors import ModelFolderError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.generate import MaskSource, choose_mask_source, generate_dataset
from histosynth.sampling.masks import generate_tile_masks, mask_model_identity, tile_class_map
from histosynth.sampling.sampler import SamplingSettings

from tiny_models import TILE, save_tiny_mask_model


@pytest.fixture
def model_dir(tiny_model_dir: Path) -> Path:
    return save_tiny_mask_model(tiny_model_dir)


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_model_masks_are_class_maps_deterministic_per_seed_whatever_the_batch(model_dir: Path) -> None:
    model = LatentDiffusionModel.load(model_dir)
    batch = generate_tile_masks(model, [0, 1, 2, 1], [5, 6, 7, 9], steps=3)
    assert batch.shape == (4, TILE, TILE) and batch.dtype == np.uint8
    assert batch.max() < model.classes.num_mask_classes  # every pixel a class: no "unknown" left in a tile
    alone = generate_tile_masks(model, [1], [6], steps=3)[0]
    assert np.array_equal(batch[1], alone)  # the same mask alone, in a batch, in another order
    assert np.array_equal(generate_tile_masks(model, [2, 1], [7, 6], steps=3)[1], alone)
    assert np.array_equal(generate_tile_masks(model, [0, 1, 2, 1], [5, 6, 7, 9], steps=3), batch)
    others = generate_tile_masks(model, [1] * 4, [100, 101, 102, 103], steps=3)
    assert not all(np.array_equal(alone, other) for other in others)  # seeds matter
    unconditional = generate_tile_masks(model, [model.denoiser.config.null_label], [6], steps=3)
    assert unconditional.shape == (1, TILE, TILE)


def test_smaller_tiles_are_crops_and_a_folder_without_mask_model_is_one_line(model_dir: Path,
                                                                              tiny_model_dir: Path) -> None:
    model = LatentDiffusionModel.load(model_dir)
    full = generate_tile_masks(model, [1], [3], steps=2)[0]
    assert np.array_equal(generate_tile_masks(model, [1], [3], steps=2, size=20)[0], full[:20, :20])
    assert mask_model_identity(model).startswith("model/mask_model@")
    import shutil

    shutil.rmtree(model_dir / "mask_model")
    bare = LatentDiffusionModel.load(model_dir)
    with pytest.raises(ModelFolderError, match="no mask_model/; train one") as error:
        generate_tile_masks(bare, [1], [3])
    assert "\n" not in str(error.value)


def test_cleaning_fills_dropped_cells_from_their_neighbours() -> None:
    fractions = np.zeros((2, 8, 8), np.float32)
    fractions[0] = 0.9  # background everywhere ...
    fractions[1, :, 4:] = 0.95  # ... but a gland on the right half
    fractions[0, :, 4:] = 0.1
    fractions[1, 1, 1], fractions[0, 1, 1] = 0.8, 0.2  # a one-cell speck: too small, becomes background
    fractions[:, 6, 6] = 0.3  # a low-confidence cell inside the gland keeps its winner
    fractions[1, 6, 6] = 0.35
    mask = tile_class_map(fractions, 4, 32)
    assert mask.shape == (32, 32) and set(np.unique(mask)) == {0, 1}
    assert (mask[:, :14] == 0).all() and (mask[:, 18:] == 1).all()


def test_generate_dataset_with_model_masks_records_their_provenance_and_resumes(model_dir: Path,
                                                                               tmp_path: Path) -> None:
    model = LatentDiffusionModel.load(model_dir)
    source = MaskSource(None, model=True, model_steps=2)
    out = tmp_path / "synth"
    settings = SamplingSettings(steps=2, batch_size=3)
    generate_dataset(model, out, 2, [0, 2], source, settings, seed=4)
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["normal_000000", "normal_000001", "adenocarcinoma_000000",
                                       "adenocarcinoma_000001"]
    identity = mask_model_identity(model)
    assert {r["mask_source"] for r in rows} == {f"mask_model({identity},steps=2,guidance=1)"}
    expected = generate_tile_masks(model, [0, 0, 2, 2], [4, 5, 4, 5], steps=2)
    written = np.stack([np.asarray(Image.open(out / r["mask"])) for r in rows])
    assert np.array_equal(written, expected)  # mask of tile i = the mask model's for (its label, seed + i)
    (out / "images" / "adenocarcinoma_000000.png").unlink()
    reference = (out / "masks" / "adenocarcinoma_000000.png").read_bytes()
    result = generate_dataset(model, out, 2, [0, 2], source, settings, seed=4)
    assert (result.written, result.skipped_existing) == (1, 3)
    assert (out / "masks" / "adenocarcinoma_000000.png").read_bytes() == reference


def test_default_mask_source_is_the_mask_model_when_there_is_one(model_dir: Path, tiny_model_dir: Path) -> None:
    with_model = LatentDiffusionModel.load(model_dir)
    source, note = choose_mask_source(with_model, None)
    assert source.kind == "model" and note is None
    assert choose_mask_source(with_model, "procedural", 0.3)[0] == MaskSource(None, 0.3)
    assert choose_mask_source(with_model, "some/folder")[0].kind == "folder"


def test_cli_sample_defaults_to_model_masks_and_procedural_stays_an_option(model_dir: Path, tmp_path: Path,
                                                                           capsys) -> None:
    base = ["sample", "--model", str(model_dir), "--n", "2", "--label", "Polyp", "--steps", "1", "--mask-steps", "2"]
    code, stdout, err = run_cli([*base, "--out", str(tmp_path / "default")], capsys)
    assert code == 0, err
    assert "note:" not in stdout
    rows = _rows(tmp_path / "default")
    model = LatentDiffusionModel.load(model_dir)
    assert rows[0]["mask_source"] == f"mask_model({mask_model_identity(model)},steps=2,guidance=1)"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "default" / rows[1]["mask"])),
                          generate_tile_masks(model, [1], [1], steps=2)[0])
    code, _, err = run_cli([*base, "--masks", "procedural", "--out", str(tmp_path / "blobs")], capsys)
    assert code == 0, err
    assert _rows(tmp_path / "blobs")[0]["mask_source"] == "procedural(fg=0.6)"


def test_cli_sample_without_mask_model_falls_back_or_refuses_model(tiny_model_dir: Path, tmp_path: Path,
                                                                   capsys) -> None:
    base = ["sample", "--model", str(tiny_model_dir), "--n", "1", "--label", "Polyp", "--steps", "1"]
    code, stdout, err = run_cli([*base, "--out", str(tmp_path / "fallback")], capsys)
    assert code == 0, err
    assert "note: model has no mask_model/; using procedural masks" in stdout
    assert _rows(tmp_path / "fallback")[0]["mask_source"] == "procedural(fg=0.6)"
    code, _, err = run_cli([*base, "--masks", "model", "--out", str(tmp_path / "refused")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no mask_model/; train one with `histosynth train mask-model`" in err
    assert not (tmp_path / "refused").exists()


def test_cli_sample_help_states_the_default(capsys) -> None:
    code, stdout, _ = run_cli(["sample", "--help"], capsys)
    assert code == 0
    text = " ".join(stdout.replace("│", " ").split())
    assert "Default: model when the model folder has a mask_model/" in text and "else procedural" in text


def test_guided_modes_pick_mask_model_masks_too(model_dir: Path) -> None:
    from histosynth.sampling.guidance import mask_picker

    model = LatentDiffusionModel.load(model_dir)
    source = MaskSource(None, model=True, model_steps=2)
    mask, described = mask_picker(model, source, seed=2, label=1)(3)
    assert np.array_equal(mask, generate_tile_masks(model, [1], [5], steps=2)[0])
    assert described.startswith("mask_model(model/mask_model@")
    unconditional, _ = mask_picker(model, source, seed=2)(0)  # no --label: the null class's layout
    assert np.array_equal(unconditional, generate_tile_masks(model, [3], [2], steps=2)[0])
