"""Dataset statistics: counts per split and class, mask coverage, image sizes, colour moments.

Every tile is decoded once (in a thread pool); colour mean and std are exact, from per-channel
256-bin histograms accumulated in int64 and reduced in float64.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from histosynth.data.images import mask_to_class_ids, read_raw_mask, read_rgb
from histosynth.data.manifest import TileManifest, TileRecord
from histosynth.data.validate import map_in_order

NO_SPLIT = "(none)"
UNLABELLED = "(unlabelled)"
SPLIT_ORDER = ("train", "val", "test")


class DatasetStats(BaseModel):
    """Summary of a tile dataset (all fractions in 0..1, colours in 0..255 RGB)."""

    source: str
    n_tiles: int
    labels: list[str]
    splits: list[str]
    counts: dict[str, dict[str, int]]  # split -> label -> tiles; "(none)" / "(unlabelled)" keys
    unlabelled: int
    n_masks: int
    foreground_fraction_mean: float | None  # mean over tiles with a mask; foreground = class id != 0
    foreground_fraction_by_label: dict[str, float]
    mask_class_fractions: dict[str, float]  # pixel share of each mask class over all masks
    image_sizes: dict[str, int]  # "WxH" -> tiles
    colour_mean: list[float]  # RGB
    colour_std: list[float]  # RGB, population std over all pixels


@dataclass
class _TileSummary:
    size: str
    channel_histograms: np.ndarray  # 3 x 256 int64
    mask_class_pixels: np.ndarray | None  # num_mask_classes int64


def _summarise(record: TileRecord, dataset: TileManifest) -> _TileSummary:
    image = read_rgb(record.image)
    histograms = np.stack([np.bincount(image[..., c].ravel(), minlength=256) for c in range(3)])
    mask_pixels = None
    if record.mask is not None:
        raw = read_raw_mask(record.mask)
        raw_counts = np.bincount(raw.ravel(), minlength=256)
        classes = dataset.classes
        if any(int(v) not in classes.mask_values for v in np.flatnonzero(raw_counts)):
            mask_to_class_ids(raw, classes, record.mask)  # raises, listing the undeclared values
        mask_pixels = np.zeros(classes.num_mask_classes, dtype=np.int64)
        for value, class_id in classes.mask_values.items():
            mask_pixels[class_id] += raw_counts[value]
    size = f"{image.shape[1]}x{image.shape[0]}"
    return _TileSummary(size, histograms.astype(np.int64), mask_pixels)


def _ordered_splits(names: set[str]) -> list[str]:
    known = [s for s in SPLIT_ORDER if s in names]
    return known + sorted(names - set(SPLIT_ORDER) - {NO_SPLIT}) + ([NO_SPLIT] if NO_SPLIT in names else [])


def compute_stats(
    dataset: TileManifest, jobs: int = 1, on_row: Callable[[int], None] | None = None
) -> DatasetStats:
    """Read every tile (and mask) of ``dataset`` once and summarise it.

    Raises :class:`~histosynth.errors.InputError` on the first unreadable file; run
    ``histosynth data validate`` for a full report.
    """
    labels = list(dataset.classes.labels)
    seen_labels = [r.label for r in dataset.records if r.label and r.label not in labels]
    columns = labels + sorted(set(seen_labels))
    if any(not r.label for r in dataset.records):
        columns.append(UNLABELLED)
    splits = _ordered_splits({r.split or NO_SPLIT for r in dataset.records})
    counts = {split: dict.fromkeys(columns, 0) for split in splits}
    for record in dataset.records:
        counts[record.split or NO_SPLIT][record.label or UNLABELLED] += 1

    histograms = np.zeros((3, 256), dtype=np.int64)
    mask_pixels = np.zeros(dataset.classes.num_mask_classes, dtype=np.int64)
    sizes: Counter[str] = Counter()
    fractions_by_label: dict[str, list[float]] = {}
    summaries = map_in_order(lambda r: _summarise(r, dataset), dataset.records, jobs=jobs, on_row=on_row)
    for record, summary in zip(dataset.records, summaries):
        sizes[summary.size] += 1
        histograms += summary.channel_histograms
        if summary.mask_class_pixels is not None:
            mask_pixels += summary.mask_class_pixels
            total = int(summary.mask_class_pixels.sum())
            foreground = (total - int(summary.mask_class_pixels[0])) / total if total else 0.0
            fractions_by_label.setdefault(record.label or UNLABELLED, []).append(foreground)

    all_fractions = [f for values in fractions_by_label.values() for f in values]
    n_pixels = int(histograms[0].sum())
    values = np.arange(256, dtype=np.float64)
    if n_pixels:
        mean = (histograms @ values) / n_pixels
        variance = (histograms * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n_pixels
        colour_mean, colour_std = mean.tolist(), np.sqrt(variance).tolist()
    else:
        colour_mean, colour_std = [0.0] * 3, [0.0] * 3
    total_mask_pixels = int(mask_pixels.sum())
    return DatasetStats(
        source=str(dataset.source),
        n_tiles=len(dataset),
        labels=columns,
        splits=splits,
        counts=counts,
        unlabelled=sum(1 for r in dataset.records if not r.label),
        n_masks=len(all_fractions),
        foreground_fraction_mean=float(np.mean(all_fractions)) if all_fractions else None,
        foreground_fraction_by_label={
            label: float(np.mean(fractions_by_label[label])) for label in columns if label in fractions_by_label
        },
        mask_class_fractions={
            name: (int(mask_pixels[i]) / total_mask_pixels if total_mask_pixels else 0.0)
            for i, name in enumerate(dataset.classes.mask_classes)
        },
        image_sizes=dict(sizes.most_common()),
        colour_mean=colour_mean,
        colour_std=colour_std,
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Plain-text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *(line(r) for r in rows)]


def format_stats(stats: DatasetStats) -> str:
    """A readable plain-text report of :class:`DatasetStats`."""
    lines = [
        f"{stats.source}: {stats.n_tiles} tiles, {len(stats.splits)} split(s), "
        f"{stats.unlabelled} unlabelled, {stats.n_masks} with masks",
        "",
    ]
    has_fg = bool(stats.foreground_fraction_by_label)
    header = ["label", *stats.splits, "total"] + (["mask fg"] if has_fg else [])
    rows = []
    for label in stats.labels:
        per_split = [stats.counts[s].get(label, 0) for s in stats.splits]
        row = [label, *map(str, per_split), str(sum(per_split))]
        if has_fg:
            fraction = stats.foreground_fraction_by_label.get(label)
            row.append("-" if fraction is None else f"{fraction:.3f}")
        rows.append(row)
    split_totals = [sum(stats.counts[s].values()) for s in stats.splits]
    total_row = ["total", *map(str, split_totals), str(stats.n_tiles)]
    if has_fg:
        total_row.append(f"{stats.foreground_fraction_mean:.3f}")
    lines += _table(header, [*rows, total_row])
    lines.append("")
    if has_fg:
        lines.append("mask fg:             mean fraction of mask pixels in a non-background class, per tile")
    lines.append("image sizes:         " + ", ".join(f"{k} ({v})" for k, v in stats.image_sizes.items()))
    if stats.n_masks:
        lines.append(
            "mask class pixels:   "
            + ", ".join(f"{name} {fraction:.3f}" for name, fraction in stats.mask_class_fractions.items())
        )
    lines.append("colour mean (RGB):   " + " ".join(f"{v:.2f}" for v in stats.colour_mean))
    lines.append("colour std (RGB):    " + " ".join(f"{v:.2f}" for v in stats.colour_std))
    return "\n".join(lines)
