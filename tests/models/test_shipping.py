"""Shipping a model folder with float16 weight storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from histosynth.errors import ModelFolderError
from histosynth.io import file_digest
from histosynth.models.folder import copy_model_half_precision
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from tiny_models import TILE


def test_half_precision_copy_halves_weights_and_samples_the_same_tiles(tiny_model_dir: Path, tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    (tiny_model_dir / "runs").mkdir()
    (tiny_model_dir / "runs" / "big.bin").write_bytes(b"x" * 100)
    rewritten = copy_model_half_precision(tiny_model_dir, shipped)

    assert len(rewritten) == 2 and not (shipped / "runs").exists()
    for path in rewritten:
        original = tiny_model_dir / path.relative_to(shipped)
        assert path.stat().st_size < 0.6 * original.stat().st_size
        assert {str(v.dtype) for v in load_file(str(path)).values()} == {"torch.float16"}
        facts = json.loads((path.parent / "histosynth.json").read_text())
        assert facts["float16_of"] == {"weights_sha256": file_digest(original)}  # what it was made from

    settings = SamplingSettings(steps=4, guidance=2.0)
    mask = np.zeros((TILE, TILE), dtype=np.uint8)
    mask[8:20, 4:28] = 1
    full = TileSampler(LatentDiffusionModel.load(tiny_model_dir), settings).sample([1], [mask], [7])
    half = TileSampler(LatentDiffusionModel.load(shipped), settings).sample([1], [mask], [7])
    assert half.dtype == full.dtype and half.shape == full.shape
    assert np.abs(half.astype(int) - full.astype(int)).mean() < 2.0


def test_half_precision_copy_of_a_missing_folder_fails_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="model folder not found"):
        copy_model_half_precision(tmp_path / "nope", tmp_path / "out")


def test_half_precision_copy_keeps_the_run_record_but_not_the_checkpoints(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tiny_model_dir / "runs" / "denoiser"
    (run / "checkpoints" / "step_0000002").mkdir(parents=True)
    (run / "checkpoints" / "step_0000002" / "state.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"objective": {"condition_dropout": 1.0}}))
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    copy_model_half_precision(tiny_model_dir, tmp_path / "kept", keep_run_record=True)
    kept = tmp_path / "kept" / "runs"
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "denoiser/metrics.jsonl", "denoiser/run.json"]
    assert json.loads((kept / "denoiser" / "run.json").read_text())["objective"]["condition_dropout"] == 1.0
    copy_model_half_precision(tiny_model_dir, tmp_path / "plain")
    assert not (tmp_path / "plain" / "runs").exists()
