"""Writing a synthetic dataset folder: ``images/``, ``masks/``, ``manifest.csv`` with provenance.

Tiles are written atomically one by one; the manifest is rewritten atomically after every batch,
so a killed run leaves a valid dataset of what was finished, and a rerun skips those ids. A tile
counts as finished only when its row is in the manifest and both PNGs are complete: a truncated
file (from a copy, a full disk or an old writer) is written again.

Before anything is written the folder is checked: someone else's files (a manifest with other
columns, other entries) and tiles made by another model or with other settings are refused in one line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from histosynth.io import (
    atomic_open,
    check_same_settings,
    is_complete_png,
    prepare_output_dir,
    remove_stale_temporaries,
    save_png,
)

MANIFEST_COLUMNS = ("id", "image", "mask", "label", "split", "seed", "model", "sampler", "steps", "guidance",
                    "mask_source")
LAYOUT = ("images", "masks", "manifest.csv", "classes.json")  # what a run writes
RUN_FIELDS = ("model", "sampler", "steps", "guidance")  # equal for every tile of a folder
TILE_FIELDS = ("seed", "mask_source")  # equal for a tile id made again
RESUME_REFUSED = "the tiles here were made with another model or other settings"


@dataclass(frozen=True)
class SyntheticRow:
    id: str
    image: str
    mask: str
    label: str
    split: str
    seed: int
    model: str
    sampler: str
    steps: int
    guidance: float | str  # the weight, or 'w@low-high' with a guidance interval
    mask_source: str


def _weights(identity: str) -> str:
    """The weights hash of a model identity ``<folder name>@<hash>`` (a renamed folder is the same model)."""
    return str(identity).rpartition("@")[2]


def check_folder(folder: str | Path) -> Path:
    """Refuse (one line) a ``folder`` that cannot be written or holds someone else's files."""
    return prepare_output_dir(folder, kind="sample", columns=MANIFEST_COLUMNS, layout=LAYOUT)


def read_finished(folder: str | Path, tile_size: int | None = None) -> dict[str, SyntheticRow]:
    """The manifest rows of ``folder`` whose image and mask are complete PNGs (of ``tile_size``, when given),
    after :func:`check_folder`; writes nothing."""
    folder = check_folder(folder)
    manifest = folder / "manifest.csv"
    rows: dict[str, SyntheticRow] = {}
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if all(is_complete_png(folder / row[k], tile_size) for k in ("image", "mask")):
                    rows[row["id"]] = SyntheticRow(**{k: row[k] for k in MANIFEST_COLUMNS})
    return rows


def check_resume(folder: str | Path, finished: dict[str, SyntheticRow], planned: Sequence[SyntheticRow]) -> None:
    """Refuse to add ``planned`` tiles to ``finished`` ones of another model or settings (one line, old -> new).

    Every finished tile must share the model weights, sampler, steps and guidance of the plan, and a
    planned id already finished must have its seed and mask source.
    """
    if not planned:
        return
    by_id = {row.id: row for row in planned}
    for row in finished.values():
        want = by_id.get(row.id, planned[0])
        fields = RUN_FIELDS + (TILE_FIELDS if row.id in by_id else ())
        recorded = {k: getattr(row, k) for k in fields}
        wanted = {k: getattr(want, k) for k in fields}
        if _weights(row.model) == _weights(want.model):
            wanted["model"] = row.model
        check_same_settings(recorded, wanted, folder, what=RESUME_REFUSED,
                            hint="rerun with the same model and settings, or choose another --out")


class SyntheticDatasetWriter:
    """Accumulates rows and tiles in ``folder``; :meth:`done_ids` tells a resumed run what exists.

    The folder is checked (:func:`check_folder`) before anything is created; then ``images/``, ``masks/``
    and, in a new folder, an empty manifest (which marks it as a synthetic dataset) are made. ``rows``:
    the finished rows when the caller has read them (:func:`read_finished`) to check them first.
    """

    def __init__(self, folder: str | Path, tile_size: int | None = None,
                 rows: dict[str, SyntheticRow] | None = None) -> None:
        self.folder = Path(folder)
        self.rows = read_finished(self.folder, tile_size) if rows is None else dict(rows)
        for sub in ("images", "masks"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("", "images", "masks"):
            remove_stale_temporaries(self.folder / sub)
        if not (self.folder / "manifest.csv").exists():
            self.flush()

    def done_ids(self) -> set[str]:
        return set(self.rows)

    def add(self, row: SyntheticRow, image: np.ndarray, mask: np.ndarray) -> None:
        save_png(self.folder / row.image, image)
        save_png(self.folder / row.mask, mask.astype(np.uint8))
        self.rows[row.id] = row

    def flush(self, order: Iterable[str] | None = None) -> Path:
        """Rewrite ``manifest.csv`` atomically: rows in ``order`` first, then every other finished row.

        Finished tiles are never dropped, so a rerun that asks for fewer (or other) tiles in the same
        folder keeps what earlier runs made.
        """
        ids = [i for i in order if i in self.rows] if order is not None else []
        listed = set(ids)
        ids += [i for i in self.rows if i not in listed]
        path = self.folder / "manifest.csv"
        with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            for tile_id in ids:
                writer.writerow(asdict(self.rows[tile_id]))
        return path
