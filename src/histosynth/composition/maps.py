"""Spatial maps of one cell type: the true abundance beside each model's prediction, one row per section.

Spots are drawn as discs at their coordinates (viridis). Each panel is scaled to its own 1st-99th
percentile: the maps show *where* a type is (what Pearson r scores), not whether the levels match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from histosynth.io import save_png

#: Viridis at five stops (linear interpolation in between).
VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)
PANEL, TITLE, GAP = 200, 16, 6


def colourise(values: np.ndarray) -> np.ndarray:
    """RGB uint8 (N, 3) of ``values`` scaled to their own 1st-99th percentile (constant -> middle colour)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = (np.percentile(values, [1, 99]) if len(values) else (0.0, 1.0))
    t = np.full(len(values), 0.5) if high - low <= 0 else np.clip((values - low) / (high - low), 0, 1)
    position = t * (len(VIRIDIS) - 1)
    i = np.minimum(position.astype(int), len(VIRIDIS) - 2)
    frac = (position - i)[:, None]
    return np.round(VIRIDIS[i] * (1 - frac) + VIRIDIS[i + 1] * frac).astype(np.uint8)


def spot_radius(coords: np.ndarray) -> float:
    """Half the median nearest-neighbour spacing (the disc radius in coordinate units)."""
    if len(coords) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    spacing = float(np.median(cKDTree(coords).query(coords, k=2)[0][:, 1]))
    return max(spacing * 0.45, 1e-9)


def draw_panel(coords: np.ndarray, values: np.ndarray, title: str, size: int = PANEL) -> np.ndarray:
    """One ``size`` x ``size`` map (plus a title strip) of ``values`` at ``coords``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size + TITLE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((3, 2), title, fill=(0, 0, 0))
    if len(coords):
        radius = spot_radius(coords)
        low, high = coords.min(axis=0) - radius, coords.max(axis=0) + radius
        scale = (size - 4) / max(float((high - low).max()), 1e-9)
        r = max(1.0, radius * scale)
        for (x, y), colour in zip((coords - low) * scale + 2, colourise(values)):
            draw.ellipse((x - r, TITLE + y - r, x + r, TITLE + y + r), fill=tuple(int(c) for c in colour))
    return np.asarray(image)


def spatial_map(coords: np.ndarray, sections: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray],
                pearson: dict[str, np.ndarray] | None = None, section_order: Sequence[str] | None = None,
                title: str = "") -> np.ndarray:
    """Rows = sections, columns = truth then each model (titled with that section's r when given)."""
    from PIL import Image, ImageDraw

    order = list(section_order) if section_order is not None else sorted(set(sections.tolist()))
    rows = []
    for s_index, section in enumerate(order):
        rows_of = sections == section
        panels = [draw_panel(coords[rows_of], truth[rows_of], f"{section} true")]
        for model, pred in predictions.items():
            r = pearson[model][s_index] if pearson is not None else np.nan
            label = f"{section} {model}" + (f" r={r:.2f}" if np.isfinite(r) else "")
            panels.append(draw_panel(coords[rows_of], pred[rows_of], label))
        spacer = np.full((PANEL + TITLE, GAP, 3), 255, np.uint8)
        rows.append(np.concatenate([p for panel in panels for p in (panel, spacer)][:-1], axis=1))
    spacer = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
    header = Image.new("RGB", (rows[0].shape[1], TITLE + 4), (255, 255, 255))
    ImageDraw.Draw(header).text((3, 3), f"{title}  (each panel: its own 1st-99th percentile, viridis)".strip(),
                                fill=(0, 0, 0))
    return np.concatenate([np.asarray(header)] + [p for row in rows for p in (row, spacer)][:-1], axis=0)


def safe_name(text: str) -> str:
    """A file-name-safe version of a cell-type name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "type"


def write_maps(folder: str | Path, coords: np.ndarray, sections: np.ndarray, targets: np.ndarray,
               predictions: dict[str, np.ndarray], names: Sequence[str],
               pearson: dict[str, np.ndarray] | None = None, on_map: object = None) -> list[Path]:
    """One PNG per cell type in ``folder`` (``<type>.png``); returns their paths."""
    folder = Path(folder)
    order = sorted(set(sections.tolist()))
    paths, used = [], set()
    for j, name in enumerate(names):
        stem = safe_name(name)
        while stem in used:
            stem += "_"
        used.add(stem)
        scores = {m: p[:, j] for m, p in pearson.items()} if pearson is not None else None
        image = spatial_map(coords, sections, targets[:, j], {m: p[:, j] for m, p in predictions.items()}, scores,
                            order, title=name)
        path = folder / f"{stem}.png"
        save_png(path, image)
        paths.append(path)
        if callable(on_map):
            on_map(1)
    return paths
