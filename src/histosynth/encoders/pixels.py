"""A weight-free baseline encoder: the tile area-downsampled to 16x16 RGB (768-d).

Fast and deterministic; useful as a sanity baseline for metrics and in tests. It sees colour and
coarse layout only, so it is no substitute for a learned encoder's judgement of tissue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from histosynth.encoders.base import FeatureEncoder


class PixelEncoder(FeatureEncoder):
    name = "pixels"

    def __init__(self, device: str | torch.device = "cpu", size: int = 16) -> None:
        super().__init__(device)
        self.size = size
        self.dim = 3 * size * size

    @property
    def identity(self) -> str:
        return f"{self.name}@{self.size}px"

    def encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images, size=(self.size, self.size), mode="area").flatten(1)
