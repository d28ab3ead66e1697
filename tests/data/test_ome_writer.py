"""Pyramidal OME-TIFF writer: exact read-back, pyramids, OpenSlide, atomicity, streaming, overview PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from histosynth.data.slides.ome_writer import (
    OUTLINE_COLOUR,
    read_ome_levels,
    read_ome_metadata,
    write_ome_tiff,
    write_overview_png,
)
from histosynth.errors import InputError

H, W, TILE = 300, 500, 64


def _image(tmp_path: Path, height: int = H, width: int = W) -> np.memmap:
    rng = np.random.default_rng(0)
    image = np.memmap(tmp_path / "image.raw", np.uint8, "w+", shape=(height, width, 3))
    image[:] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image


def _mask(height: int = H, width: int = W) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((x // 37 + y // 23) % 3).astype(np.uint8)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    image, mask = _image(tmp_path), _mask()
    out = write_ome_tiff(tmp_path / "out" / "slide.ome.tif", image, mask, tile=TILE, min_level_size=64,
                         mask_classes=["background", "gland", "stroma"], metadata={"seed": "7", "Description": "x"})
    return out, np.asarray(image), mask


def test_reads_back_exactly_with_tifffile(written) -> None:
    path, image, mask = written
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.is_bigtiff
        assert [s.name for s in tif.series] == ["image", "mask"]
        assert np.array_equal(tif.series[0].asarray(), image)
        assert np.array_equal(tif.series[1].asarray(), mask)
        assert tif.series[0].keyframe.is_tiled
    levels = read_ome_levels(path)
    # 500 -> 250 -> 125 -> 63 <= 64: four levels
    assert levels["image"]["shapes"] == [(300, 500, 3), (150, 250, 3), (75, 125, 3), (38, 63, 3)]
    assert levels["mask"]["shapes"] == [(300, 500), (150, 250), (75, 125), (38, 63)]
    assert levels["image"]["tile"] == levels["mask"]["tile"] == (TILE, TILE)


def test_pyramids(written) -> None:
    path, image, mask = written
    with tifffile.TiffFile(path) as tif:
        for k, level in enumerate(tif.series[1].levels):
            assert np.array_equal(level.asarray(), mask[::2 ** k, ::2 ** k])
        half = tif.series[0].levels[1].asarray()
        smallest = tif.series[0].levels[3].asarray()
    means = image.astype(float).reshape(150, 2, 250, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - means).max() <= 0.5
    assert abs(float(smallest.mean()) - float(image.mean())) < 2  # area means keep the average colour


def test_metadata_round_trip(written) -> None:
    path, _, _ = written
    assert read_ome_metadata(path) == {"mask_classes": ["background", "gland", "stroma"],
                                       "metadata": {"seed": "7", "Description": "x"}}
    with tifffile.TiffFile(path) as tif:
        assert 'Namespace="histosynth/mask_classes"' in tif.ome_metadata


def test_openslide_reads_level_zero(written) -> None:
    """OpenSlide has no OME-TIFF driver: it opens the file as generic TIFF and sees level 0 only."""
    openslide = pytest.importorskip("openslide")
    path, image, _ = written
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.dimensions == (W, H)
        assert slide.level_count == 1  # SubIFD levels and the mask page are invisible to it
        region = np.asarray(slide.read_region((0, 0), 0, (W, H)))
    assert np.all(region[..., 3] == 255)
    assert np.array_equal(region[..., :3], image)


def test_no_temporaries_after_success_or_failure(tmp_path: Path) -> None:
    image, out_dir = _image(tmp_path), tmp_path / "out"
    write_ome_tiff(out_dir / "a.ome.tif", image, _mask(), tile=TILE)
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.ome.tif"]
    before = (out_dir / "a.ome.tif").read_bytes()
    calls = []

    def explode(series: str, level: int) -> None:
        calls.append((series, level))
        if series == "mask" and len(calls) > 40:
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        write_ome_tiff(out_dir / "a.ome.tif", image, _mask(), tile=TILE, min_level_size=64, on_tile=explode)
    with pytest.raises(RuntimeError, match="mid-write"):
        write_ome_tiff(out_dir / "b.ome.tif", image, _mask(), tile=TILE, min_level_size=64, on_tile=explode)
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.ome.tif"]  # old file intact, nothing else
    assert (out_dir / "a.ome.tif").read_bytes() == before
    assert ("image", 1) in calls


class _ReadRecorder:
    """An array stand-in that records how many elements each read returns."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads = array, []
        self.shape, self.ndim, self.dtype = array.shape, array.ndim, array.dtype

    def __getitem__(self, key):
        block = self.array[key]
        self.reads.append(block.size)
        return block


def test_image_is_read_in_pieces(tmp_path: Path) -> None:
    image = _ReadRecorder(_image(tmp_path, 1100, 80))
    write_ome_tiff(tmp_path / "tall.ome.tif", image, tile=32, min_level_size=64)  # type: ignore[arg-type]
    assert image.reads and max(image.reads) <= image.array.size // 2
    assert np.array_equal(tifffile.imread(tmp_path / "tall.ome.tif"), image.array)


def test_bad_inputs(tmp_path: Path) -> None:
    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(InputError, match="multiple of 16"):
        write_ome_tiff(tmp_path / "x.ome.tif", image, tile=40)
    with pytest.raises(InputError, match="H x W x 3 uint8"):
        write_ome_tiff(tmp_path / "x.ome.tif", image[..., 0])
    with pytest.raises(InputError, match="mask must be 40 x 50"):
        write_ome_tiff(tmp_path / "x.ome.tif", image, np.zeros((40, 49), np.uint8))
    with pytest.raises(InputError, match="class id 2"):
        write_ome_tiff(tmp_path / "x.ome.tif", image, np.full((40, 50), 2, np.uint8), mask_classes=["a", "b"])
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError):
        read_ome_levels(tmp_path / "junk.tif")


def test_single_level_when_already_small(tmp_path: Path) -> None:
    path = write_ome_tiff(tmp_path / "small.ome.tif", np.full((100, 200, 3), 9, np.uint8), tile=32)
    assert read_ome_levels(path) == {"image": {"shapes": [(100, 200, 3)], "tile": (32, 32), "dtype": "uint8"}}
    assert read_ome_metadata(path) == {"mask_classes": None, "metadata": {}}


def test_overview_png(tmp_path: Path) -> None:
    image = np.full((H, W, 3), 200, np.uint8)
    image[:, 250:] = 100
    mask = np.zeros((H, W), np.uint8)
    mask[100:200, 100:300] = 1
    path = write_overview_png(tmp_path / "overview.png", image, mask, max_side=128)
    small = np.asarray(Image.open(path))
    assert small.shape == (75, 125, 3)  # factor 4
    assert np.array_equal(small[10, 10], [200, 200, 200]) and np.array_equal(small[10, 120], [100, 100, 100])
    outline = np.all(small == OUTLINE_COLOUR, axis=2)
    assert outline[25, 25:75].all() and outline[25:50, 25].all() and not outline[37, 50]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overview.png"]


def test_pixel_size_and_class_names_are_in_the_ome_xml(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    out = write_ome_tiff(tmp_path / "mpp.ome.tif", _image(tmp_path), _mask(), tile=TILE, mpp=0.5,
                         mask_classes=["background", "gland", "stroma"])
    with tifffile.TiffFile(out) as tif:
        root = ET.fromstring(tif.ome_metadata)
    pixels = root.findall(".//{*}Pixels")
    assert len(pixels) == 2
    for element in pixels:  # image and mask
        assert float(element.get("PhysicalSizeX")) == float(element.get("PhysicalSizeY")) == 0.5
        assert element.get("PhysicalSizeXUnit") == element.get("PhysicalSizeYUnit") == "µm"
    values = {m.get("K"): m.text for m in root.iterfind(".//{*}MapAnnotation[@Namespace='histosynth/mask_classes']"
                                                         "//{*}M")}
    assert values == {"0": "background", "1": "gland", "2": "stroma"}
    plain = write_ome_tiff(tmp_path / "plain.ome.tif", _image(tmp_path), tile=TILE)
    with tifffile.TiffFile(plain) as tif:
        assert "PhysicalSizeX" not in tif.ome_metadata
    with pytest.raises(InputError, match="positive"):
        write_ome_tiff(tmp_path / "bad.ome.tif", _image(tmp_path), tile=TILE, mpp=0.0)
