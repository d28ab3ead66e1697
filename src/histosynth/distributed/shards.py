"""Shards of a synthetic-dataset job, their manifest parts, and the merge into ``manifest.csv``.

The plan is the plain sampler's (:func:`histosynth.sampling.generate.generate_dataset`): tile ``i``
of a label has id ``<label-slug>_<i:06d>`` and seed ``seed + i``, so its pixels depend on nothing
else; neither does its mask (a folder mask by index, or one generated from the label and the seed,
procedurally or by the mask model, whose identity and settings the row's ``mask_source`` records).
Shard ``k`` holds plan positions ``k*size .. (k+1)*size - 1``; with ``size`` a multiple of the
batch size an uninterrupted distributed run samples exactly the plain run's batches.

Workers write every tile atomically and, after every batch, their shard's manifest part
(``.shards/<shard id>.csv``, atomically). The merge reads ``manifest.csv`` and every part, keeps the
rows whose image and mask both exist, and rewrites ``manifest.csv`` in plan order: it is idempotent,
and a rerun after any kill finds exactly what was finished.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from histosynth.io import atomic_open, remove_stale_temporaries
from histosynth.sampling.generate import MaskSource, _slug
from histosynth.sampling.sampler import SamplingSettings
from histosynth.sampling.writer import MANIFEST_COLUMNS, SyntheticRow

SHARD_DIR = ".shards"
MANIFEST = "manifest.csv"
Row = dict[str, str]


@dataclass(frozen=True)
class TileJob:
    """One tile to sample: its finished manifest row, class id, and mask (folder index, or generated)."""

    row: SyntheticRow
    label: int
    #: Index into the folder masks; None: generated from ``(label, row.seed)`` as the run's mask source says
    #: (procedural, or the mask model).
    mask_index: int | None


@dataclass(frozen=True)
class Shard:
    """A unit of work with a deterministic id; its jobs are in plan order."""

    id: str
    jobs: tuple[TileJob, ...]


def plan_jobs(
    class_labels: Sequence[str],
    identity: str,
    n: int,
    labels: Sequence[int],
    masks: MaskSource,
    mask_names: Sequence[str] | None,
    settings: SamplingSettings,
    seed: int = 0,
    mask_model: str = "",
) -> list[TileJob]:
    """Every tile of the run in plan order (the plain sampler's ids, seeds and provenance rows).

    ``mask_model`` is the mask model's identity (:func:`~histosynth.sampling.masks.mask_model_identity`)
    for a mask-model source; it goes into ``mask_source`` as the plain sampler writes it.
    """
    generated = masks.describe(mask_model)
    jobs = []
    for label in labels:
        name = class_labels[label]
        for i in range(n):
            tile_id = f"{_slug(name)}_{i:06d}"
            if mask_names:
                index: int | None = i % len(mask_names)
                source = f"{masks.folder.name}/{mask_names[index]}"
            else:
                index, source = None, generated
            row = SyntheticRow(
                id=tile_id, image=f"images/{tile_id}.png", mask=f"masks/{tile_id}.png", label=name,
                split="synthetic", seed=seed + i, model=identity, sampler=settings.sampler, steps=settings.steps,
                guidance=settings.guidance_record, mask_source=source,
            )
            jobs.append(TileJob(row, label, index))
    return jobs


def make_shards(jobs: Sequence[TileJob], size: int) -> list[Shard]:
    """Cut the plan into shards of ``size`` tiles; shard ``k`` is ``shard_<k:06d>``."""
    if size < 1:
        raise ValueError("shard size must be at least 1")
    return [Shard(f"shard_{k:06d}", tuple(jobs[start:start + size]))
            for k, start in enumerate(range(0, len(jobs), size))]


def row_dict(row: SyntheticRow) -> Row:
    """A row as the strings ``csv`` writes (what reading the manifest back gives)."""
    return {key: str(value) for key, value in asdict(row).items()}


def _files_exist(folder: Path, row: Mapping[str, str]) -> bool:
    return (folder / row["image"]).is_file() and (folder / row["mask"]).is_file()


def read_rows(path: Path, folder: Path) -> dict[str, Row]:
    """Rows of a manifest or manifest part whose image and mask exist (empty if the file is absent)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = {row["id"]: {k: row[k] for k in MANIFEST_COLUMNS} for row in csv.DictReader(handle)}
    return {tile_id: row for tile_id, row in rows.items() if _files_exist(folder, row)}


def write_rows(path: Path, rows: Iterable[Mapping[str, str]]) -> None:
    """Write manifest rows atomically, in the given order."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def part_path(folder: str | Path, shard_id: str) -> Path:
    return Path(folder) / SHARD_DIR / f"{shard_id}.csv"


def collect_rows(folder: str | Path) -> dict[str, Row]:
    """Finished rows found in ``manifest.csv`` and every shard part (image and mask present)."""
    folder = Path(folder)
    rows = read_rows(folder / MANIFEST, folder)
    parts = folder / SHARD_DIR
    if parts.is_dir():
        for part in sorted(parts.glob("shard_*.csv")):
            rows.update(read_rows(part, folder))
    return rows


def write_manifest(folder: str | Path, order: Sequence[str], rows: Mapping[str, Row]) -> int:
    """Rewrite ``manifest.csv`` atomically with the rows of ``order`` that are present; returns their count."""
    kept = [rows[tile_id] for tile_id in order if tile_id in rows]
    write_rows(Path(folder) / MANIFEST, kept)
    return len(kept)


def merge_manifest(folder: str | Path, order: Sequence[str], known: Mapping[str, Row] | None = None) -> int:
    """Merge ``manifest.csv``, the shard parts and ``known`` rows in plan order (idempotent); returns the count.

    ``known`` are rows the driver already holds (workers return them), so a part overwritten late
    by a dying worker of an earlier run loses nothing. When every id of ``order`` is finished, the
    parts are deleted: the folder is then the same as a plain run's. A kill between the two steps is
    harmless, since merging again gives the same file.
    """
    folder = Path(folder)
    rows = collect_rows(folder)
    rows.update({k: v for k, v in (known or {}).items() if _files_exist(folder, v)})
    count = write_manifest(folder, order, rows)
    if count == len(order):
        shutil.rmtree(folder / SHARD_DIR, ignore_errors=True)
    return count


def prepare_folder(folder: str | Path) -> None:
    """Create the output layout and delete temporaries of killed writers (call with no worker running)."""
    folder = Path(folder)
    for sub in ("images", "masks", SHARD_DIR):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("", "images", "masks", SHARD_DIR):
        remove_stale_temporaries(folder / sub)
