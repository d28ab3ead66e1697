"""Browsing synthetic dataset folders (``images/``, ``masks/``, ``manifest.csv``, ``audit/report.html``).

Datasets are addressed by folder name and tiles by their row index, never by a path from the
request, so a request cannot reach any file the manifest does not list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.data.manifest import MANIFEST_FILE_NAME, TileManifest, load_manifest
from histosynth.errors import InputError
from histosynth.serve.uploads import colour_mask, png_bytes

REPORT = Path("audit") / "report.html"
THUMB_SIDE = 256


class NotFound(LookupError):
    """An unknown dataset, tile or report (HTTP 404)."""


@dataclass
class _Cached:
    stamp: int
    manifest: TileManifest


class DatasetBrowser:
    """The dataset folder ``root`` itself, or the dataset folders directly inside it."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise InputError("dataset folder not found", self.root)
        self._cache: dict[Path, _Cached] = {}

    def folders(self) -> dict[str, Path]:
        """Dataset name -> folder (rescanned on every call, so new datasets appear)."""
        if self.root is None:
            return {}
        if (self.root / MANIFEST_FILE_NAME).is_file():
            return {self.root.resolve().name: self.root}
        return {p.name: p for p in sorted(self.root.iterdir()) if (p / MANIFEST_FILE_NAME).is_file()}

    def manifest(self, name: str) -> tuple[Path, TileManifest]:
        folder = self.folders().get(name)
        if folder is None:
            raise NotFound(f"no dataset named {name!r}")
        stamp = (folder / MANIFEST_FILE_NAME).stat().st_mtime_ns
        cached = self._cache.get(folder)
        if cached is None or cached.stamp != stamp:
            cached = self._cache[folder] = _Cached(stamp, load_manifest(folder))
        return folder, cached.manifest

    def list(self) -> list[dict]:
        """Every dataset with its tile count and whether it has a report."""
        out = []
        for name, folder in self.folders().items():
            try:
                tiles = len(self.manifest(name)[1].records)
            except InputError:
                tiles = 0
            out.append({"name": name, "tiles": tiles, "has_report": (folder / REPORT).is_file()})
        return out

    def tiles(self, name: str, offset: int = 0, limit: int = 48) -> dict:
        """One page of a dataset's tiles: index, id, label and provenance columns."""
        folder, manifest = self.manifest(name)
        records = manifest.records[offset:offset + limit]
        rows = [{"index": offset + i, "id": r.id, "label": r.label or "", "has_mask": r.mask is not None,
                 **{k: v for k, v in r.extra.items() if k in ("seed", "model", "sampler", "steps", "guidance")}}
                for i, r in enumerate(records)]
        return {"name": name, "total": len(manifest.records), "offset": offset, "tiles": rows,
                "has_report": (folder / REPORT).is_file()}

    def tile_png(self, name: str, index: int, kind: str) -> bytes:
        """A tile's image, or its mask coloured by class, as PNG (at most :data:`THUMB_SIDE` a side)."""
        from PIL import Image

        from histosynth.data.images import mask_to_class_ids, read_raw_mask, read_rgb

        _, manifest = self.manifest(name)
        if not 0 <= index < len(manifest.records):
            raise NotFound(f"dataset {name!r} has no tile {index}")
        record = manifest.records[index]
        if kind == "image":
            array = read_rgb(record.image)
        elif kind == "mask" and record.mask is not None:
            raw = read_raw_mask(record.mask)
            try:
                ids = mask_to_class_ids(raw, manifest.classes, record.mask)
            except InputError:  # values the class list does not declare: show foreground vs background
                ids = (raw > 0).astype(np.uint8)
            array = colour_mask(ids)
        else:
            raise NotFound(f"tile {index} of {name!r} has no {kind}")
        image = Image.fromarray(array)
        if max(image.size) > THUMB_SIDE:
            image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.NEAREST if kind == "mask" else Image.BILINEAR)
        return png_bytes(np.asarray(image))

    def report(self, name: str) -> Path:
        """The dataset's ``audit/report.html`` (written by ``histosynth report``)."""
        folder = self.folders().get(name)
        if folder is None or not (folder / REPORT).is_file():
            raise NotFound(f"dataset {name!r} has no report; run: histosynth report {folder or name} --real MANIFEST")
        return folder / REPORT
