"""What ``tile_slide`` leaves in its output folder (slide.json, manifest.csv) and the checks on it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from histosynth.data.slides.reader import SlideReader
from histosynth.data.slides.tissue import SATURATION_FLOOR, TissueMask
from histosynth.errors import InputError
from histosynth.io import atomic_open, prepare_output_dir

MANIFEST_COLUMNS = ("id", "image", "mask", "label", "split", "x", "y", "level", "mpp", "tissue_fraction")
SLIDE_JSON = "slide.json"
GEOMETRY_KEYS = ("tile_size", "level", "mpp", "overlap", "min_tissue")  # must match to resume
LAYOUT = ("images", "manifest.csv", SLIDE_JSON)  # what a run writes


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an ``out_dir`` that cannot be written or holds files of something else
    than a tiling run (a manifest with other columns, or one without ``slide.json``)."""
    prepare_output_dir(out_dir, kind="data tile", columns=MANIFEST_COLUMNS, layout=LAYOUT)
    if (out_dir / "manifest.csv").exists() and not (out_dir / SLIDE_JSON).exists():
        raise InputError(f"holds a manifest.csv without {SLIDE_JSON}, not written by `histosynth data tile`; "
                         "choose an empty or new --out", out_dir)


def slide_json(name: str, reader: SlideReader, tiling: dict[str, Any], tissue: TissueMask) -> dict[str, Any]:
    """Contents of ``slide.json``: allow-listed slide facts, tiling settings, tissue threshold."""
    return {
        "slide": {"name": name, **reader.facts()},
        "tiling": tiling,
        "tissue": {
            "method": "Otsu threshold on HSV saturation of a thumbnail; fractions measured on the thumbnail mask",
            "threshold": round(tissue.threshold, 6),
            "floor": SATURATION_FLOOR,
            "mask_downsample": [round(d, 6) for d in tissue.downsample],
            "slide_tissue_fraction": round(tissue.tissue_fraction, 6),
        },
    }


def check_resumable(path: Path, facts: dict[str, Any]) -> None:
    """Refuse an ``out_dir`` cut from another slide or with other geometry."""
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
        same_slide = before["slide"] == facts["slide"]
        same_tiling = all(before["tiling"][k] == facts["tiling"][k] for k in GEOMETRY_KEYS)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"unreadable slide.json from an earlier run ({error}); use another --out", path) from None
    if not same_slide:
        raise InputError("this folder holds tiles of another slide; use another --out", path.parent)
    if not same_tiling:
        old = ", ".join(f"{k}={before['tiling'][k]}" for k in GEOMETRY_KEYS)
        raise InputError(f"this folder holds tiles cut with other options ({old}); use another --out", path.parent)


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Write the manifest CSV atomically."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
