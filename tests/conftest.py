"""Shared fixtures: tiny tile datasets written on the fly, and the shared EBHI-Seg manifest.

Plain helpers live in ``testkit.py`` (import them from there, not from ``conftest``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit import (  # noqa: F401  (re-exported for older imports inside this folder)
    MANIFEST_COLUMNS, SHARED_DATA_ENV, read_rows, run_cli, shared_data_dir, tile_colour, write_rows, write_tile_dataset,
)

@pytest.fixture
def make_tile_dataset() -> Callable[..., Path]:
    """``make_tile_dataset(tmp_path, n=4, size=(8, 6), labels=..., splits=..., ...)`` -> manifest path."""
    return write_tile_dataset


@pytest.fixture
def edit_manifest() -> Callable[[Path, Callable[[list[dict[str, str]]], object]], None]:
    """``edit_manifest(path, change)``: ``change(rows)`` edits the list of row dicts in place."""

    def edit(manifest: Path, change: Callable[[list[dict[str, str]]], object]) -> None:
        with open(manifest, newline="", encoding="utf-8") as handle:
            columns = list(csv.DictReader(handle).fieldnames or MANIFEST_COLUMNS)
        rows = read_rows(manifest)
        change(rows)
        write_rows(manifest, rows, columns)

    return edit


@pytest.fixture
def ebhi_manifest() -> Path:
    """The shared EBHI-Seg manifest, or skip when the shared data is not on this machine."""
    folder = shared_data_dir() / "ebhi-seg"
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"../shared/data/ebhi-seg not found: {manifest} (set {SHARED_DATA_ENV} to its parent)")
    return manifest


@pytest.fixture(name="tile_colour")
def tile_colour_fixture() -> Callable[[int], tuple[int, int, int]]:
    """The colour function used by ``make_tile_dataset``, for exact expectations."""
    return tile_colour


# Tiny random models and tiles for training/sampling tests (tests/ is on sys.path via this conftest).
from tiny_models import tiles, tiny_model_dir  # noqa: E402, F401
