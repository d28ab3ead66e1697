"""A small patch discriminator (PatchGAN) for adversarial fine-tuning of the autoencoder's decoder."""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field
from torch import nn


class PatchDiscriminatorConfig(BaseModel):
    """Width and depth of the patch discriminator; each output logit judges one receptive field."""

    base_channels: int = Field(32, ge=4)
    #: Stride-2 layers; 2 gives 22 px receptive fields per logit at full resolution (nuclei scale).
    downsampling_layers: int = Field(2, ge=1, le=5)
    norm_groups: int = Field(8, ge=1)


class PatchDiscriminator(nn.Module):
    """Conv(4, stride 2) stacks with GroupNorm and LeakyReLU ending in a map of real/fake logits.

    GroupNorm instead of the usual BatchNorm keeps the logits independent of batch composition,
    so the EMA copy and evaluation behave like training.
    """

    def __init__(self, config: PatchDiscriminatorConfig | None = None) -> None:
        super().__init__()
        config = config or PatchDiscriminatorConfig()
        width = config.base_channels
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        for _ in range(config.downsampling_layers - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1), nn.GroupNorm(config.norm_groups, width * 2), nn.LeakyReLU(0.2)]
            width *= 2
        layers += [nn.Conv2d(width, width * 2, 4, 1, 1), nn.GroupNorm(config.norm_groups, width * 2), nn.LeakyReLU(0.2),
                   nn.Conv2d(width * 2, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N,1,h,w) for images (N,3,H,W) in [-1, 1]."""
        return self.net(images)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: push real logits above 1 and fake ones below -1."""
    return 0.5 * (torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean())
