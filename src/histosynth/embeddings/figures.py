"""Pictures of prototypes: elbow curves (SVG), nearest-tile contact sheet, slide maps, per-case histograms."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np

from histosynth.embeddings.prototypes import ElbowCurve
from histosynth.io import atomic_open, save_png

_BASE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
         (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours: ten qualitative ones, then golden-ratio hues."""
    colours = list(_BASE[:n])
    for i in range(len(colours), n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.9)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def elbow_svg(path: str | Path, curves: Sequence[ElbowCurve], panel: tuple[int, int] = (260, 190)) -> Path:
    """Small multiples: WCSS / WCSS(k=1) against k for each group, the chosen k ringed in red."""
    width, height = panel
    columns = min(3, max(1, len(curves)))
    rows = -(-len(curves) // columns)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{columns * width}" height="{rows * height}" '
             'font-family="sans-serif" font-size="10">']
    left, right, top, bottom = 42, 10, 22, 28
    for index, curve in enumerate(curves):
        ox, oy = (index % columns) * width, (index // columns) * height
        ks, w = np.asarray(curve.ks, float), np.asarray(curve.wcss, float)
        w = w / w[0] if w[0] > 0 else w
        x0, x1 = ks.min(), max(ks.max(), ks.min() + 1)
        sx = lambda k: ox + left + (k - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
        sy = lambda v: oy + top + (1 - v) * (height - top - bottom)  # noqa: E731
        parts.append(f'<text x="{ox + left}" y="{oy + 14}" font-weight="bold">{escape(curve.group)} '
                     f'(k={curve.k}; {curve.n_fit} of {curve.n_tiles} tiles fitted)</text>')
        parts.append(f'<rect x="{ox + left}" y="{oy + top}" width="{width - left - right}" '
                     f'height="{height - top - bottom}" fill="none" stroke="#999"/>')
        for v in (0.0, 0.5, 1.0):
            parts.append(f'<text x="{ox + left - 4}" y="{sy(v) + 3:.1f}" text-anchor="end">{v:g}</text>')
        for k in curve.ks:
            parts.append(f'<text x="{sx(k):.1f}" y="{oy + height - bottom + 12}" text-anchor="middle">{k}</text>')
        parts.append(f'<text x="{ox + width / 2}" y="{oy + height - 4}" text-anchor="middle">k</text>')
        points = " ".join(f"{sx(k):.1f},{sy(v):.1f}" for k, v in zip(ks, w))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
        parts.extend(f'<circle cx="{sx(k):.1f}" cy="{sy(v):.1f}" r="2" fill="#1f77b4"/>' for k, v in zip(ks, w))
        chosen = curve.ks.index(curve.k)
        parts.append(f'<circle cx="{sx(curve.k):.1f}" cy="{sy(w[chosen]):.1f}" r="6" fill="none" stroke="#d62728" '
                     'stroke-width="2"/>')
    parts.append(f'<text x="4" y="{rows * height - 4}" fill="#555">WCSS relative to k=1</text></svg>')
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(parts))
    return Path(path)


def nearest_members(ids: np.ndarray, distances: np.ndarray, count: int, n: int) -> list[list[int]]:
    """For each prototype 0..count-1, the indices of its ``n`` members closest to its centroid."""
    out = []
    for p in range(count):
        members = np.flatnonzero(ids == p)
        out.append(members[np.argsort(distances[members], kind="stable")[:n]].tolist())
    return out


def prototype_sheet(path: str | Path, names: Sequence[str], sizes: Sequence[int], tiles: Sequence[Sequence[str]],
                    tile: int = 96) -> Path:
    """One row per prototype: its name and size, then its nearest tiles (contact sheet style)."""
    from histosynth.data.images import read_rgb
    from histosynth.report.contact_sheet import write_contact_sheet

    rows = []
    for name, size, paths in zip(names, sizes, tiles):
        images = [read_rgb(p) for p in paths] or [np.full((tile, tile, 3), 255, np.uint8)]
        rows.append((f"{name} (n={size})", images, [np.zeros(i.shape[:2], np.uint8) for i in images]))
    return write_contact_sheet(path, rows, tile=tile)


def _legend(names: Sequence[str], colours: Sequence[tuple[int, int, int]], present: set[int]):
    from PIL import Image, ImageDraw

    shown = [i for i in range(len(names)) if i in present]
    legend = Image.new("RGB", (170, max(16, 14 * len(shown) + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for row, i in enumerate(shown):
        draw.rectangle((4, 4 + 14 * row, 14, 14 + 14 * row), fill=colours[i])
        draw.text((20, 3 + 14 * row), names[i][:24], fill=(0, 0, 0))
    return legend


def slide_map(path: str | Path, xy: np.ndarray, ids: np.ndarray, names: Sequence[str], cell: int | None = None) -> Path:
    """PNG map of one slide: each tile drawn at its grid position in its prototype's colour, with a legend.

    ``cell``: pixels per tile (default: the long side comes to about 600 px, 2 to 24 px per tile)."""
    from PIL import Image

    xs, ys = np.unique(xy[:, 0]), np.unique(xy[:, 1])
    steps = [np.diff(v).min() for v in (xs, ys) if len(v) > 1]
    step = float(min(steps)) if steps else 1.0
    col = np.round((xy[:, 0] - xs.min()) / step).astype(int)
    row = np.round((xy[:, 1] - ys.min()) / step).astype(int)
    colours = palette(len(names))
    grid = np.full((row.max() + 1, col.max() + 1, 3), 235, np.uint8)
    cell = cell or int(np.clip(600 // max(grid.shape[:2]), 2, 24))
    for r, c, p in zip(row, col, ids):
        grid[r, c] = colours[p]
    image = Image.fromarray(np.repeat(np.repeat(grid, cell, 0), cell, 1))
    legend = _legend(names, colours, set(ids.tolist()))
    canvas = Image.new("RGB", (image.width + legend.width + 8, max(image.height, legend.height)), (255, 255, 255))
    canvas.paste(image, (0, 0))
    canvas.paste(legend, (image.width + 8, 0))
    save_png(path, np.asarray(canvas))
    return Path(path)


def case_histograms(csv_path: str | Path, svg_path: str | Path, cases: Sequence[str], ids: np.ndarray,
                    names: Sequence[str]) -> tuple[Path, Path]:
    """Per-case prototype counts as CSV (case x prototype) and an SVG heat map of per-case fractions."""
    import csv

    order = sorted(set(cases))
    counts = np.zeros((len(order), len(names)), np.int64)
    index = {c: i for i, c in enumerate(order)}
    np.add.at(counts, (np.array([index[c] for c in cases]), ids), 1)
    with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "tiles", *names])
        for case, row in zip(order, counts):
            writer.writerow([case, int(row.sum()), *row.tolist()])
    cell, label_w, head_h = 14, 150, 110
    fractions = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + cell * len(names) + 10}" '
             f'height="{head_h + cell * len(order) + 10}" font-family="sans-serif" font-size="9">']
    for j, name in enumerate(names):
        x = label_w + j * cell + cell / 2
        parts.append(f'<text transform="translate({x:.1f},{head_h - 4}) rotate(-60)">{escape(name)}</text>')
    for i, case in enumerate(order):
        y = head_h + i * cell
        parts.append(f'<text x="{label_w - 4}" y="{y + cell - 3}" text-anchor="end">{escape(case)} '
                     f'({int(counts[i].sum())})</text>')
        for j in range(len(names)):
            shade = int(255 - 200 * fractions[i, j])
            parts.append(f'<rect x="{label_w + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="rgb({shade},{shade},255)"><title>{escape(case)} {escape(names[j])}: '
                         f'{int(counts[i, j])}</title></rect>')
    parts.append("</svg>")
    with atomic_open(svg_path, "w", encoding="utf-8") as handle:
        handle.write("".join(parts))
    return Path(csv_path), Path(svg_path)
