"""Tiny embedding denoisers and prototype classifiers for the generation tests, and their fixtures
(imported by the test modules: a conftest.py here would shadow tests/conftest.py's ``conftest`` module)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histosynth.models.autoencoder import Autoencoder
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.prototype_classifier import PrototypeClassifier, PrototypeClassifierConfig

from tiny_models import CLASSES, TILE, tiny_autoencoder_config, tiny_denoiser_config

PIXELS_DIM = 768  # the weight-free "pixels" registry encoder
PROTOTYPES = ["tiny/0", "tiny/1", "tiny/2"]


def like_denoiser_config(**overrides):
    values = {"embedding_dim": PIXELS_DIM, "embedding_encoder": "pixels", "embedding_hidden": 16, **overrides}
    return tiny_denoiser_config().model_copy(update=values)


def randomise_projection(model: ConditionalDenoiser, seed: int = 1) -> ConditionalDenoiser:
    """Give the zero-initialised last projection layer weights, as after training."""
    generator = torch.Generator().manual_seed(seed)
    last = model.embedding_proj[-1]
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 0.5)
        last.bias.copy_(torch.randn(last.bias.shape, generator=generator) * 0.1)
    return model


def tiny_classifier_config(**overrides) -> PrototypeClassifierConfig:
    values = {"latent_size": TILE // 4, "num_prototypes": len(PROTOTYPES), "widths": (8, 16), "norm_num_groups": 4,
              **overrides}
    return PrototypeClassifierConfig(**values)


@pytest.fixture
def like_model_dir(tmp_path: Path) -> Path:
    """A model folder whose denoiser is conditioned on 'pixels' embeddings (projection not zero)."""
    torch.manual_seed(0)
    folder = tmp_path / "like_model"
    Autoencoder(tiny_autoencoder_config()).save(folder / "autoencoder")
    denoiser = randomise_projection(ConditionalDenoiser(like_denoiser_config())).eval()
    denoiser.save(folder / "denoiser", labels=CLASSES.labels, embedding_encoder_identity="pixels@16px")
    CLASSES.save(folder / "classes.json")
    return folder


@pytest.fixture
def classifier_dir(tmp_path: Path) -> Path:
    """A randomly initialised tiny prototype classifier matching ``tiny_model_dir``'s latents."""
    torch.manual_seed(0)
    folder = tmp_path / "classifier"
    config = tiny_autoencoder_config()
    PrototypeClassifier(tiny_classifier_config(), PROTOTYPES).eval().save(
        folder, latent_scaling={"scaling_factor": config.scaling_factor, "latent_shift": list(config.latent_shift)})
    return folder
