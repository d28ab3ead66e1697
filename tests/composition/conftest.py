"""Fixtures of the composition tests (helpers live in ``composition_data``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from composition_data import Synthetic, write_synthetic


@pytest.fixture
def synthetic(tmp_path: Path) -> Synthetic:
    """Three sections (two patients) of 42 coloured spots each, with a spots.csv manifest."""
    return write_synthetic(tmp_path / "data")
