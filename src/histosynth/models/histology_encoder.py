"""A small CNN histology encoder trained by self-supervision (SimCLR-style) on H&E tiles.

Tiles are resized to ``input_size`` and mapped to a ``width[-1]``-d feature by four stride-2 stages
and global average pooling. A projection head is used only in training and is not saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from histosynth.models.folder import FolderModel

KIND = "histology-encoder"
WEIGHTS_NAME = "encoder.safetensors"


class HistologyEncoderConfig(BaseModel):
    """Architecture of the histology encoder."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    input_size: int = Field(112, ge=16)
    projection_dim: int = Field(128, ge=8)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class HistologyCNN(FolderModel[HistologyEncoderConfig], nn.Module):
    """Backbone: images in [0, 1] (N,3,H,W) -> features (N, widths[-1]).

    Its folder (``save``/``load``): ``encoder.safetensors`` and ``histosynth.json`` (kind ``histology-encoder``).
    """

    kind = KIND
    weights_name = WEIGHTS_NAME
    config_type = HistologyEncoderConfig

    def __init__(self, config: HistologyEncoderConfig) -> None:
        super().__init__()
        self.config = config
        channels = (3, *config.widths)
        self.stages = nn.Sequential(*[_stage(a, b) for a, b in zip(channels[:-1], channels[1:])])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return self.stages((images - 0.5) / 0.25).mean(dim=(2, 3))


class ContrastiveModel(nn.Module):
    """Backbone + projection head, as trained; :attr:`backbone` is what ships."""

    def __init__(self, config: HistologyEncoderConfig) -> None:
        super().__init__()
        self.backbone = HistologyCNN(config)
        dim = config.feature_dim
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, config.projection_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=1)

