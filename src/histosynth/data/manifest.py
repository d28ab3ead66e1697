"""Tile manifests: a CSV ``id,image,mask,label,split`` or a folder ``images/`` + ``masks/``.

Paths in a CSV are relative to the CSV. Loading reads only the table and applies the id rules of
``histosynth data validate`` (no empty or duplicate id); files are opened later (by
:mod:`histosynth.data.images` or :func:`histosynth.data.validate.validate_manifest`), so a manifest
with missing files still loads and can be validated as a whole.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from histosynth.data.classes import CLASS_FILE_NAME, ClassList
from histosynth.errors import InputError

REQUIRED_COLUMNS = ("id", "image")
STANDARD_COLUMNS = ("id", "image", "mask", "label", "split")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MANIFEST_FILE_NAME = "manifest.csv"


@dataclass(frozen=True)
class TileRecord:
    """One tile: its image, optional mask, optional label and split, and any extra columns."""

    id: str
    image: Path
    mask: Path | None = None
    label: str | None = None
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    row: int = 0  # 1-based data row in the CSV (0 for folder datasets), for error messages


@dataclass
class TileManifest:
    """A list of tile records with the class list that gives their labels ids."""

    source: Path
    records: list[TileRecord]
    classes: ClassList

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[TileRecord]:
        return iter(self.records)

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records if r.split})

    def select_split(self, *names: str) -> TileManifest:
        """Records whose split is one of ``names``; ``InputError`` if none match."""
        chosen = [r for r in self.records if r.split in names]
        if not chosen:
            raise InputError(
                f"split {'/'.join(names)!r} has no tiles (splits here: {', '.join(self.splits) or 'none'})",
                self.source,
            )
        return TileManifest(self.source, chosen, self.classes)

    @property
    def mpp(self) -> float | None:
        """Microns per pixel every tile records alike (the ``mpp`` column of tiled slides, within 1%), else None."""
        values = []
        for record in self.records:
            try:
                values.append(float(record.extra.get("mpp") or "nan"))
            except ValueError:
                return None
        if not values or not all(math.isfinite(v) and v > 0 for v in values) or max(values) > min(values) * 1.01:
            return None
        return round(sum(values) / len(values), 6)

    def label_ids(self) -> list[int]:
        """Label id of every record; ``InputError`` naming the manifest and row of an unknown label."""
        ids = []
        for record in self.records:
            try:
                ids.append(self.classes.label_id(record.label))
            except InputError as error:
                where = f"line {record.row + 1} (id {record.id}): " if record.row else f"id {record.id}: "
                raise InputError(where + str(error), self.source) from None
        return ids


def _none_if_empty(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def read_manifest_csv(path: Path) -> list[TileRecord]:
    """Parse a manifest CSV into records with absolute paths; structural problems raise."""
    base = path.parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: tolerate an Excel BOM
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise InputError(
                    f"manifest lacks column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})",
                    path,
                )
            records = []
            for row_number, row in enumerate(reader, start=1):
                image = _none_if_empty(row.get("image"))
                mask = _none_if_empty(row.get("mask"))
                records.append(
                    TileRecord(
                        id=(row.get("id") or "").strip(),
                        image=(base / image) if image else base,
                        mask=(base / mask) if mask else None,
                        label=_none_if_empty(row.get("label")),
                        split=_none_if_empty(row.get("split")),
                        extra={k: (v or "") for k, v in row.items() if k not in STANDARD_COLUMNS and k},
                        row=row_number,
                    )
                )
    except FileNotFoundError:
        raise InputError("manifest not found", path) from None
    except UnicodeDecodeError:
        raise InputError("manifest is not a UTF-8 CSV file", path) from None
    except csv.Error as error:
        raise InputError(f"manifest is not a valid CSV ({error})", path) from None
    return records


def read_image_folder(folder: Path) -> list[TileRecord]:
    """Records for ``folder/images/*`` with masks ``folder/masks/<stem>.png`` where present."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir():
        raise InputError("folder dataset needs an images/ subfolder", folder)
    records = []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = masks_dir / f"{image.stem}.png"
        records.append(TileRecord(id=image.stem, image=image, mask=mask if mask.exists() else None))
    if not records:
        raise InputError("images/ holds no images", folder)
    return records


def load_manifest(
    path: str | Path, classes: ClassList | str | Path | None = None, check_ids: bool = True
) -> TileManifest:
    """Load a tile dataset from a manifest CSV or a folder.

    A folder that holds ``manifest.csv`` (the synthetic dataset contract) is read through it;
    otherwise ``images/`` + ``masks/`` are paired by file stem. The class list is, in order:
    ``classes`` (object, file or preset name ``ebhi``), ``classes.json`` beside the manifest,
    or inferred from the labels present. An empty or duplicate id raises ``InputError`` naming the
    manifest, line and id, unless ``check_ids`` is False (``data validate``, which reports them all).
    """
    path = Path(path)
    if path.is_dir():
        csv_path = path / MANIFEST_FILE_NAME
        records = read_manifest_csv(csv_path) if csv_path.exists() else read_image_folder(path)
        class_dir = path
    elif path.exists():
        records = read_manifest_csv(path)
        class_dir = path.parent
    else:
        raise InputError("no such manifest or folder", path)

    if isinstance(classes, ClassList):
        class_list = classes
    elif classes is not None:
        class_list = ClassList.load(classes)
    elif (class_dir / CLASS_FILE_NAME).exists():
        class_list = ClassList.load(class_dir / CLASS_FILE_NAME)
    else:
        labels = [r.label for r in records]
        class_list = ClassList.infer(labels) if any(labels) else ClassList(labels=["tissue"])
    manifest = TileManifest(source=path, records=records, classes=class_list)
    if check_ids:
        _refuse_bad_ids(manifest)
    return manifest


def id_conflicts(records: list[TileRecord]) -> list[tuple[TileRecord, TileRecord | None]]:
    """The id rules: ``(record, first record with its id)`` per duplicate id, ``(record, None)`` per empty id."""
    first_of: dict[str, TileRecord] = {}
    conflicts: list[tuple[TileRecord, TileRecord | None]] = []
    for record in records:
        if not record.id:
            conflicts.append((record, None))
        elif record.id in first_of:
            conflicts.append((record, first_of[record.id]))
        else:
            first_of[record.id] = record
    return conflicts


def _refuse_bad_ids(manifest: TileManifest) -> None:
    """``InputError`` naming the manifest, line and id of the first empty or duplicate id."""
    conflicts = id_conflicts(manifest.records)
    if not conflicts:
        return
    record, first = conflicts[0]
    source = manifest.source
    is_csv = not source.is_dir() or (source / MANIFEST_FILE_NAME).exists()
    path = source / MANIFEST_FILE_NAME if source.is_dir() and is_csv else source
    line = f"line {record.row + 1}" if is_csv and record.row > 0 else ""
    named = f"id {record.id}" if record.id else ""
    where = f"{line} ({named})" if line and named else line or named
    where = f"{where}: " if where else ""
    if first is None:
        message = "id is empty"
    elif is_csv:
        message = f"duplicate id {record.id!r}, first used on line {first.row + 1}"
    else:
        shown = [str(r.image.relative_to(source)) if r.image.is_relative_to(source) else str(r.image)
                 for r in (record, first)]
        message = f"duplicate id {record.id!r}: {shown[0]} and {shown[1]} have the same name"
    more = len(conflicts) - 1
    suffix = f" (and {more} more such problem{'s' if more > 1 else ''})" if more else ""
    raise InputError(f"{where}{message}{suffix}", path)
