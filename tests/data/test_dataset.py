"""The torch TileDataset: value ranges, mask ids, resizing, missing masks, labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from histosynth.data.dataset import TileDataset  # noqa: E402
from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.errors import InputError  # noqa: E402


def test_item_tensors(tmp_path: Path, make_tile_dataset: Callable, tile_colour: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=3, size=(8, 6))
    dataset = TileDataset(load_manifest(manifest))
    assert len(dataset) == 3
    item = dataset[1]
    assert item["id"] == "tile_1" and item["label"] == 1  # Polyp; classes inferred as Normal, Polyp
    image = item["image"]
    assert image.dtype == torch.float32 and image.shape == (3, 6, 8)
    expected = torch.tensor(tile_colour(1), dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(image[:, 0, 0], expected)
    assert image.min() >= -1 and image.max() <= 1
    mask = item["mask"]
    assert mask.dtype == torch.long and mask.shape == (6, 8) and item["mask_known"] is True
    assert mask[:3].eq(1).all() and mask[3:].eq(0).all()  # 255 -> class 1 on the first half


def test_resize_uses_nearest_for_masks(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=1, size=(8, 8))
    item = TileDataset(load_manifest(manifest), size=16)[0]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (16, 16)
    assert set(item["mask"].unique().tolist()) == {0, 1}
    assert item["mask"][:8].eq(1).all() and item["mask"][8:].eq(0).all()


def test_missing_mask_is_zeros_and_unknown(
    tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable
) -> None:
    manifest = make_tile_dataset(tmp_path, n=2, size=(8, 6))
    edit_manifest(manifest, lambda rows: rows[0].update(mask=""))
    dataset = TileDataset(load_manifest(manifest), size=4)
    item = dataset[0]
    assert item["mask_known"] is False and item["mask"].shape == (4, 4) and item["mask"].eq(0).all()
    assert dataset[1]["mask_known"] is True


def test_without_mask_and_unlabelled_null_id(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=2, labels=("Normal", ""))
    data = load_manifest(manifest)
    item = TileDataset(data, with_mask=False)[1]
    assert "mask" not in item and "mask_known" not in item
    assert item["label"] == data.classes.null_id == 1


def test_batches_through_a_dataloader(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=4, size=(8, 6))
    batch = next(iter(torch.utils.data.DataLoader(TileDataset(load_manifest(manifest), size=8), batch_size=4)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["mask"].shape == (4, 8, 8)
    assert batch["label"].tolist() == [0, 1, 0, 1] and batch["mask_known"].all()


def test_mask_size_mismatch_names_the_file(tmp_path: Path, make_tile_dataset: Callable) -> None:
    from PIL import Image

    manifest = make_tile_dataset(tmp_path, n=1, size=(8, 6))
    Image.fromarray(np.zeros((5, 8), dtype=np.uint8)).save(tmp_path / "masks" / "tile_0.png")
    with pytest.raises(InputError, match="tile_0.png: mask is 8x5 but image tile_0.png is 8x6"):
        TileDataset(load_manifest(manifest))[0]


def test_unknown_label_fails_early(tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable) -> None:
    from histosynth.data.classes import ClassList

    manifest = make_tile_dataset(tmp_path, n=2)
    with pytest.raises(InputError, match="unknown class 'Polyp'"):
        TileDataset(load_manifest(manifest, ClassList(labels=["Normal"])))


def test_ebhi_item(ebhi_manifest: Path) -> None:
    item = TileDataset(load_manifest(ebhi_manifest), size=64)[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (64, 64)
    assert item["label"] == 5  # first row is Adenocarcinoma, EBHI id 5
