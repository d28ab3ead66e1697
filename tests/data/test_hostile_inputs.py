"""Hostile input files: every reader raises one ``InputError`` naming the file, and no bomb is decoded.

Fixtures are forged on the fly: headers that declare 60000 x 60000 px over a few bytes of data
(PNG, JPEG, BMP, TIFF), truncated and mislabelled files, 16-bit and colour masks, wrong-size tiles,
duplicate ids. No model is loaded.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histosynth.data.classes import ClassList
from histosynth.data.images import (
    MAX_PIXELS_ENV, image_size, max_image_pixels, read_mask, read_raw_mask, read_rgb, read_tile,
)
from histosynth.data.manifest import load_manifest
from histosynth.data.validate import validate_manifest
from histosynth.errors import InputError
from testkit import run_cli, write_tile_dataset

CLASSES = ClassList(labels=["Normal", "Polyp"])  # mask values 0, 1, 255
BOMB = (60000, 60000)


# ---------------------------------------------------------------- forgers


def _png(path: Path, array: np.ndarray | None = None) -> Path:
    Image.fromarray(np.zeros((4, 4, 3), np.uint8) if array is None else array).save(path, format="PNG")
    return path


def _patched(path: Path, fmt: str, patch: Callable[[bytearray], object]) -> Path:
    """An 8 x 8 black image saved as ``fmt``, then its bytes edited by ``patch``."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format=fmt)
    data = bytearray(path.read_bytes())
    patch(data)
    path.write_bytes(bytes(data))
    return path


def forge_png(path: Path, size: tuple[int, int] = BOMB) -> Path:
    """A tiny PNG whose IHDR declares ``size`` (its CRC fixed, so only the size is a lie)."""
    def patch(data: bytearray) -> None:
        struct.pack_into(">II", data, 16, *size)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)

    return _patched(path, "PNG", patch)


def forge_jpeg(path: Path, size: tuple[int, int] = BOMB) -> Path:
    return _patched(path, "JPEG", lambda d: struct.pack_into(">HH", d, d.index(b"\xff\xc0") + 5, size[1], size[0]))


def forge_bmp(path: Path, size: tuple[int, int] = BOMB) -> Path:
    return _patched(path, "BMP", lambda d: struct.pack_into("<ii", d, 18, *size))


def forge_tiff(path: Path, size: tuple[int, int] = BOMB) -> Path:
    def patch(data: bytearray) -> None:  # little-endian TIFF: ImageWidth (256) and ImageLength (257) in IFD 0
        ifd = struct.unpack_from("<I", data, 4)[0]
        for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0], 12):
            tag, kind = struct.unpack_from("<HH", data, entry)
            if tag in (256, 257):
                struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, size[tag - 256])

    return _patched(path, "TIFF", patch)


FORGERS = {"png": forge_png, "jpg": forge_jpeg, "bmp": forge_bmp, "tif": forge_tiff}


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _gone(path: Path) -> Path:
    path.unlink()
    return path


def _text(path: Path, text: str = "not an image") -> Path:
    path.write_text(text)
    return path


def _rgb_noise(shape: tuple[int, ...] = (32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)


# Broken files: name -> (file name, writer(path)). Each must make every reader raise, naming the file.
BROKEN: dict[str, tuple[str, Callable[[Path], object]]] = {
    "text_named_png": ("tile.png", lambda p: p.write_text("id,image\nthis is a CSV, not a PNG\n")),
    "text_named_jpg": ("tile.jpg", lambda p: p.write_text("hello")),
    "text_named_tif": ("tile.tif", lambda p: p.write_text("II*\0 not really")),
    "empty_file": ("tile.png", lambda p: p.write_bytes(b"")),
    "random_bytes": ("tile.png", lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096))),
    "png_magic_only": ("tile.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n")),
    "truncated_png": ("tile.png", lambda p: truncate(_png(p, _rgb_noise()))),
    "truncated_png_header": ("tile.png", lambda p: truncate(_png(p, _rgb_noise()), 0.02)),
    "truncated_jpeg": ("tile.jpg", lambda p: (Image.fromarray(_rgb_noise()).save(p, format="JPEG"), truncate(p, 0.3))),
    "truncated_tiff": ("tile.tif", lambda p: (Image.fromarray(_rgb_noise()).save(p, format="TIFF"), truncate(p, 0.3))),
    "truncated_bmp": ("tile.bmp", lambda p: (Image.fromarray(_rgb_noise()).save(p, format="BMP"), truncate(p, 0.5))),
    "bad_crc_png": ("tile.png", lambda p: _patched(p, "PNG", lambda d: d.__setitem__(30, d[30] ^ 0xFF))),  # IHDR CRC
    "gif_named_png": ("tile.png", lambda p: Image.fromarray(np.zeros((4, 4), np.uint8)).save(p, format="GIF")),
}


# ---------------------------------------------------------------- readers

READERS: dict[str, Callable[[Path], object]] = {
    "read_rgb": read_rgb,
    "read_raw_mask": read_raw_mask,
    "read_mask": lambda p: read_mask(p, CLASSES),
    "read_tile": lambda p: read_tile(p, None, CLASSES),
}


def raises_naming(path: Path, *fragments: str) -> Callable[[Callable[[], object]], str]:
    def check(call: Callable[[], object]) -> str:
        with pytest.raises(InputError) as info:
            call()
        message = str(info.value)
        assert info.value.path == path and message.startswith(f"{path}: "), message
        assert path.name in message and "\n" not in message
        for fragment in fragments:
            assert fragment in message, message
        return message

    return check


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("kind", list(FORGERS))
def test_declared_bomb_is_refused_before_decoding(kind: str, reader: str, tmp_path: Path) -> None:
    path = FORGERS[kind](tmp_path / f"bomb.{kind}")
    assert image_size(path) == BOMB  # the header is readable: only the size is hostile
    raises_naming(path, "declares 60000 x 60000 px, above the 50 MP limit", MAX_PIXELS_ENV)(
        lambda: READERS[reader](path))


@pytest.mark.parametrize("size", [(8000, 8000), (50_001, 1000), (1, 50_000_001)])
def test_limit_is_ours_not_pillows(size: tuple[int, int], tmp_path: Path) -> None:
    """Just above 50 MP (below Pillow's own 89 MP warning) is refused; the error gives the declared size."""
    path = forge_png(tmp_path / "big.png", size)
    raises_naming(path, f"declares {size[0]} x {size[1]} px")(lambda: read_rgb(path))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("name", list(BROKEN))
@pytest.mark.parametrize("reader", list(READERS))
def test_broken_file_names_the_file(name: str, reader: str, tmp_path: Path) -> None:
    file_name, write = BROKEN[name]
    path = tmp_path / file_name
    write(path)
    raises_naming(path, "corrupt or unreadable")(lambda: READERS[reader](path))


@pytest.mark.parametrize("reader", list(READERS))
def test_missing_file_and_folder(reader: str, tmp_path: Path) -> None:
    raises_naming(tmp_path / "gone.png", "not found")(lambda: READERS[reader](tmp_path / "gone.png"))
    (tmp_path / "folder.png").mkdir()
    raises_naming(tmp_path / "folder.png", "is a folder")(lambda: READERS[reader](tmp_path / "folder.png"))


# ---------------------------------------------------------------- the limit's settings


def test_env_var_lowers_and_raises_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _png(tmp_path / "tile.png", _rgb_noise((64, 64, 3)))
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    raises_naming(path, "declares 64 x 64 px, above the 1000 px limit")(lambda: read_rgb(path))
    assert read_rgb(path, max_pixels=64 * 64).shape == (64, 64, 3)  # the argument beats the variable
    monkeypatch.setenv(MAX_PIXELS_ENV, "4_096")
    assert read_rgb(path).shape == (64, 64, 3)
    bomb = forge_png(tmp_path / "bomb.png", (2000, 2000))  # let through, its missing pixel data fails
    raises_naming(bomb, "corrupt or unreadable image")(lambda: read_rgb(bomb, max_pixels=4_000_000))


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1.5e9"])
def test_bad_env_value_names_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, value)
    with pytest.raises(InputError, match=f"{MAX_PIXELS_ENV} must be a positive whole number"):
        max_image_pixels()


def test_pillow_global_limit_is_untouched(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError):
        read_rgb(forge_png(tmp_path / "bomb.png"))
    assert read_rgb(_png(tmp_path / "ok.png")).shape == (4, 4, 3)
    assert Image.MAX_IMAGE_PIXELS == before


# ---------------------------------------------------------------- pixel formats


def _png16(path: Path, values: list[list[int]]) -> Path:
    Image.fromarray(np.array(values, np.uint16)).save(path)
    return path


def _palette(path: Path, indices: list[list[int]]) -> Path:
    image = Image.fromarray(np.array(indices, np.uint8)).convert("P")
    image.putpalette([0, 0, 0, 255, 255, 255] + [9] * 762)
    image.save(path)
    return path


def _channels(values: tuple[int, ...], alpha: bool = False) -> np.ndarray:
    """A 2 x 2 image, top row ``values`` per channel (plus opaque alpha), bottom row black."""
    array = np.zeros((2, 2, len(values) + alpha), np.uint8)
    array[0, :, : len(values)] = values
    array[..., len(values):] = 255
    return array


_ID_MASK = [[1, 1], [0, 0]]  # class ids of a mask whose top row is foreground

# name -> (write(path), read(path), fragments of the error); each file is refused, naming it.
REFUSED: dict[str, tuple[Callable[[Path], object], Callable[[Path], object], tuple[str, ...]]] = {
    "16_bit_tile": (lambda p: _png16(p, [[40000, 0]]), read_rgb, ("more than 8 bits", "8-bit RGB")),
    "16_bit_mask_over_255": (lambda p: _png16(p, [[300, 0]]), read_raw_mask, ("single-channel 8-bit", "0..300")),
    "float_mask_fractions": (lambda p: Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(p.with_suffix(".tif")),
                             read_raw_mask, ("single-channel 8-bit",)),
    "red_rgb_mask": (lambda p: _png(p, _channels((255, 0, 0))), read_raw_mask, ("colour image (mode RGB)",)),
    "red_rgba_mask": (lambda p: _png(p, _channels((255, 0, 0), alpha=True)), read_raw_mask, ("mode RGBA",)),
    "palette_undeclared": (lambda p: _palette(p, [[0, 5]]), lambda p: read_mask(p, CLASSES), ("mask values 5",)),
    "value_7": (lambda p: _png(p, np.array([[7, 0]], np.uint8)), lambda p: read_mask(p, CLASSES), ("values 7 are",)),
    "values_2_3": (lambda p: _png(p, np.array([[2, 3]], np.uint8)), lambda p: read_mask(p, CLASSES), ("2, 3",)),
    "value_254": (lambda p: _png(p, np.array([[0, 1, 254]], np.uint8)), lambda p: read_mask(p, CLASSES),
                  ("values 254 are outside the declared classes (allowed: 0, 1, 255)",)),
    "20_values": (lambda p: _png(p, np.arange(10, 30, dtype=np.uint8)[None]), lambda p: read_mask(p, CLASSES),
                  ("10, 11, 12, 13, 14, 15, 16, 17, ...",)),
}

# name -> (write(path), read(path), expected array): odd but valid files read as they should.
ACCEPTED: dict[str, tuple[Callable[[Path], object], Callable[[Path], np.ndarray], list]] = {
    "16_bit_mask_within_8_bits": (lambda p: _png16(p, [[255, 1], [0, 0]]), lambda p: read_mask(p, CLASSES), _ID_MASK),
    "palette_mask": (lambda p: _palette(p, _ID_MASK), lambda p: read_mask(p, CLASSES), _ID_MASK),
    "grey_rgb_mask": (lambda p: _png(p, _channels((255, 255, 255))), lambda p: read_mask(p, CLASSES), _ID_MASK),
    "grey_rgba_mask": (lambda p: _png(p, _channels((1, 1, 1), alpha=True)), lambda p: read_mask(p, CLASSES), _ID_MASK),
    "rgba_tile": (lambda p: _png(p, _channels((200, 10, 30), alpha=True)), lambda p: read_rgb(p)[0, 0], [200, 10, 30]),
    "grey_tile": (lambda p: _png(p, np.array([[9, 0]], np.uint8)), lambda p: read_rgb(p)[0, 0], [9, 9, 9]),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_pixel_format_refused(name: str, tmp_path: Path) -> None:
    write, read, fragments = REFUSED[name]
    path = tmp_path / "file.png"
    write(path)
    path = path if path.exists() else path.with_suffix(".tif")
    raises_naming(path, *fragments)(lambda: read(path))


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_pixel_format_accepted(name: str, tmp_path: Path) -> None:
    write, read, expected = ACCEPTED[name]
    write(tmp_path / "file.png")
    assert read(tmp_path / "file.png").tolist() == expected


# ---------------------------------------------------------------- tile sizes and masks


@pytest.mark.parametrize("size", [(100, 100), (300, 200), (32, 31), (31, 32)])
def test_wrong_size_tile_is_refused_before_decoding(size: tuple[int, int], tmp_path: Path) -> None:
    path = forge_png(tmp_path / "tile.png", size)  # no pixel data: refused on the header alone
    raises_naming(path, f"image is {size[0]}x{size[1]} px, expected 32x32")(
        lambda: read_tile(path, None, CLASSES, (32, 32)))


def test_resize_only_when_asked(tmp_path: Path) -> None:
    image = _png(tmp_path / "tile.png", _rgb_noise((20, 30, 3)))
    mask = _png(tmp_path / "mask.png", np.zeros((20, 30), np.uint8))
    rgb, ids = read_tile(image, mask, CLASSES, (16, 16), resize=True)
    assert rgb.shape == (16, 16, 3) and ids is not None and ids.shape == (16, 16)


def test_mask_of_another_size_than_its_image(tmp_path: Path) -> None:
    image = _png(tmp_path / "tile.png", _rgb_noise((8, 8, 3)))
    mask = _png(tmp_path / "mask.png", np.zeros((8, 6), np.uint8))
    raises_naming(mask, "mask is 6x8 but image tile.png is 8x8")(lambda: read_tile(image, mask, CLASSES, (8, 8)))


def test_large_mask_size_is_checked_on_the_header(tmp_path: Path) -> None:
    from histosynth.sampling.large.masks import read_large_mask

    wrong = forge_png(tmp_path / "wrong.png", (300, 200))
    raises_naming(wrong, "mask is 300x200 px, expected 256x256")(lambda: read_large_mask(wrong, CLASSES, 256, 256))
    bomb = forge_png(tmp_path / "bomb.png")
    raises_naming(bomb, "declares 60000 x 60000 px")(lambda: read_large_mask(bomb, CLASSES, 8192, 8192))


def test_plain_slide_image_has_a_higher_limit_but_still_one(tmp_path: Path) -> None:
    from histosynth.composition.tiles import SlideImage
    from histosynth.composition.tiles import image_size as slide_size

    bomb = forge_jpeg(tmp_path / "he.jpg")
    assert slide_size(bomb) == BOMB
    raises_naming(bomb, "declares 60000 x 60000 px, above the 2000 MP limit")(lambda: SlideImage(bomb))
    broken = tmp_path / "he.png"
    broken.write_text("not an image")
    raises_naming(broken, "corrupt or unreadable")(lambda: slide_size(broken))


def test_features_of_a_missing_tile(tmp_path: Path) -> None:
    from histosynth.encoders.features import image_features
    from histosynth.encoders.pixels import PixelEncoder

    raises_naming(tmp_path / "gone.png", "not found")(lambda: image_features(PixelEncoder(), [tmp_path / "gone.png"]))


# ---------------------------------------------------------------- manifests


def _dataset(tmp_path: Path, n: int = 4, size: tuple[int, int] = (32, 32)) -> Path:
    return write_tile_dataset(tmp_path, n=n, size=size, splits=("train",))


@pytest.mark.parametrize(("change", "fragments"), [
    (lambda rows: rows[2].update(id="tile_0"), ["line 4 (id tile_0): duplicate id 'tile_0', first used on line 2"]),
    (lambda rows: [r.update(id="same") for r in rows], ["line 3 (id same): duplicate id", "(and 2 more such problems)"]),
    (lambda rows: rows[1].update(id=""), ["line 3: id is empty"]),
    (lambda rows: rows[3].update(id="  "), ["line 5: id is empty"]),
])
def test_manifest_id_rules(change: Callable, fragments: list[str], tmp_path: Path, edit_manifest: Callable) -> None:
    manifest = _dataset(tmp_path)
    edit_manifest(manifest, change)
    raises_naming(manifest, *fragments)(lambda: load_manifest(manifest))
    raises_naming(manifest, *fragments)(lambda: load_manifest(tmp_path))  # the folder holding manifest.csv
    assert len(load_manifest(manifest, check_ids=False)) == 4  # what `data validate` reads


def test_folder_dataset_with_two_files_of_one_name(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    _png(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    raises_naming(tmp_path, "duplicate id 'a'", "images/a.png and images/a.jpg")(lambda: load_manifest(tmp_path))


def test_unknown_label_names_the_manifest_row(tmp_path: Path, edit_manifest: Callable) -> None:
    manifest = _dataset(tmp_path)
    edit_manifest(manifest, lambda rows: rows[1].update(label="Tumour"))
    loaded = load_manifest(manifest, ClassList(labels=["Normal", "Polyp"]))
    raises_naming(manifest, "line 3 (id tile_1): unknown class 'Tumour'")(loaded.label_ids)


@pytest.mark.parametrize("size", [(100, 100), (300, 200), (32, 16)])
def test_training_tensors_refuse_other_sizes(size: tuple[int, int], tmp_path: Path) -> None:
    from histosynth.training.tensors import load_tile_tensors

    manifest = _dataset(tmp_path)
    odd = tmp_path / "images" / "tile_2.png"
    _png(odd, _rgb_noise((size[1], size[0], 3)))
    _png(tmp_path / "masks" / "tile_2.png", np.zeros(size[::-1], np.uint8))
    dataset = load_manifest(manifest)
    raises_naming(odd, f"image is {size[0]}x{size[1]} px, expected 32x32")(lambda: load_tile_tensors(dataset, 32))
    assert load_tile_tensors(dataset, 32, resize=True).images.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("breaker", ["bomb_image", "bomb_mask", "missing_image", "missing_mask", "mask_size",
                                     "mask_values", "text_image"])
def test_training_tensors_name_the_bad_file(breaker: str, tmp_path: Path) -> None:
    from histosynth.training.tensors import load_tile_tensors

    manifest = _dataset(tmp_path)
    image, mask = tmp_path / "images" / "tile_1.png", tmp_path / "masks" / "tile_1.png"
    breakers: dict[str, Callable[[], tuple[Path, str]]] = {
        "bomb_image": lambda: (forge_png(image), "declares 60000 x 60000 px"),
        "bomb_mask": lambda: (forge_png(mask), "declares 60000 x 60000 px"),
        "missing_image": lambda: (_gone(image), "not found"),
        "missing_mask": lambda: (_gone(mask), "not found"),
        "mask_size": lambda: (_png(mask, np.zeros((31, 32), np.uint8)), "mask is 32x31 but image tile_1.png is 32x32"),
        "mask_values": lambda: (_png(mask, np.full((32, 32), 9, np.uint8)), "mask values 9"),
        "text_image": lambda: (_text(image), "corrupt or unreadable"),
    }
    bad, fragment = breakers[breaker]()
    raises_naming(bad, fragment)(lambda: load_tile_tensors(load_manifest(manifest), 32, jobs=1))


def test_torch_dataset_names_a_bomb(tmp_path: Path) -> None:
    from histosynth.data.dataset import TileDataset

    manifest = _dataset(tmp_path)
    bomb = forge_jpeg(tmp_path / "images" / "tile_3.png")  # a JPEG behind a .png name, declaring 60000 px
    raises_naming(bomb, "declares 60000 x 60000 px")(lambda: TileDataset(load_manifest(manifest), size=16)[3])


def test_validate_reports_bombs_and_tile_sizes(tmp_path: Path) -> None:
    manifest = _dataset(tmp_path)
    forge_png(tmp_path / "images" / "tile_0.png")
    forge_tiff(tmp_path / "masks" / "tile_1.png")
    _png(tmp_path / "images" / "tile_2.png", _rgb_noise((20, 30, 3)))
    _png(tmp_path / "masks" / "tile_2.png", np.zeros((20, 30), np.uint8))
    problems = validate_manifest(load_manifest(manifest), tile_size=(32, 32))
    assert [(p.kind, p.row) for p in problems] == [("corrupt_image", 1), ("corrupt_mask", 2), ("tile_size", 3)]
    assert "image images/tile_0.png: declares 60000 x 60000 px" in str(problems[0])
    assert "mask masks/tile_1.png: declares 60000 x 60000 px" in str(problems[1])
    assert str(problems[2]).endswith("(id tile_2): image images/tile_2.png is 30x20 px, expected 32x32")


# ---------------------------------------------------------------- through the CLI (exit 2, one line)


def _one_error_line(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_validate_reports_a_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _dataset(tmp_path)
    forge_png(tmp_path / "images" / "tile_2.png")
    code, _, err = run_cli(["data", "validate", str(manifest)], capsys)
    assert code == 2 and "manifest.csv:4 (id tile_2): image images/tile_2.png: declares 60000 x 60000 px" in err


@pytest.mark.parametrize("breaker", ["bomb", "text"])
def test_cli_stats_names_the_file(breaker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _dataset(tmp_path)
    bad = tmp_path / "masks" / "tile_3.png"
    forge_bmp(bad) if breaker == "bomb" else _text(bad)
    code, _, err = run_cli(["data", "stats", str(manifest)], capsys)
    _one_error_line(code, err, str(bad), "declares 60000 x 60000 px" if breaker == "bomb" else "corrupt or unreadable")


@pytest.mark.parametrize("problem", ["duplicate_id", "tile_size"])
def test_cli_train_refuses_before_training(problem: str, tmp_path: Path, edit_manifest: Callable,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _dataset(tmp_path / "data", size=(100, 100) if problem == "tile_size" else (224, 224))
    if problem == "duplicate_id":
        edit_manifest(manifest, lambda rows: rows[3].update(id="tile_1"))
    code, _, err = run_cli(["train", "autoencoder", "--data", str(manifest), "--out", str(tmp_path / "m"),
                            "--steps", "1"], capsys)
    _one_error_line(code, err, f"{manifest}: line 5 (id tile_1): duplicate id 'tile_1'" if problem == "duplicate_id"
                    else "tile_0.png: image is 100x100 px, expected 224x224")


@pytest.mark.parametrize("where", ["real", "synthetic"])
def test_cli_privacy_refuses_duplicate_ids(where: str, tmp_path: Path, edit_manifest: Callable,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    real = write_tile_dataset(tmp_path / "real", n=4, size=(16, 16), splits=("train", "test"))
    synthetic = write_tile_dataset(tmp_path / "synth", n=3, size=(16, 16), splits=("",))
    broken = real if where == "real" else synthetic
    edit_manifest(broken, lambda rows: rows[2].update(id="tile_0"))
    code, _, err = run_cli(["evaluate", "privacy", "--train", str(real), "--synthetic", str(synthetic.parent),
                            "--encoder", "pixels", "--cache", str(tmp_path / "cache")], capsys)
    _one_error_line(code, err, "manifest.csv: line 4 (id tile_0): duplicate id 'tile_0'")
