"""Shipping a model folder with float16 weight storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from histosynth.errors import ModelFolderError
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
