"""Shards of a synthetic-dataset job, for the Ray workers.

The plan is the plain sampler's (:func:`histosynth.sampling.generate.plan_rows`): tile ``i`` of a
label has id ``<label-slug>_<i:06d>`` and seed ``seed + i``, so its pixels depend on nothing else;
neither does its mask (a folder mask by index, or one generated from the label and the seed,
procedurally or by the mask model, whose identity and settings the row's ``mask_source`` records).
Shard ``k`` holds plan positions ``k*size .. (k+1)*size - 1``; with ``size`` a multiple of the
batch size an uninterrupted distributed run samples exactly the plain run's batches.

Workers write through the one dataset writer (:mod:`histosynth.sampling.writer`): every tile
atomically and, after every batch, their shard's manifest part (``.shards/<shard id>.csv``). The
driver's writer merges the parts into ``manifest.csv`` in plan order (:func:`merge_manifest`): it is
idempotent, and a rerun after any kill finds exactly what was finished.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from histosynth.sampling.generate import TileJob
from histosynth.sampling.writer import SHARD_DIR, SyntheticDatasetWriter, SyntheticRow, read_finished, tile_complete

__all__ = ["SHARD_DIR", "Shard", "make_shards", "merge_manifest", "part_path"]


@dataclass(frozen=True)
class Shard:
    """A unit of work with a deterministic id; its jobs are in plan order."""

    id: str
    jobs: tuple[TileJob, ...]


def make_shards(jobs: Sequence[TileJob], size: int) -> list[Shard]:
    """Cut the plan into shards of ``size`` tiles; shard ``k`` is ``shard_<k:06d>``."""
    if size < 1:
        raise ValueError("shard size must be at least 1")
    return [Shard(f"shard_{k:06d}", tuple(jobs[start:start + size]))
            for k, start in enumerate(range(0, len(jobs), size))]


def part_path(folder: str | Path, shard_id: str) -> Path:
    return Path(folder) / SHARD_DIR / f"{shard_id}.csv"


def merge_manifest(writer: SyntheticDatasetWriter, order: Sequence[str],
                   known: Mapping[str, SyntheticRow] | None = None) -> int:
    """Merge ``manifest.csv``, the shard parts and ``known`` rows into ``writer``'s manifest in plan order
    (idempotent); returns how many ids of ``order`` are finished.

    ``known`` are rows the driver already holds (workers return them), so a part overwritten late
    by a dying worker of an earlier run loses nothing. When every id of ``order`` is finished, the
    parts are deleted: the folder is then the same as a plain run's. A kill between the two steps is
    harmless, since merging again gives the same file.
    """
    folder = writer.folder
    writer.rows.update(read_finished(folder, columns=writer.columns))
    writer.rows.update({k: row for k, row in (known or {}).items() if tile_complete(folder, row)})
    return writer.finish(order)
