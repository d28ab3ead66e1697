"""Dependency-free SVG charts for the self-contained HTML report."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Literal

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22", "#e377c2")


def _scale(values: Sequence[float], lo: float, hi: float, pad: float = 0.05) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1
    span = high - low
    return low - pad * span, high + pad * span


def line_chart(series: dict[str, list[tuple[float, float, float]]], x_label: str, y_label: str,
               width: int = 520, height: int = 320,
               legend: Literal["top right", "bottom right"] = "top right") -> str:
    """Lines of (x, y, y_sd) points with error bars, one per named series; the legend in a corner."""
    points = [p for values in series.values() for p in values]
    if not points:
        return "<p>(no data)</p>"
    x0, x1 = _scale([p[0] for p in points], 0, 0)
    y0, y1 = _scale([p[1] - p[2] for p in points] + [p[1] + p[2] for p in points], 0, 0)
    left, bottom, right, top = 60, 40, 20, 20
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
             f'<text x="{(width + left) / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>',
             f'<text x="14" y="{(height - bottom + top) / 2}" transform="rotate(-90 14 {(height - bottom + top) / 2})" '
             f'text-anchor="middle">{escape(y_label)}</text>']
    for i in range(5):
        yv, xv = y0 + (y1 - y0) * i / 4, x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - bottom + 14}" text-anchor="middle">{xv:.3g}</text>')
    legend_y = top + 10 if legend == "top right" else height - bottom - 8 - 14 * (len(series) - 1)
    for index, (name, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        values = sorted(values)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in values)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y, sd in values:
            parts.append(f'<line x1="{sx(x):.1f}" y1="{sy(y - sd):.1f}" x2="{sx(x):.1f}" y2="{sy(y + sd):.1f}" '
                         f'stroke="{colour}"/><circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{width - right - 170}" y="{legend_y + 14 * index}" fill="{colour}">{escape(name)}</text>')
    return "".join(parts) + "</svg>"


def scatter_chart(groups: dict[str, list[tuple[float, float]]], width: int = 420, height: int = 420) -> str:
    """Points per named group (e.g. a 2-D projection of real and synthetic features)."""
    points = [p for values in groups.values() for p in values]
    if not points:
        return "<p>(no data)</p>"
    x0, x1 = _scale([p[0] for p in points], 0, 0)
    y0, y1 = _scale([p[1] for p in points], 0, 0)
    sx = lambda x: 10 + (x - x0) / (x1 - x0) * (width - 20)  # noqa: E731
    sy = lambda y: height - 10 - (y - y0) / (y1 - y0) * (height - 30)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="none" stroke="#ccc"/>']
    for index, (name, values) in enumerate(groups.items()):
        colour = PALETTE[index % len(PALETTE)]
        parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="{colour}" fill-opacity="0.6"/>'
                     for x, y in values)
        parts.append(f'<text x="14" y="{14 + 14 * index}" fill="{colour}">{escape(name)} ({len(values)})</text>')
    return "".join(parts) + "</svg>"
