"""Tiny synthetic spatial data sets, built on the fly: slide images with coloured spots whose abundances
are a known function of the spot colour (so of any colour-preserving embedding)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPACING, DIAMETER = 20, 12
TYPES = ["major:red", "major:green", "major:blue", "minor:other"]


@dataclass
class Synthetic:
    root: Path
    images: dict[str, Path]
    rows: list[dict[str, object]]
    coords: dict[str, np.ndarray]
    csv: Path


def abundances(colour: np.ndarray) -> np.ndarray:
    """Known positive function of an RGB colour (N, 3) -> abundances of TYPES (N, 4)."""
    c = colour.astype(np.float64) / 255.0
    return np.column_stack([c[:, 0] ** 2 + 0.05, c[:, 1] + 0.05, 1.2 - c[:, 2], np.full(len(c), 0.3)])


def write_synthetic(root: Path, sections: tuple[str, ...] = ("A1", "A2", "B1"), grid: tuple[int, int] = (7, 6),
                    seed: int = 0) -> Synthetic:
    """One PNG slide per section (white glass, a solid square of a random colour per spot) + a CSV of spots."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    cols, rows_n = grid
    width, height = (cols + 1) * SPACING, (rows_n + 1) * SPACING
    images, rows, coords = {}, [], {}
    for section in sections:
        image = np.full((height, width, 3), 255, np.uint8)
        centres = np.array([((i + 1) * SPACING, (j + 1) * SPACING) for j in range(rows_n) for i in range(cols)],
                           np.float64)
        colours = rng.integers(30, 226, (len(centres), 3))
        for (x, y), colour in zip(centres.astype(int), colours):
            half = DIAMETER // 2
            image[y - half : y + half, x - half : x + half] = colour
        path = root / f"{section}.png"
        Image.fromarray(image).save(path)
        images[section], coords[section] = path, centres
        for k, ((x, y), values) in enumerate(zip(centres, abundances(colours))):
            row: dict[str, object] = {"spot_id": f"{section}_{k}", "section": section, "patient": section[0],
                                      "pixel_x": x, "pixel_y": y, "image": path.name}
            row.update(dict(zip(TYPES, values)))
            rows.append(row)
    manifest = root / "spots.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Synthetic(root, images, rows, coords, manifest)


def write_h5ad(path: Path, synthetic: Synthetic, section: str, obsm_key: str | None = "q05_cell_abundance_w_sf",
               spatial: bool = True) -> Path:
    """One section as an AnnData: a few fake genes in X, abundances in obsm[obsm_key] (or obs), obsm['spatial']."""
    import anndata
    import pandas as pd

    rows = [r for r in synthetic.rows if r["section"] == section]
    obs = pd.DataFrame(index=[str(r["spot_id"]) for r in rows])
    values = pd.DataFrame([[r[t] for t in TYPES] for r in rows], index=obs.index,
                          columns=[f"q05cell_abundance_w_sf_{t.split(':')[1]}" for t in TYPES])
    adata = anndata.AnnData(X=np.arange(len(rows) * 3, dtype=np.float32).reshape(len(rows), 3), obs=obs)
    if obsm_key is None:
        for column in values:
            adata.obs[column] = values[column].to_numpy()
    else:
        adata.obsm[obsm_key] = values
    if spatial:
        adata.obsm["spatial"] = np.array([[r["pixel_x"], r["pixel_y"]] for r in rows], np.float64)
    adata.write_h5ad(path)
    return path
