"""Test helpers imported by test modules (``from testkit import ...``): tiny tile datasets written on
the fly, manifest rows, the shared-data folder and an in-process CLI runner.

They live here, not in ``conftest.py``: sub-folders have conftests of their own, and a module named
``conftest`` would resolve to whichever was imported last."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA_ENV = "HISTOSYNTH_SHARED_DATA"
MANIFEST_COLUMNS = ["id", "image", "mask", "label", "split"]


def shared_data_dir() -> Path:
    """``$HISTOSYNTH_SHARED_DATA``, else ``shared/data`` beside the repository folder."""
    override = os.environ.get(SHARED_DATA_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


def tile_colour(index: int) -> tuple[int, int, int]:
    """The solid RGB colour of tile ``index`` in :func:`write_tile_dataset` datasets."""
    return (10 * index % 256, (50 + 7 * index) % 256, (200 - 3 * index) % 256)


def read_rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(manifest: Path, rows: list[dict[str, str]], columns: Sequence[str] | None = None) -> None:
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row)) or MANIFEST_COLUMNS
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_tile_dataset(
    root: Path,
    n: int = 4,
    size: tuple[int, int] = (8, 6),
    labels: Sequence[str] = ("Normal", "Polyp"),
    splits: Sequence[str] = ("train", "val"),
    masks: bool = True,
    fg_rows: Sequence[int] | None = None,
    cases: Sequence[str] | None = None,
) -> Path:
    """Write ``n`` solid-colour PNG tiles (``tile_colour(i)``) of ``size`` = (width, height).

    Mask ``i`` is 255 on its first ``fg_rows[i]`` rows (default: half the rows) and 0 elsewhere.
    Labels and splits cycle through the given values (``""`` = empty cell); ``cases`` adds a
    ``case`` column. Returns the path of ``root/manifest.csv`` (paths in it are relative).
    """
    width, height = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        tile_id = f"tile_{i}"
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[...] = tile_colour(i)
        Image.fromarray(image).save(root / "images" / f"{tile_id}.png")
        row = {"id": tile_id, "image": f"images/{tile_id}.png", "mask": "", "label": "", "split": ""}
        if masks:
            mask = np.zeros((height, width), dtype=np.uint8)
            mask[: (fg_rows[i] if fg_rows is not None else height // 2)] = 255
            Image.fromarray(mask).save(root / "masks" / f"{tile_id}.png")
            row["mask"] = f"masks/{tile_id}.png"
        if labels:
            row["label"] = labels[i % len(labels)]
        if splits:
            row["split"] = splits[i % len(splits)]
        if cases is not None:
            row["case"] = cases[i % len(cases)]
        rows.append(row)
    manifest = root / "manifest.csv"
    write_rows(manifest, rows, MANIFEST_COLUMNS + (["case"] if cases is not None else []))
    return manifest


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``histosynth ARGS`` in-process: (exit code, stdout, stderr)."""
    from histosynth.cli.app import main

    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def kill_9_after_checkpoint(command: list[str], checkpoints: Path, step: int, env: dict[str, str],
                            timeout: float = 180) -> None:
    """Start ``command``, ``kill -9`` it once ``checkpoints`` holds step ``step`` (or later), and wait."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any(p.name >= f"step_{step:07d}" for p in checkpoints.iterdir()):
            break
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be killed; raise train.steps"
    process.send_signal(signal.SIGKILL)
    process.wait()


def case_records(n_cases: int = 40) -> list:
    """Train records of 3-tile cases (no files behind them): every fourth case Normal (the rare class), the rest
    Polyp; ``extra["case"]`` names the case."""
    from histosynth.data.manifest import TileRecord

    return [TileRecord(f"c{c}_t{t}", Path(f"c{c}_t{t}.png"), mask=Path("m.png"),
                       label="Normal" if c % 4 == 0 else "Polyp", split="train", extra={"case": f"c{c}"})
            for c in range(n_cases) for t in range(3)]
