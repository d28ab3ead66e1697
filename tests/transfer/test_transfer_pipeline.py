"""Appearance transfer end to end on a tiny model: disabled transfer replays the structure's
inversion, enabled transfer runs and changes the output, inputs are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.sampling.transfer.appearance import AppearanceTransfer, TransferSettings, render_mask

from tiny_models import TILE, make_tiles


def _inputs():
    tiles = make_tiles(4)
    appearance = tiles.images[0].permute(1, 2, 0).numpy()
    return appearance, tiles.masks[0].numpy(), tiles.masks[3].numpy()


def test_render_mask_uses_the_seed_values_and_tiny_noise() -> None:
    mask = np.zeros((16, 16), np.int64)
    mask[8:] = 1
    image = render_mask(mask, 2, (0.1, 0.5), 0.01, np.random.default_rng(0))
    assert abs(image[:8].mean() / 255 - 0.1) < 0.01 and abs(image[8:].mean() / 255 - 0.5) < 0.01


def test_without_transfer_the_output_replays_the_structure(tiny_model_dir: Path) -> None:
    model = LatentDiffusionModel.load(tiny_model_dir)
    appearance, appearance_mask, target = _inputs()
    off = AppearanceTransfer(model, TransferSettings(steps=4, transfer=False))
    image = off.transfer(appearance, appearance_mask, target, seed=1)
    rendered = render_mask(target, 2, (0.1, 0.5), 0.01, np.random.default_rng(1))
    with torch.inference_mode():
        expected = TileSampler(model, SamplingSettings(precision="float32")).decode(off.encode(rendered))[0]
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1  # exact up to rounding
    on = AppearanceTransfer(model, TransferSettings(steps=4, swap_ranges={0: (0, 100), 1: (0, 100)}, adain_range=(0, 100)))
    transferred = on.transfer(appearance, appearance_mask, target, seed=1)
    assert transferred.shape == (TILE, TILE, 3) and np.abs(transferred.astype(int) - image.astype(int)).mean() > 0.5
    for mode in ("all", "plain"):
        AppearanceTransfer(model, TransferSettings(steps=2, adain=mode, adain_range=(0, 100))).transfer(
            appearance, appearance_mask, target)


def test_bad_inputs_fail_in_one_line(tiny_model_dir: Path) -> None:
    transfer = AppearanceTransfer(LatentDiffusionModel.load(tiny_model_dir), TransferSettings(steps=2))
    appearance, appearance_mask, target = _inputs()
    with pytest.raises(InputError, match="target mask is 16x16"):
        transfer.transfer(appearance, appearance_mask, target[:16, :16])
    with pytest.raises(InputError, match="appearance mask lacks"):
        transfer.transfer(appearance, np.zeros_like(appearance_mask), target, source="masks/x.png")


def test_cli_writes_the_dataset_contract_resumes_and_refuses_bad_masks(tiny_model_dir: Path, tmp_path: Path,
                                                                       capsys) -> None:
    from PIL import Image

    from testkit import run_cli
    from histosynth.data.manifest import load_manifest

    appearance, appearance_mask, _ = _inputs()
    Image.fromarray(appearance).save(tmp_path / "app.png")
    Image.fromarray(appearance_mask * 255).save(tmp_path / "app_mask.png")
    targets = tmp_path / "targets"
    targets.mkdir()
    tiles = make_tiles(6)
    for i in range(1, 4):
        Image.fromarray(tiles.masks[i].numpy() * 255).save(targets / f"m{i}.png")
    out = tmp_path / "out"
    args = ["transfer", "--model", str(tiny_model_dir), "--appearance", str(tmp_path / "app.png"),
            "--appearance-mask", str(tmp_path / "app_mask.png"), "--target-masks", str(targets), "--rounds", "2",
            "--select", "2", "--steps", "2", "--out", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "4 tiles written" in stdout
    manifest = load_manifest(out / "manifest.csv")
    assert len(manifest) == 4 and {r.extra["mask_source"].split("@")[1] for r in manifest.records} == {"d0", "d1"}
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "0 tiles written, 4 already there" in stdout
    Image.fromarray(np.zeros((TILE, 8), np.uint8)).save(targets / "bad.png")
    code, _, stderr = run_cli([*args[:-1], str(tmp_path / "out2")], capsys)
    assert code == 2 and "bad" in stderr and "the model works on" in stderr


def test_masks_with_classes_the_model_lacks_transfer_with_the_null_condition(tiny_model_dir: Path) -> None:
    appearance, _, _ = _inputs()
    three = np.zeros((TILE, TILE), np.uint8)
    three[:, 10:20], three[:, 20:] = 1, 2
    target = np.ascontiguousarray(three.T)
    runner = AppearanceTransfer(LatentDiffusionModel.load(tiny_model_dir),
                                TransferSettings(steps=2, adain="alternate", adain_range=(0, 100)))
    assert runner.transfer(appearance, three, target).shape == (TILE, TILE, 3)
    with pytest.raises(InputError, match="class ids 0..C-1"):
        runner.transfer(appearance, three * 20, target * 20)


def _ihc_field() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's 512 x 512 IHC field (bundled, offline) and a 0/255 mask of its stained tissue."""
    data = pytest.importorskip("skimage.data")
    image = data.immunohistochemistry()
    return image, np.where(image.mean(axis=2) < 180, 255, 0).astype(np.uint8)


def test_an_appearance_of_any_size_is_cropped_and_resized_to_the_tile() -> None:
    from histosynth.sampling.transfer.appearance import fit_appearance

    image, raw = _ihc_field()
    fitted, mask = fit_appearance(image, raw // 255, TILE)
    assert fitted.shape == (TILE, TILE, 3) and mask.shape == (TILE, TILE) and set(np.unique(mask)) == {0, 1}
    wide, wide_mask = fit_appearance(image[:256], raw[:256] // 255, TILE)  # 512 x 256: the centred 256 px square
    assert np.array_equal(wide, fit_appearance(image[:256, 128:384], raw[:256, 128:384] // 255, TILE)[0])
    assert fit_appearance(fitted, mask, TILE)[0] is fitted  # the tile size passes untouched
    with pytest.raises(InputError, match="appearance mask is 256x512 but the appearance image is 512x512"):
        fit_appearance(image, raw[:, :256], TILE)


def test_cli_transfers_a_512_px_ihc_appearance_and_refuses_large_targets(tiny_model_dir: Path, tmp_path: Path,
                                                                         capsys) -> None:
    from PIL import Image

    from testkit import run_cli

    image, raw = _ihc_field()
    Image.fromarray(image).save(tmp_path / "ihc.png")
    Image.fromarray(raw).save(tmp_path / "ihc_mask.png")
    targets = tmp_path / "targets"
    targets.mkdir()
    Image.fromarray(make_tiles(2).masks[1].numpy() * 255).save(targets / "m1.png")
    args = ["transfer", "--model", str(tiny_model_dir), "--appearance", str(tmp_path / "ihc.png"),
            "--appearance-mask", str(tmp_path / "ihc_mask.png"), "--target-masks", str(targets), "--steps", "2"]
    code, stdout, stderr = run_cli([*args, "--out", str(tmp_path / "out")], capsys)
    assert code == 0 and "1 tiles written" in stdout, stderr
    (tmp_path / "broken.png").write_bytes((tmp_path / "ihc.png").read_bytes()[:200])
    bad = [*args, "--out", str(tmp_path / "o2")]
    bad[bad.index("--appearance") + 1] = str(tmp_path / "broken.png")
    code, _, stderr = run_cli(bad, capsys)
    assert code == 2 and "broken.png" in stderr and "corrupt" in stderr
    Image.fromarray(np.zeros((2 * TILE, 2 * TILE), np.uint8)).save(targets / "big.png")
    code, _, stderr = run_cli([*args, "--out", str(tmp_path / "o3")], capsys)
    assert code == 2 and "big.png" in stderr and f"cut it into {TILE}x{TILE} tiles" in stderr
    assert len(stderr.strip().splitlines()) == 1
