"""Writing a synthetic dataset folder: ``images/``, ``masks/``, ``manifest.csv`` with provenance.

Tiles are written atomically one by one; the manifest is rewritten atomically after every batch,
so a killed run leaves a valid dataset of what was finished, and a rerun skips those ids.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from histosynth.io import atomic_open, remove_stale_temporaries, save_png

MANIFEST_COLUMNS = ("id", "image", "mask", "label", "split", "seed", "model", "sampler", "steps", "guidance",
                    "mask_source")


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


class SyntheticDatasetWriter:
    """Accumulates rows and tiles in ``folder``; :meth:`done_ids` tells a resumed run what exists."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        (self.folder / "masks").mkdir(parents=True, exist_ok=True)
        for sub in ("", "images", "masks"):
            remove_stale_temporaries(self.folder / sub)
        self.rows: dict[str, SyntheticRow] = {}
        manifest = self.folder / "manifest.csv"
        if manifest.exists():
            with open(manifest, newline="") as handle:
                for row in csv.DictReader(handle):
                    if self._files_exist(row["id"]):
                        self.rows[row["id"]] = SyntheticRow(**{k: row[k] for k in MANIFEST_COLUMNS})

    def _files_exist(self, tile_id: str) -> bool:
        return (self.folder / "images" / f"{tile_id}.png").exists() and (self.folder / "masks" / f"{tile_id}.png").exists()

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
        with atomic_open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            for tile_id in ids:
                writer.writerow(asdict(self.rows[tile_id]))
        return path
