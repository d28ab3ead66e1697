"""Dataset statistics: exact counts, mask fractions and colour moments on known pixels."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histosynth.cli.app import main
from histosynth.data.manifest import load_manifest
from histosynth.data.stats import DatasetStats, compute_stats, format_stats
from histosynth.errors import InputError


def test_exact_statistics(tmp_path: Path, make_tile_dataset: Callable, tile_colour: Callable) -> None:
    # 4 tiles of 8x6: Normal/train, Polyp/val, Normal/train, Polyp/val; mask fg rows 0, 3, 6, 2.
    manifest = make_tile_dataset(tmp_path, n=4, fg_rows=[0, 3, 6, 2])
    stats = compute_stats(load_manifest(manifest), jobs=2)
    assert stats.n_tiles == 4 and stats.unlabelled == 0 and stats.n_masks == 4
    assert stats.splits == ["train", "val"]
    assert stats.counts == {"train": {"Normal": 2, "Polyp": 0}, "val": {"Normal": 0, "Polyp": 2}}
    assert stats.image_sizes == {"8x6": 4}
    assert stats.foreground_fraction_mean == pytest.approx((0 + 0.5 + 1 + 2 / 6) / 4)
    assert stats.foreground_fraction_by_label == pytest.approx({"Normal": 0.5, "Polyp": (0.5 + 2 / 6) / 2})
    assert stats.mask_class_fractions == pytest.approx({"background": 104 / 192, "foreground": 88 / 192})

    pixels = np.array([tile_colour(i) for i in range(4)], dtype=np.float64)  # equal-size solid tiles
    assert stats.colour_mean == pytest.approx(pixels.mean(axis=0).tolist(), abs=1e-12)
    assert stats.colour_std == pytest.approx(pixels.std(axis=0).tolist(), abs=1e-12)


def test_colour_is_pixel_weighted(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=2, masks=False)
    Image.fromarray(np.full((2, 2, 3), 200, dtype=np.uint8)).save(tmp_path / "images" / "tile_0.png")
    Image.fromarray(np.full((4, 4, 3), 50, dtype=np.uint8)).save(tmp_path / "images" / "tile_1.png")
    stats = compute_stats(load_manifest(manifest))
    expected_mean = (4 * 200 + 16 * 50) / 20
    expected_std = np.sqrt((4 * (200 - expected_mean) ** 2 + 16 * (50 - expected_mean) ** 2) / 20)
    assert stats.colour_mean == pytest.approx([expected_mean] * 3)
    assert stats.colour_std == pytest.approx([expected_std] * 3)
    assert stats.image_sizes == {"2x2": 1, "4x4": 1}
    assert stats.n_masks == 0 and stats.foreground_fraction_mean is None


def test_unlabelled_unsplit_and_maskless_rows(
    tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable
) -> None:
    manifest = make_tile_dataset(tmp_path, n=4, labels=("Normal", ""), splits=("train", ""))
    edit_manifest(manifest, lambda rows: rows[3].update(mask=""))
    stats = compute_stats(load_manifest(manifest))
    assert stats.unlabelled == 2
    assert stats.splits == ["train", "(none)"]
    assert stats.counts == {"train": {"Normal": 2, "(unlabelled)": 0}, "(none)": {"Normal": 0, "(unlabelled)": 2}}
    assert stats.n_masks == 3
    assert set(stats.foreground_fraction_by_label) == {"Normal", "(unlabelled)"}
    text = format_stats(stats)
    assert "(unlabelled)" in text and "(none)" in text


def test_unreadable_tile_raises_input_error(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=3)
    (tmp_path / "images" / "tile_1.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="tile_1.png: corrupt or unreadable image"):
        compute_stats(load_manifest(manifest), jobs=2)


def test_format_stats_table(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=4, fg_rows=[0, 3, 6, 2])
    text = format_stats(compute_stats(load_manifest(manifest)))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("label"))
    assert header.split() == ["label", "train", "val", "total", "mask", "fg"]
    assert next(line for line in lines if line.startswith("Normal")).split() == ["Normal", "2", "0", "2", "0.500"]
    assert next(line for line in lines if line.startswith("total")).split()[:4] == ["total", "2", "2", "4"]
    assert "image sizes:         8x6 (4)" in text
    assert "colour mean (RGB):" in text


def test_stats_cli_prints_table_and_writes_json(
    tmp_path: Path, make_tile_dataset: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_tile_dataset(tmp_path / "data", n=4)
    out = tmp_path / "out" / "stats.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "stats", str(manifest), "--json", str(out), "--jobs", "2"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "label" in printed and "Normal" in printed and "colour std (RGB):" in printed
    saved = DatasetStats.model_validate(json.loads(out.read_text(encoding="utf-8")))
    assert saved == compute_stats(load_manifest(manifest))


def test_stats_on_real_ebhi(ebhi_manifest: Path) -> None:
    stats = compute_stats(load_manifest(ebhi_manifest), jobs=2)
    assert stats.n_tiles == 1836 and stats.n_masks == 1836 and stats.unlabelled == 0
    assert stats.image_sizes == {"224x224": 1836}
    assert stats.labels[:2] == ["Normal", "Polyp"]
    assert {split: sum(c.values()) for split, c in stats.counts.items()} == {"train": 1288, "val": 136, "test": 412}
    assert sum(stats.counts[s]["Adenocarcinoma"] for s in stats.splits) == 610
    assert 0.3 < stats.foreground_fraction_mean < 0.9
    red, green, blue = stats.colour_mean  # H&E: pink-purple, green lowest
    assert green < red < blue and 50 < green and blue < 230
    assert all(20 < s < 100 for s in stats.colour_std)
