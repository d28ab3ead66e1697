"""Browsing synthetic dataset folders (``images/``, ``masks/``, ``manifest.csv``, ``audit/report.html``).

Datasets are addressed by folder name and tiles by their row index, never by a path from the
request. Every file read is resolved (symlinks followed) and refused unless it lies inside its
dataset folder, itself inside the browsed folder, so a hostile manifest (``../../etc/passwd``, an
absolute path, a symlink out) reaches nothing else. Errors never carry server paths: the operator's
log gets the details, the client a generic message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.data.manifest import MANIFEST_FILE_NAME, TileManifest, load_manifest
from histosynth.errors import HistosynthError, InputError
from histosynth.serve.uploads import colour_mask, png_bytes

REPORT = Path("audit") / "report.html"
THUMB_SIDE = 256
MAX_TILE_SIDE = 8192  # pixels a side of a dataset tile, checked from its header before decoding
MAX_MANIFEST_BYTES = 64 * 2**20

log = logging.getLogger("histosynth.serve")


class BrowseError(Exception):
    """A dataset request that cannot be answered; ``status`` is its HTTP status, the message is for clients."""

    status = 404


class NotFound(BrowseError, LookupError):
    """An unknown dataset, tile or report (HTTP 404)."""


class Refused(BrowseError):
    """A manifest entry that points outside its dataset folder (HTTP 403)."""

    status = 403


class Unreadable(BrowseError):
    """A dataset file that is corrupt, not an image, or too large to decode (HTTP 422)."""

    status = 422


@dataclass
class _Cached:
    stamp: int
    manifest: TileManifest


def _inside(path: Path, folder: Path) -> Path | None:
    """``path`` with symlinks resolved if it lies inside ``folder`` (resolved too), else ``None``."""
    try:
        real = path.resolve()
        return real if real.is_relative_to(folder.resolve()) else None
    except (OSError, RuntimeError, ValueError):  # symlink loops, NUL bytes
        return None


class DatasetBrowser:
    """The dataset folder ``root`` itself, or the dataset folders directly inside it."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise InputError("dataset folder not found", self.root)
        self._cache: dict[Path, _Cached] = {}

    def folders(self) -> dict[str, Path]:
        """Dataset name -> resolved folder (rescanned on every call, so new datasets appear); folders that
        resolve outside the browsed folder are skipped."""
        if self.root is None:
            return {}
        try:
            root = self.root.resolve()
            if (root / MANIFEST_FILE_NAME).is_file():
                return {root.name: root}
            found = {}
            for entry in sorted(root.iterdir()):
                folder = _inside(entry, root)
                if folder is not None and folder.is_dir() and (folder / MANIFEST_FILE_NAME).is_file():
                    found[entry.name] = folder
            return found
        except OSError as error:
            log.warning("cannot list %s: %s", self.root, error)
            return {}

    def folder(self, name: str) -> Path:
        folder = self.folders().get(name)
        if folder is None:
            raise NotFound("dataset not found")
        return folder

    def manifest(self, name: str) -> tuple[Path, TileManifest]:
        """The dataset's folder and (cached until it changes) manifest."""
        folder = self.folder(name)
        path = _inside(folder / MANIFEST_FILE_NAME, folder)
        if path is None:
            log.warning("refused %s: outside %s", folder / MANIFEST_FILE_NAME, folder)
            raise Refused("dataset manifest lies outside its folder")
        try:
            stat = path.stat()
            if stat.st_size > MAX_MANIFEST_BYTES:
                raise InputError(f"manifest over {MAX_MANIFEST_BYTES // 2**20} MiB", path)
            cached = self._cache.get(folder)
            if cached is None or cached.stamp != stat.st_mtime_ns:
                cached = self._cache[folder] = _Cached(stat.st_mtime_ns, load_manifest(folder))
        except (OSError, HistosynthError) as error:
            log.warning("cannot read the manifest of %s: %s", folder, error)
            raise Unreadable("dataset manifest could not be read") from None
        return folder, cached.manifest

    def list(self) -> list[dict]:
        """Every dataset with its tile count and whether it has a report."""
        out = []
        for name, folder in self.folders().items():
            try:
                tiles = len(self.manifest(name)[1].records)
            except BrowseError:
                tiles = 0
            out.append({"name": name, "tiles": tiles, "has_report": self._report(folder) is not None})
        return out

    def tiles(self, name: str, offset: int = 0, limit: int = 48) -> dict:
        """One page of a dataset's tiles: index, id, label and provenance columns."""
        folder, manifest = self.manifest(name)
        records = manifest.records[offset:offset + limit]
        rows = [{"index": offset + i, "id": r.id, "label": r.label or "", "has_mask": r.mask is not None,
                 **{k: v for k, v in r.extra.items() if k in ("seed", "model", "sampler", "steps", "guidance")}}
                for i, r in enumerate(records)]
        return {"name": name, "total": len(manifest.records), "offset": offset, "tiles": rows,
                "has_report": self._report(folder) is not None}

    def _tile_file(self, folder: Path, path: Path, kind: str) -> Path:
        """The tile's ``kind`` file, resolved; ``Refused`` outside the dataset folder, ``NotFound`` if absent."""
        real = _inside(path, folder)
        if real is None:
            log.warning("refused %s: outside %s", path, folder)
            raise Refused(f"tile {kind} lies outside the dataset folder")
        if not real.is_file():
            raise NotFound(f"tile {kind} not found")
        return real

    def tile_png(self, name: str, index: int, kind: str) -> bytes:
        """A tile's image, or its mask coloured by class, as PNG (at most :data:`THUMB_SIDE` a side)."""
        from PIL import Image

        from histosynth.data.images import mask_to_class_ids, read_raw_mask, read_rgb

        folder, manifest = self.manifest(name)
        if not 0 <= index < len(manifest.records):
            raise NotFound("tile not found")
        record = manifest.records[index]
        source = record.image if kind == "image" else record.mask
        if source is None or kind not in ("image", "mask"):
            raise NotFound(f"tile has no {kind}" if kind == "mask" else "tile not found")
        try:
            path = self._tile_file(folder, source, kind)
            if kind == "image":
                array = read_rgb(path, max_side=MAX_TILE_SIDE)
            else:
                raw = read_raw_mask(path, max_side=MAX_TILE_SIDE)
                try:
                    ids = mask_to_class_ids(raw, manifest.classes, path)
                except InputError:  # values the class list does not declare: show foreground vs background
                    ids = (raw > 0).astype(np.uint8)
                array = colour_mask(ids)
            image = Image.fromarray(array)
            if max(image.size) > THUMB_SIDE:
                image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.NEAREST if kind == "mask" else Image.BILINEAR)
            return png_bytes(np.asarray(image))
        except BrowseError:
            raise
        except Exception as error:  # noqa: BLE001 -- the reader's one-line errors, and any decoder surprise
            log.warning("cannot read %s: %s", source, error)
            raise Unreadable(f"tile {kind} could not be read") from None

    def _report(self, folder: Path) -> Path | None:
        path = folder / REPORT
        real = _inside(path, folder)
        if real is None and path.is_symlink():
            log.warning("refused %s: outside %s", path, folder)
        return real if real is not None and real.is_file() else None

    def report(self, name: str) -> Path:
        """The dataset's ``audit/report.html`` (written by ``histosynth report``), resolved."""
        path = self._report(self.folder(name))
        if path is None:
            raise NotFound("dataset has no audit report; run histosynth report on it")
        return path
