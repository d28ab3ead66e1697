"""The one writer of a synthetic dataset folder: ``images/``, ``masks/``, ``manifest.csv`` with provenance.

Every tile maker (plain, guided, transfer, the benchmarks, Ray workers) hands :func:`write_dataset`
(or, for a Ray shard, :func:`write_tiles`) a plan: one :class:`SyntheticRow` per tile, in manifest
order, with what the maker needs to make it. The writer checks the folder and the plan, skips what is
finished, and writes the rest batch by batch.

Tiles are written atomically one by one; the manifest is rewritten atomically after every batch,
so a killed run leaves a valid dataset of what was finished, and a rerun skips those ids. A tile
counts as finished only when its row is in the manifest (or in a Ray shard's part,
``.shards/<shard id>.csv``) and its PNGs are complete: a truncated file (from a copy, a full disk
or an old writer) is written again. A row may have no mask (an empty ``mask`` cell: "mask unknown")
and extra columns after the standard ones (e.g. what steered a guided tile).

Before anything is written the folder is checked: someone else's files (a manifest with other
columns, other entries) and tiles made by another model or with other settings are refused in one line.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from histosynth.io import (
    atomic_open,
    check_free_space,
    check_same_settings,
    is_complete_png,
    prepare_output_dir,
    remove_stale_temporaries,
    save_png,
)

if TYPE_CHECKING:
    from histosynth.data.classes import ClassList

MANIFEST = "manifest.csv"
SHARD_DIR = ".shards"  # manifest parts of Ray shards, merged into manifest.csv
MANIFEST_COLUMNS = ("id", "image", "mask", "label", "split", "seed", "model", "sampler", "steps", "guidance",
                    "mask_source")
LAYOUT = ("images", "masks", MANIFEST, "classes.json")  # what a run writes
RUN_FIELDS = ("model", "sampler", "steps", "guidance")  # equal for every tile of a folder
TILE_FIELDS = ("seed", "mask_source", "label")  # equal for a tile id made again (with every extra column)
RESUME_REFUSED = "the tiles here were made with another model or other settings"

Job = TypeVar("Job")


@dataclass(frozen=True)
class SyntheticRow:
    id: str
    image: str
    mask: str  # "" when the tile has no mask
    label: str
    split: str
    seed: int
    model: str
    sampler: str
    steps: int
    guidance: float | str  # the weight, or 'w@low-high' with a guidance interval
    mask_source: str
    #: Extra columns (after the standard ones) and their values.
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, tile_id: str, *, mask: bool = True, **values: object) -> SyntheticRow:
        """A row with the usual file names ``images/<id>.png`` and ``masks/<id>.png`` (``mask=False``: none)."""
        return cls(id=tile_id, image=f"images/{tile_id}.png", mask=f"masks/{tile_id}.png" if mask else "",
                   split="synthetic", **values)  # type: ignore[arg-type]

    def value(self, column: str) -> object:
        return self.extra[column] if column in self.extra else getattr(self, column)

    def record(self, columns: Sequence[str] = MANIFEST_COLUMNS) -> dict[str, str]:
        """The row as the strings ``manifest.csv`` holds."""
        return {column: str(self.value(column)) for column in columns}


_STANDARD = tuple(f.name for f in fields(SyntheticRow) if f.name != "extra")
#: A tile maker: the planned (row, job) pairs of one batch -> one (image, mask or None) per pair.
MakeTiles = Callable[[list[tuple[SyntheticRow, Any]]], Sequence[tuple[np.ndarray, "np.ndarray | None"]]]


@dataclass
class GenerationResult:
    folder: Path
    written: int
    skipped_existing: int


def _weights(identity: str) -> str:
    """The weights hash of a model identity ``<folder name>@<hash>`` (a renamed folder is the same model)."""
    return str(identity).rpartition("@")[2]


def tile_bytes(tile_size: int) -> int:
    """Disk space one tile may take: its image and mask uncompressed (PNG seldom beats that by much on H&E)."""
    return tile_size * tile_size * 4


def check_folder(folder: str | Path, columns: Sequence[str] = MANIFEST_COLUMNS, kind: str = "sample") -> Path:
    """Refuse (one line) a ``folder`` that cannot be written or holds someone else's files."""
    return prepare_output_dir(folder, kind=kind, columns=columns, layout=LAYOUT)


def read_rows(path: Path, folder: Path, tile_size: int | None = None,
              columns: Sequence[str] = MANIFEST_COLUMNS) -> dict[str, SyntheticRow]:
    """The rows of a manifest (or shard part) ``path`` whose files in ``folder`` are complete PNGs (of
    ``tile_size``, when given); empty when ``path`` is absent."""
    if not path.is_file():
        return {}
    rows: dict[str, SyntheticRow] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            row = SyntheticRow(**{k: record[k] for k in _STANDARD},
                               extra={k: record[k] for k in columns if k not in _STANDARD})
            if tile_complete(folder, row, tile_size):
                rows[row.id] = row
    return rows


def tile_complete(folder: Path, row: SyntheticRow, tile_size: int | None = None) -> bool:
    """Whether the row's image and mask (when it has one) in ``folder`` are complete PNGs (of ``tile_size``)."""
    return all(is_complete_png(folder / name, tile_size) for name in (row.image, row.mask) if name)


def read_finished(folder: str | Path, tile_size: int | None = None, columns: Sequence[str] = MANIFEST_COLUMNS,
                  kind: str = "sample") -> dict[str, SyntheticRow]:
    """The finished rows of ``folder`` (its manifest and any Ray shard parts), after :func:`check_folder`;
    writes nothing."""
    folder = check_folder(folder, columns, kind)
    rows = read_rows(folder / MANIFEST, folder, tile_size, columns)
    if (folder / SHARD_DIR).is_dir():
        for part in sorted((folder / SHARD_DIR).glob("shard_*.csv")):
            rows.update(read_rows(part, folder, tile_size, columns))
    return rows


def check_resume(folder: str | Path, finished: Mapping[str, SyntheticRow], planned: Sequence[SyntheticRow]) -> None:
    """Refuse to add ``planned`` tiles to ``finished`` ones of another model or settings (one line, old -> new).

    Every finished tile must share the model weights, sampler, steps and guidance of the plan, and a
    planned id already finished must have its seed, mask source, label and extra columns.
    """
    if not planned:
        return
    by_id = {row.id: row for row in planned}
    for row in finished.values():
        want = by_id.get(row.id, planned[0])
        fields_ = RUN_FIELDS + ((*TILE_FIELDS, *want.extra) if row.id in by_id else ())
        recorded = {k: row.value(k) for k in fields_}
        wanted = {k: want.value(k) for k in fields_}
        if _weights(row.model) == _weights(want.model):
            wanted["model"] = row.model
        check_same_settings(recorded, wanted, folder, what=RESUME_REFUSED,
                            hint="rerun with the same model and settings, or choose another --out")


def check_plan(out: str | Path, planned: Sequence[SyntheticRow], tile_size: int,
               columns: Sequence[str] = MANIFEST_COLUMNS, kind: str = "sample") -> dict[str, SyntheticRow]:
    """The finished rows of ``out`` once every check has passed, with nothing written: the folder is
    writable and ours, its tiles come from the same model and settings, and the missing tiles fit on disk."""
    finished = read_finished(out, tile_size, columns, kind)
    check_resume(out, finished, planned)
    pending = sum(row.id not in finished for row in planned)
    check_free_space(out, pending * tile_bytes(tile_size), f"writing {pending:,} tiles of {tile_size} px")
    return finished


class SyntheticDatasetWriter:
    """Accumulates rows and tiles in ``folder``; :meth:`done_ids` tells a resumed run what exists.

    The run's writer (``part=None``) checks the folder (:func:`check_folder`) before anything is created;
    then makes ``images/`` and ``masks/``, deletes temporaries of killed writers and, in a new folder,
    writes an empty manifest (which marks it as a synthetic dataset). A Ray shard's writer (``part``: the
    shard id) keeps its rows in ``.shards/<part>.csv`` and touches nothing else: the driver prepared the
    folder. ``rows``: the finished rows when the caller has read them (:func:`check_plan`).
    """

    def __init__(self, folder: str | Path, tile_size: int | None = None,
                 rows: Mapping[str, SyntheticRow] | None = None, *, columns: Sequence[str] = MANIFEST_COLUMNS,
                 part: str | None = None) -> None:
        self.folder, self.columns = Path(folder), tuple(columns)
        self.manifest = self.folder / (MANIFEST if part is None else f"{SHARD_DIR}/{part}.csv")
        if rows is not None:
            self.rows = dict(rows)
        elif part is None:
            self.rows = read_finished(self.folder, tile_size, columns)
        else:
            self.rows = read_rows(self.manifest, self.folder, tile_size, columns)
        if part is None:
            self.clean()
            if not self.manifest.exists():
                self.flush()

    def clean(self) -> None:
        """Make ``images/`` and ``masks/`` and delete temporaries of killed writers (call with no other
        writer at work in the folder)."""
        for sub in ("images", "masks"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("", "images", "masks", SHARD_DIR):
            remove_stale_temporaries(self.folder / sub)

    def done_ids(self) -> set[str]:
        return set(self.rows)

    def add(self, row: SyntheticRow, image: np.ndarray, mask: np.ndarray | None) -> None:
        save_png(self.folder / row.image, image)
        if mask is not None and row.mask:
            save_png(self.folder / row.mask, mask.astype(np.uint8))
        self.rows[row.id] = row

    def flush(self, order: Iterable[str] | None = None) -> Path:
        """Rewrite the manifest atomically: rows in ``order`` first, then every other finished row.

        Finished tiles are never dropped, so a rerun that asks for fewer (or other) tiles in the same
        folder keeps what earlier runs made.
        """
        ids = [i for i in order if i in self.rows] if order is not None else []
        listed = set(ids)
        ids += [i for i in self.rows if i not in listed]
        with atomic_open(self.manifest, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            for tile_id in ids:
                writer.writerow(self.rows[tile_id].record(self.columns))
        return self.manifest

    def finish(self, order: Sequence[str]) -> int:
        """Flush in plan ``order``; once every id of it is finished, drop Ray's shard parts (the folder is
        then the same as a plain run's). Returns how many ids of ``order`` are finished."""
        self.flush(order)
        count = sum(tile_id in self.rows for tile_id in order)
        if count == len(order):
            shutil.rmtree(self.folder / SHARD_DIR, ignore_errors=True)
        return count


def batches(todo: Sequence[tuple[SyntheticRow, Job]], size: int,
            key: Callable[[Job], Hashable] | None = None) -> list[list[tuple[SyntheticRow, Job]]]:
    """Consecutive batches of at most ``size`` tiles (that share ``key(job)``, when given)."""
    out: list[list[tuple[SyntheticRow, Job]]] = []
    for item in todo:
        if not out or len(out[-1]) == size or (key is not None and key(out[-1][0][1]) != key(item[1])):
            out.append([])
        out[-1].append(item)
    return out


def _order(planned: Sequence[tuple[SyntheticRow, Any]]) -> list[str]:
    order = [row.id for row, _ in planned]
    if len(set(order)) != len(order):
        raise ValueError("tile ids must be unique")
    return order


def write_tiles(writer: SyntheticDatasetWriter, planned: Sequence[tuple[SyntheticRow, Job]], make: MakeTiles,
                batch_size: int, on_tile: Callable[[int], None] | None = None,
                key: Callable[[Job], Hashable] | None = None) -> tuple[int, int]:
    """Make and write the unfinished tiles of ``planned``, flushing the manifest after every batch;
    returns (written, skipped). ``on_tile`` first gets the finished count, then every batch's size."""
    order = _order(planned)
    todo = [(row, job) for row, job in planned if row.id not in writer.rows]
    skipped = len(planned) - len(todo)
    if on_tile is not None and skipped:
        on_tile(skipped)
    for batch in batches(todo, batch_size, key):
        for (row, _), (image, mask) in zip(batch, make(batch)):
            writer.add(row, image, mask)
        writer.flush(order)
        if on_tile is not None:
            on_tile(len(batch))
    return len(todo), skipped


def write_dataset(out: str | Path, planned: Sequence[tuple[SyntheticRow, Job]], make: MakeTiles, *, tile_size: int,
                  batch_size: int, classes: ClassList | None = None, columns: Sequence[str] = MANIFEST_COLUMNS,
                  kind: str = "sample", on_tile: Callable[[int], None] | None = None,
                  key: Callable[[Job], Hashable] | None = None) -> GenerationResult:
    """Write the plan into ``out``: check everything (:func:`check_plan`), skip finished tiles, make the
    rest in batches of ``batch_size`` (sharing ``key(job)``), save ``classes.json``."""
    order = _order(planned)
    finished = check_plan(out, [row for row, _ in planned], tile_size, columns, kind)
    writer = SyntheticDatasetWriter(out, tile_size, finished, columns=columns)
    written, skipped = write_tiles(writer, planned, make, batch_size, on_tile, key)
    writer.finish(order)
    if classes is not None:
        classes.save(Path(out) / "classes.json")
    return GenerationResult(Path(out), written, skipped)

