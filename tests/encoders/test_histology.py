"""The self-supervised histology encoder: objective, training, folder round trip, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.encoders.histology import HistologyEncoder
from histosynth.errors import ModelFolderError
from histosynth.models.histology_encoder import ContrastiveModel, HistologyCNN, HistologyEncoderConfig
from histosynth.training.config import TrainConfig
from histosynth.training.contrastive import ContrastiveLossConfig, ContrastiveObjective, augment, nt_xent
from histosynth.training.loop import train

TINY = HistologyEncoderConfig(widths=(8, 16), input_size=32, projection_dim=16)


def _images(n: int = 16, size: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (n, 3, 6, 6), generator=g, dtype=torch.uint8)
    return torch.nn.functional.interpolate(coarse.float(), size=(size, size), mode="nearest").to(torch.uint8)


def test_nt_xent_is_low_for_matching_views_and_high_for_shuffled_ones() -> None:
    z = torch.nn.functional.normalize(torch.randn(32, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert nt_xent(z, z, 0.1) < 0.1
    assert nt_xent(z, z[torch.randperm(32, generator=torch.Generator().manual_seed(1))], 0.1) > 1.0


def test_augment_is_seeded_and_stays_in_range() -> None:
    images, settings = _images(4), ContrastiveLossConfig()
    a = augment(images, 32, settings, torch.Generator().manual_seed(3))
    b = augment(images, 32, settings, torch.Generator().manual_seed(3))
    c = augment(images, 32, settings, torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_contrastive_training_lowers_the_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ContrastiveModel(TINY)
    objective = ContrastiveObjective(_images(16), TINY.input_size, ContrastiveLossConfig(min_crop=0.8, jitter=0.05))
    fixed = torch.arange(16)

    def loss_now() -> float:
        model.eval()
        with torch.no_grad():
            value = float(objective.loss(model, fixed, torch.Generator().manual_seed(99), "cpu")[0])
        model.train()
        return value

    before = loss_now()
    config = TrainConfig(steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=0, checkpoint_every=40)
    train(model, objective, config, tmp_path / "run")
    assert loss_now() < before - 0.2


def test_folder_round_trip_and_feature_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = ContrastiveModel(TINY).backbone.eval()
    backbone.save(tmp_path / "enc", trained_on={"tiles": 16})
    loaded = HistologyCNN.load(tmp_path / "enc")
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(x), backbone(x))
    encoder = HistologyEncoder(folder=tmp_path / "enc")
    tiles = [np.full((48, 48, 3), v, dtype=np.uint8) for v in (10, 200, 10)]
    features = encoder.encode(tiles)
    assert features.shape == (3, 16) and np.allclose(features[0], features[2])
    assert encoder.identity.startswith("histology@")


def test_a_folder_of_another_kind_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelFolderError, match="kind 'denoiser'"):
        HistologyEncoder(folder=tiny_model_dir / "denoiser")
