"""Uploads go through the package's one image reader: the web app and the CLI refuse the same bad images with
the same message (the web app's names the form field where the CLI's names the file), as one-line 4xx answers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from histosynth.data.images import read_mask, read_raw_mask, read_rgb
from histosynth.errors import InputError
from serve_helpers import TILE, forged_png, half_mask, png
from testkit import run_cli


def _tiff(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="TIFF")
    return buffer.getvalue()


def _png16(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


COLOUR_MASK = np.dstack([half_mask() * 255, np.zeros((TILE, TILE)), np.zeros((TILE, TILE))])
#: Bad uploads that `histosynth transfer` also reads (any size): name -> (field, content).
SHARED = {
    "text": ("appearance", b"hello, I am a text file"),
    "gif": ("appearance", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
    "eps": ("appearance_mask", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"),
    "png_magic_garbage": ("appearance", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
    "truncated": ("appearance", png(np.full((TILE, TILE, 3), 9))[:60]),
    "truncated_mask": ("appearance_mask", png(half_mask() * 255)[:45]),
    "bomb": ("appearance", forged_png(60000, 60000)),
    "bomb_mask": ("appearance_mask", forged_png(60000, 60000)),
    "zero_size": ("appearance", forged_png(0, 0)),
    "wide_16bit_image": ("appearance", _png16(np.full((TILE, TILE), 1000))),
    "mask_16bit": ("appearance_mask", _png16(np.full((TILE, TILE), 1000))),
    "mask_colour": ("appearance_mask", png(COLOUR_MASK)),
    "mask_values": ("appearance_mask", png(half_mask() * 200)),
}


def _valid(field: str) -> bytes:
    return png(np.full((TILE, TILE, 3), 128)) if field == "appearance" else png(half_mask() * 255)


def _web(client, field: str, content: bytes) -> object:
    other = "appearance_mask" if field == "appearance" else "appearance"
    files = {field: (f"{field}.png", content, "image/png"), other: (f"{other}.png", _valid(other), "image/png"),
             "mask": ("mask.png", png(half_mask()), "image/png")}
    data = {"mode": "transfer", "mask_encoding": "ids", "steps": "1"}
    return client.post("/api/generate", data=data, files=files)


@pytest.mark.parametrize("case", sorted(SHARED))
def test_the_web_app_and_the_cli_refuse_the_same_upload_alike(case, client, expect, tiny_model_dir, tmp_path,
                                                               capsys) -> None:
    field, content = SHARED[case]
    web = expect(_web(client, field, content), 400)
    assert web.startswith(f"{field}: "), web
    bad = tmp_path / f"{case}.png"
    bad.write_bytes(content)
    files = {"appearance": tmp_path / "appearance.png", "appearance_mask": tmp_path / "appearance_mask.png"}
    for name, path in files.items():
        if name != field:
            path.write_bytes(_valid(name))
    files[field] = bad
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "t.png").write_bytes(png(half_mask() * 255))
    code, _, err = run_cli(["transfer", "--model", str(tiny_model_dir), "--appearance", str(files["appearance"]),
                            "--appearance-mask", str(files["appearance_mask"]), "--target-masks",
                            str(tmp_path / "targets"), "--steps", "1", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.strip() == f"error: {bad}: {web.removeprefix(f'{field}: ')}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(SHARED))
def test_bytes_and_files_read_alike(case, tmp_path) -> None:
    """The reader itself: bytes (named by ``name``) and the same bytes in a file give the same message."""
    from tiny_models import CLASSES

    field, content = SHARED[case]
    path = tmp_path / f"{case}.png"
    path.write_bytes(content)
    read = (lambda source, **kw: read_rgb(source, **kw)) if field == "appearance" else \
        (lambda source, **kw: read_mask(source, CLASSES, **kw))
    with pytest.raises(InputError) as from_file:
        read(path)
    with pytest.raises(InputError) as from_bytes:
        read(content, name=field)
    with pytest.raises(InputError) as from_stream:
        read(io.BytesIO(content), name=field)
    message = str(from_file.value).removeprefix(f"{path}: ")
    assert str(from_bytes.value) == str(from_stream.value) == f"{field}: {message}"
    assert from_bytes.value.path is not None and from_bytes.value.path.name == field


def test_bytes_pass_the_same_size_side_and_pixel_checks(monkeypatch) -> None:
    from histosynth.data.images import MAX_PIXELS_ENV

    tile = png(np.full((TILE, TILE, 3), 7))
    assert read_rgb(tile, (TILE, TILE), max_side=TILE, name="f").shape == (TILE, TILE, 3)
    assert read_raw_mask(io.BytesIO(png(half_mask())), name="m").max() == 1
    with pytest.raises(InputError, match=r"^f: image is 32x32 px, expected 16x16$"):
        read_rgb(tile, (16, 16), name="f")
    with pytest.raises(InputError, match=r"^f: image is 32x32 px, more than 31 px a side$"):
        read_rgb(tile, max_side=31, name="f")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(InputError, match=r"^f: declares 32 x 32 px, above the 1000 px limit"):
        read_rgb(tile, name="f")


@pytest.mark.parametrize("mode", ["CMYK", "LAB", "YCbCr", "LA", "PA", "I", "F", "1"])
def test_uploads_of_any_mode_are_read_or_refused_in_one_line(client, expect, mode: str) -> None:
    """Wrong-mode uploads are a 400 naming the field, never a 500; modes the reader takes are accepted."""
    for field in ("appearance", "appearance_mask"):
        array = np.full((TILE, TILE, 3), 128, np.uint8) if field == "appearance" else half_mask() * 255
        try:
            content = _tiff(array, mode)
        except (OSError, ValueError):
            pytest.skip(f"Pillow cannot write {mode} TIFFs")
        response = _web(client, field, content)
        if response.status_code != 200:
            assert expect(response, 400).startswith(f"{field}: "), response.text


def test_a_mode_pillow_cannot_convert_is_one_line_not_corruption(monkeypatch) -> None:
    def refuse(self, mode=None, *args, **kwargs):
        raise ValueError(f"conversion from {self.mode} to {mode} not supported")

    monkeypatch.setattr(Image.Image, "convert", refuse)
    with pytest.raises(InputError, match=r"^appearance: image has mode RGB, which cannot be read as RGB$"):
        read_rgb(png(np.zeros((TILE, TILE, 3))), name="appearance")
