"""The mask generation model: trained by the image denoiser's recipe machinery, loaded beside the
image model, sampled by the large-latent sampler, cleaned into class maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.data.manifest import TileManifest
from histosynth.errors import ModelFolderError
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.large.masks import clean_mask_cells, condition_fractions, generate_mask_cells, upsample_nearest
from histosynth.sampling.large.samplers import LargeSamplingSettings
from histosynth.training.objectives import DenoiserLossConfig
from histosynth.training.recipes import train_mask_model

from tiny_models import CLASSES, make_tiles, tiny_denoiser_config, tiny_train_config


def _mask_config():
    return tiny_denoiser_config().model_copy(update={"mask_conditioning": "none", "latent_channels": 2})


def test_mask_model_trains_loads_and_samples_class_maps(tiny_model_dir: Path) -> None:
    tiles = make_tiles(8)
    manifest = TileManifest(tiny_model_dir, [], CLASSES)
    result = train_mask_model(manifest, tiles, tiny_model_dir, _mask_config(), tiny_train_config(steps=4),
                              DenoiserLossConfig(), factor=4)
    assert result.steps == 4 and (tiny_model_dir / "mask_model" / "denoiser.safetensors").exists()
    model = LatentDiffusionModel.load(tiny_model_dir)
    assert model.mask_model is not None and model.mask_factor == 4
    fractions = generate_mask_cells(model.mask_model, 1, 12, 10, LargeSamplingSettings(steps=2, guidance=1.0), seed=0)
    assert fractions.shape == (2, 12, 10) and fractions.min() >= 0 and fractions.max() <= 1


def test_a_mask_model_for_other_classes_is_refused(tiny_model_dir: Path) -> None:
    config = _mask_config().model_copy(update={"latent_channels": 3, "num_mask_classes": 3})
    ConditionalDenoiser(config).save(tiny_model_dir / "mask_model", labels=CLASSES.labels, factor=4)
    with pytest.raises(ModelFolderError, match="mask_model"):
        LatentDiffusionModel.load(tiny_model_dir)


def test_cleaning_marks_unsure_cells_and_specks_unknown() -> None:
    gland = np.zeros((8, 8), np.float32)
    gland[:, 4:] = 1.0
    gland[0, 0] = 0.9  # a one-cell speck of gland inside background
    gland[5, 5] = 0.45  # unsure: background wins with only 0.55
    gland[6, 6] = 0.5  # a tie
    classes = clean_mask_cells(np.stack([1 - gland, gland]), unknown=2, min_confidence=0.6, min_region_cells=2)
    assert classes[0, 0] == 2 and classes[5, 5] == 2 and classes[6, 6] == 2
    assert (classes[:, :4][1:] == 0).all() and classes[0, 1:4].tolist() == [0, 0, 0]
    assert classes[7, 7] == 1


def test_upsampled_masks_give_exact_condition_fractions() -> None:
    cells = np.array([[0, 1], [2, 1]], np.uint8)  # 2 = unknown
    mask = upsample_nearest(cells, 8, 16, 16)
    fractions = condition_fractions(mask, 2, 4, rows_per_block=4)
    assert fractions.shape == (2, 4, 4)
    np.testing.assert_array_equal(fractions[0], np.kron(np.array([[1, 0], [0, 0]]), np.ones((2, 2))))
    np.testing.assert_array_equal(fractions[1], np.kron(np.array([[0, 1], [0, 1]]), np.ones((2, 2))))
    assert torch.tensor(fractions).sum(0)[2:, :2].eq(0).all()  # unknown cells condition on nothing


def test_smooth_upsampling_follows_outlines_between_cells_and_keeps_unknown() -> None:
    from histosynth.sampling.large.masks import upsample_smooth

    gland = (np.add.outer(np.arange(6), np.arange(6)) >= 6).astype(np.float32)  # a diagonal outline
    probabilities = np.stack([1 - gland, gland])
    cleaned = gland.astype(np.uint8)
    cleaned[0, 0] = 2
    smooth = upsample_smooth(probabilities, cleaned, 8, 48, 48, rows_per_block=7)
    blocky = upsample_nearest(cleaned, 8, 48, 48)
    first_gland = [int(np.argmax(row == 1)) for row in smooth[8:40]]
    assert {x % 8 for x in first_gland} != {0}  # the outline leaves the cell grid
    assert {int(np.argmax(row == 1)) % 8 for row in blocky[8:40]} == {0}  # nearest: a staircase
    assert (smooth[:8, :8] == 2).all() and (smooth == 2).sum() == 64
    assert abs(float((smooth == 1).mean()) - float(gland.mean())) < 0.05


def test_cli_trains_a_mask_model_into_the_model_folder(tmp_path: Path, capsys) -> None:
    import csv

    from PIL import Image

    from testkit import run_cli

    tiles = make_tiles(6)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(tiles.images[i].permute(1, 2, 0).numpy()).save(tmp_path / "images" / f"t{i}.png")
        Image.fromarray(tiles.masks[i].numpy() * 255).save(tmp_path / "masks" / f"t{i}.png")
        rows.append({"id": f"t{i}", "image": f"images/t{i}.png", "mask": f"masks/t{i}.png",
                     "label": CLASSES.labels[i % 3], "split": "train"})
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = ["train", "mask-model", "--data", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "model"),
            "--steps", "2", "--batch-size", "2", "--tile-size", "32", "--factor", "4"]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "mask model: 2 steps" in stdout
    assert (tmp_path / "model" / "mask_model" / "denoiser.safetensors").exists()
    code, _, stderr = run_cli([*args[:-2], "--factor", "5"], capsys)
    assert code == 2 and "not a multiple of --factor 5" in stderr
