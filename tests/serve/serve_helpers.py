"""PNG and mask helpers for the web-app tests (imported by name; conftest modules shadow each other)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 32  # tests/tiny_models.py
#: TestClient's base URL: the app answers loopback Host headers only (its default is "testserver").
LOCAL = "http://127.0.0.1:8000"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_url(url: str) -> np.ndarray:
    import base64

    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def half_mask(size: int = TILE) -> np.ndarray:
    """Class ids: gland (1) on the top half, background below."""
    mask = np.zeros((size, size), np.uint8)
    mask[: size // 2] = 1
    return mask


def forged_png(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR declares ``width`` x ``height`` (CRC fixed): a decompression-bomb header."""
    import zlib

    data = bytearray(png(np.zeros((2, 2), np.uint8)))
    data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


SECRET = b"TOP-SECRET-CONTENT"

#: Manifest rows that point outside their dataset folder: name -> (image, mask), in row order.
ESCAPES = {
    "parent_traversal": ("../../../../../../../../etc/passwd", ""),
    "absolute_etc": ("/etc/passwd", ""),
    "absolute_outside": ("{outside}/secret.png", ""),
    "relative_outside": ("{relative}/secret.png", ""),
    "symlinked_file": ("images/link.png", ""),
    "symlinked_dir": ("images/linkdir/secret.png", ""),
    "sibling_dataset": ("../run_a/images/tile_0.png", ""),
    "mask_outside": ("images/ok.png", "{relative}/secret.png"),
    "mask_symlink": ("images/ok.png", "images/link.png"),
    "symlink_loop": ("images/loop.png", ""),
    "nul_byte": ("images/ok.png\x00/../../../etc/passwd", ""),
}
#: Unreadable tile images: name -> (file content; None: a directory; b"": empty; absent for "missing"), in row order.
BROKEN = {
    "bomb_60000": forged_png(60000, 60000),
    "wide_9000": forged_png(9000, 16),
    "truncated": png(np.zeros((TILE, TILE, 3)))[:60],
    "text": b"hello, not a PNG",
    "empty": b"",
    "gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    "directory": None,
    "missing": b"",
}


def write_manifest(folder: Path, rows: list[tuple[str, str]]) -> None:
    """``folder/manifest.csv`` with one ``(image, mask)`` pair a row (label Polyp)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "mask", "label"])
        writer.writerows([f"t{i}", image, mask, "Polyp"] for i, (image, mask) in enumerate(rows))


def write_outside(folder: Path) -> Path:
    """Files that must never be served: ``secret.png``, ``secret.txt`` and a dataset ``dataset/``."""
    from testkit import write_tile_dataset

    write_tile_dataset(folder / "dataset", n=1, size=(TILE, TILE))
    (folder / "secret.png").write_bytes(png(np.full((TILE, TILE, 3), (7, 77, 177))))
    (folder / "secret.txt").write_bytes(SECRET)
    return folder


def write_hostile_datasets(root: Path, outside: Path) -> None:
    """Datasets in ``root``: ``evil`` (rows of :data:`ESCAPES`), ``broken`` (rows of :data:`BROKEN`, then a row
    whose mask is a bomb), ``badcsv`` and ``nocols`` (broken manifests), ``linkedcsv`` and ``linkedreport``
    (manifest / report symlinked outside), and ``escaped``, a dataset folder symlinked outside."""
    evil = root / "evil"
    (evil / "images").mkdir(parents=True)
    (evil / "images" / "ok.png").write_bytes(png(np.zeros((TILE, TILE, 3))))
    (evil / "images" / "link.png").symlink_to(outside / "secret.png")
    (evil / "images" / "linkdir").symlink_to(outside, target_is_directory=True)
    (evil / "images" / "loop.png").symlink_to(evil / "images" / "loop.png")
    relative = os.path.relpath(outside, evil)
    write_manifest(evil, [(image.format(outside=outside, relative=relative), mask.format(relative=relative))
                          for image, mask in ESCAPES.values()])
    broken = root / "broken" / "images"
    broken.mkdir(parents=True)
    for name, content in BROKEN.items():
        if content is None:
            (broken / f"{name}.png").mkdir()
        elif name != "missing":
            (broken / f"{name}.png").write_bytes(content)
    (broken / "bomb_mask.png").write_bytes(forged_png(60000, 60000))
    write_manifest(root / "broken", [(f"images/{name}.png", "") for name in BROKEN]
                   + [("images/truncated.png", "images/bomb_mask.png")])
    (root / "badcsv").mkdir()
    (root / "badcsv" / "manifest.csv").write_bytes(b"id,image\n\xff\xfe\xfa,\x00\x81\n")
    (root / "nocols").mkdir()
    (root / "nocols" / "manifest.csv").write_text("foo,bar\n1,2\n")
    (root / "linkedcsv").mkdir()
    (root / "linkedcsv" / "manifest.csv").symlink_to(outside / "dataset" / "manifest.csv")
    write_manifest(root / "linkedreport", [("images/ok.png", "")])
    (root / "linkedreport" / "audit").mkdir()
    (root / "linkedreport" / "audit" / "report.html").symlink_to(outside / "secret.txt")
    (root / "escaped").symlink_to(outside / "dataset", target_is_directory=True)
