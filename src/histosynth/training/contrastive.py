"""SimCLR-style objective for the histology encoder: two augmented views per tile, NT-Xent loss.

Augmentations suit H&E: random crops (40-100% of the tile side), the 8 square symmetries,
mild brightness/contrast/saturation jitter (stain and scanner variation) and Gaussian noise.
All randomness comes from the step's generator, so resume is exact like every histosynth run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from histosynth.models.conditioning import dihedral


class ContrastiveLossConfig(BaseModel):
    temperature: float = Field(0.2, gt=0)
    min_crop: float = Field(0.4, gt=0, le=1)  # crop side as a fraction of the tile side
    jitter: float = Field(0.15, ge=0, lt=1)  # brightness / contrast / saturation strength
    noise: float = Field(0.02, ge=0)


def augment(images: torch.Tensor, size: int, settings: ContrastiveLossConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view (N,3,size,size) in [0, 1] of uint8 tiles (N,3,H,W)."""
    n, _, height, width = images.shape
    sides = (torch.empty(n).uniform_(settings.min_crop, 1.0, generator=generator) * min(height, width)).long()
    views = []
    for image, side in zip(images, sides.tolist()):
        y = int(torch.randint(0, height - side + 1, (1,), generator=generator))
        x = int(torch.randint(0, width - side + 1, (1,), generator=generator))
        crop = image[:, y:y + side, x:x + side].float().div(255.0)[None]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        views.append(dihedral(crop, int(torch.randint(0, 8, (1,), generator=generator))))
    x = torch.stack(views)
    j = settings.jitter
    brightness = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * j
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * j
    saturation = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * j
    x = x * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * saturation + grey
    x = x + torch.randn(x.shape, generator=generator) * settings.noise
    return x.clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy over 2N views (each view's positive is its pair)."""
    z = torch.cat([z1, z2])
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


@dataclass
class ContrastiveObjective:
    images: torch.Tensor  # N,3,H,W uint8
    input_size: int
    settings: ContrastiveLossConfig

    def num_items(self) -> int:
        return len(self.images)

    def loss(self, model, indices, generator, device):
        batch = self.images[indices]
        v1 = augment(batch, self.input_size, self.settings, generator).to(device)
        v2 = augment(batch, self.input_size, self.settings, generator).to(device)
        z1, z2 = model(v1), model(v2)
        loss = nt_xent(z1.float(), z2.float(), self.settings.temperature)
        with torch.no_grad():
            accuracy = ((z1 @ z2.T).argmax(1) == torch.arange(len(z1), device=z1.device)).float().mean()
        return loss, {"pair_accuracy": float(accuracy)}
