"""Tiny models and tile tensors for fast training and sampling tests (fixtures registered in conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.data.classes import ClassList
from histosynth.models.autoencoder import Autoencoder, AutoencoderConfig
from histosynth.models.denoiser import ConditionalDenoiser, DenoiserConfig
from histosynth.training.config import TrainConfig
from histosynth.training.tensors import TileTensors

TILE = 32
CLASSES = ClassList(labels=["Normal", "Polyp", "Adenocarcinoma"], mask_classes=["background", "gland"])


def tiny_autoencoder_config() -> AutoencoderConfig:
    return AutoencoderConfig(block_out_channels=(8, 8, 16), norm_num_groups=4, tile_size=TILE,
                             latent_shift=(0.0, 0.0, 0.0, 0.0))


def tiny_denoiser_config(mask_conditioning: str = "concat") -> DenoiserConfig:
    return DenoiserConfig(latent_size=TILE // 4, num_labels=len(CLASSES.labels), num_mask_classes=2,
                          mask_conditioning=mask_conditioning, block_out_channels=(16, 32),
                          attention_levels=(False, True), norm_num_groups=8, attention_head_dim=8)


def tiny_train_config(**overrides) -> TrainConfig:
    values = dict(steps=6, batch_size=4, learning_rate=1e-3, warmup_steps=1, checkpoint_every=2, log_every=1,
                  ema_decay=0.9)
    values.update(overrides)
    return TrainConfig(**values)


def make_tiles(n: int = 8, seed: int = 0) -> TileTensors:
    """Striped tiles whose stripe colour follows the label and whose mask marks the stripes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, TILE, TILE), np.uint8)
    masks = np.zeros((n, TILE, TILE), np.uint8)
    labels = np.arange(n) % len(CLASSES.labels)
    for i in range(n):
        period = 4 + 2 * labels[i]
        stripes = (np.arange(TILE) // period) % 2 == 0
        masks[i, stripes, :] = 1
        images[i] = rng.integers(180, 230, (3, TILE, TILE))
        images[i][:, stripes, :] = np.array([120, 40, 160])[:, None, None] - 30 * labels[i]
    return TileTensors(torch.from_numpy(images), torch.from_numpy(masks), torch.ones(n, dtype=torch.bool),
                       torch.from_numpy(labels).long(), [f"t{i}" for i in range(n)])


def save_tiny_mask_model(folder: Path, seed: int = 1) -> Path:
    """Add a random tiny ``mask_model/`` (8 x 8 cells of 4 px: one window covers a 32 px tile) to a model folder."""
    torch.manual_seed(seed)
    config = tiny_denoiser_config().model_copy(update={"mask_conditioning": "none", "latent_channels": 2})
    ConditionalDenoiser(config).eval().save(folder / "mask_model", labels=CLASSES.labels, role="mask", factor=4)
    return folder


@pytest.fixture
def tiles() -> TileTensors:
    return make_tiles()


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A model folder with randomly initialised tiny autoencoder and denoiser."""
    torch.manual_seed(0)
    folder = tmp_path / "model"
    Autoencoder(tiny_autoencoder_config()).save(folder / "autoencoder")
    ConditionalDenoiser(tiny_denoiser_config()).eval().save(folder / "denoiser", labels=CLASSES.labels)
    CLASSES.save(folder / "classes.json")
    return folder
