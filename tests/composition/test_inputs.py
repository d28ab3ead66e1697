"""Reading spots: target selection, validation errors, AnnData inputs, tiles cut from slide images."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from composition_data import DIAMETER, TYPES, Synthetic, write_h5ad
from PIL import Image

from histosynth.composition.inputs import load_spots
from histosynth.composition.tiles import SlideImage, check_inside, cut_tiles, grid_centres
from histosynth.errors import InputError


def _edit(path: Path, change) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    change(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_csv_targets_by_glob_are_normalised_per_spot(synthetic: Synthetic) -> None:
    table = load_spots(synthetic.csv, "major:*")
    assert table.target_names == TYPES[:3]
    assert np.allclose(table.targets.sum(axis=1), 1.0)
    assert table.normalised and table.tiles is None and set(table.images) == {"A1", "A2", "B1"}
    raw = load_spots(synthetic.csv, "major:*,minor:other", normalise=False)
    assert raw.target_names == TYPES and np.isclose(raw.targets[0, 3], 0.3)
    assert list(raw.patients[:1]) == ["A"] and raw.coords.shape == (len(raw), 2)


def test_missing_negative_and_nan_abundances_are_one_line_errors(synthetic: Synthetic) -> None:
    with pytest.raises(InputError, match="no abundance column matches 'major:purple'"):
        load_spots(synthetic.csv, "major:purple")
    _edit(synthetic.csv, lambda rows: rows[3].update({"major:green": "-0.5"}))
    with pytest.raises(InputError, match=r"'major:green' has 1 negative value.*A1_3"):
        load_spots(synthetic.csv, "major:*")
    _edit(synthetic.csv, lambda rows: rows[3].update({"major:green": ""}))
    with pytest.raises(InputError, match=r"'major:green' has 1 missing or non-numeric.*A1_3"):
        load_spots(synthetic.csv, "major:*")
    _edit(synthetic.csv, lambda rows: rows[3].update({"major:green": "oops"}))
    with pytest.raises(InputError, match="non-numeric") as error:
        load_spots(synthetic.csv, "major:*")
    assert str(synthetic.csv) in str(error.value) and "\n" not in str(error.value)


def test_all_zero_spots_cannot_be_normalised(synthetic: Synthetic) -> None:
    _edit(synthetic.csv, lambda rows: rows[0].update({"minor:other": "0"}))
    with pytest.raises(InputError, match="all-zero abundances.*A1_0"):
        load_spots(synthetic.csv, "minor:other")
    assert load_spots(synthetic.csv, "minor:other", normalise=False).targets[0, 0] == 0.0


def test_images_need_coordinates_and_sections_need_images(synthetic: Synthetic) -> None:
    _edit(synthetic.csv, lambda rows: [r.pop("pixel_x") for r in rows])
    with pytest.raises(InputError, match="no coordinates"):
        load_spots(synthetic.csv, "major:*")
    with pytest.raises(InputError, match="3 sections need one image each"):
        load_spots(synthetic.csv, "major:*", images=[synthetic.images["A1"]])


def test_h5ad_abundances_from_obsm_or_obs(tmp_path: Path, synthetic: Synthetic) -> None:
    path = write_h5ad(tmp_path / "a1.h5ad", synthetic, "A1")
    table = load_spots(path, "*red,*green", abundance_key="q05_cell_abundance_w_sf", images=[synthetic.images["A1"]])
    assert table.target_names == ["q05cell_abundance_w_sf_red", "q05cell_abundance_w_sf_green"]
    assert table.ids[0] == "A1_0" and set(table.sections) == {"a1"}
    expected = [r["major:red"] for r in synthetic.rows[:2]]
    raw = load_spots(path, "*red", abundance_key="q05_cell_abundance_w_sf", images=[synthetic.images["A1"]],
                     normalise=False)
    assert np.allclose(raw.targets[:2, 0], expected)
    with pytest.raises(InputError, match="obsm has no 'means'"):
        load_spots(path, "*", abundance_key="means", images=[synthetic.images["A1"]])
    in_obs = write_h5ad(tmp_path / "obs.h5ad", synthetic, "A1", obsm_key=None)
    assert len(load_spots(in_obs, "q05*", images=[synthetic.images["A1"]]).target_names) == 4


def test_h5ad_without_coordinates_is_refused(tmp_path: Path, synthetic: Synthetic) -> None:
    path = write_h5ad(tmp_path / "flat.h5ad", synthetic, "A1", spatial=False)
    with pytest.raises(InputError, match=r"no coordinates \(.*obsm\['spatial'\]"):
        load_spots(path, "*red", abundance_key="q05_cell_abundance_w_sf", images=[synthetic.images["A1"]])
    with pytest.raises(InputError, match="no slide image"):
        load_spots(path, "*red", abundance_key="q05_cell_abundance_w_sf")


def test_spots_outside_the_image_are_named(synthetic: Synthetic) -> None:
    coords = np.array([[20.0, 20.0], [3.0, 20.0], [150.0, 500.0]])
    with pytest.raises(InputError, match=r"2 spot\(s\) lie outside the 160x140 image.*first: s1 at x=3"):
        check_inside(160, 140, coords, DIAMETER, ["s0", "s1", "s2"], synthetic.images["A1"])
    check_inside(160, 140, coords[:1], DIAMETER, ["s0"], synthetic.images["A1"])


def test_cut_tiles_are_the_spot_squares(synthetic: Synthetic) -> None:
    with SlideImage(synthetic.images["A1"]) as image:
        tiles = list(cut_tiles(image, synthetic.coords["A1"][:3], DIAMETER, DIAMETER))
        resized = next(cut_tiles(image, synthetic.coords["A1"][:1], DIAMETER, 32))
    original = np.asarray(Image.open(synthetic.images["A1"]).convert("RGB"))
    for tile, (x, y) in zip(tiles, synthetic.coords["A1"][:3].astype(int)):
        assert tile.shape == (DIAMETER, DIAMETER, 3)
        half = DIAMETER // 2
        assert np.array_equal(tile, original[y - half : y + half, x - half : x + half])
        assert len(np.unique(tile.reshape(-1, 3), axis=0)) == 1  # exactly the spot's solid square
    assert resized.shape == (32, 32, 3)


def test_grid_keeps_tissue_only(tmp_path: Path) -> None:
    image = np.full((100, 200, 3), 250, np.uint8)
    image[:, :100] = (200, 80, 150)  # stained left half
    path = tmp_path / "half.png"
    Image.fromarray(image).save(path)
    with SlideImage(path) as slide:
        centres = grid_centres(slide, 20, 20)
    assert len(centres) > 0 and centres[:, 0].max() <= 100 and centres[:, 0].min() >= 10
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((100, 100, 3), 250, np.uint8)).save(blank)
    with SlideImage(blank) as slide, pytest.raises(InputError, match="no grid square"):
        grid_centres(slide, 20, 20)


def test_tiff_slides_give_the_same_tiles_as_plain_images(tmp_path: Path, synthetic: Synthetic) -> None:
    import tifffile

    original = np.asarray(Image.open(synthetic.images["A1"]).convert("RGB"))
    tiff = tmp_path / "a1.tif"
    tifffile.imwrite(tiff, original[:128], photometric="rgb", rowsperstrip=32)
    coords = synthetic.coords["A1"][:4]
    with SlideImage(synthetic.images["A1"]) as plain, SlideImage(tiff) as slide:
        assert (slide.width, slide.height) == (160, 128)
        for a, b in zip(cut_tiles(plain, coords, DIAMETER, 16), cut_tiles(slide, coords, DIAMETER, 16)):
            assert np.array_equal(a, b)
        thumb, scale = slide.thumbnail(max_side=80)
    assert thumb.shape == (64, 80, 3) and np.isclose(scale, 0.5)
