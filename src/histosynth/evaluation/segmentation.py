"""A small U-Net segmenter: the yardstick for mask adherence and downstream utility.

Recipe (``shared/design/BASELINES.md``): 4 levels, base 16 channels, BatchNorm (~0.48M
parameters); inputs resized to ``size`` px (bilinear, antialiased; masks nearest); dihedral
flips/rot90 + mild colour jitter; BCE + soft Dice (binary) or CE + soft Dice (multi-class); Adam
with cosine decay over a fixed step budget (no checkpoint picking, so no validation split needed).
Training is deterministic for a seed: batches and augmentations draw from a private
``torch.Generator`` and weights are initialised under a forked global RNG, left as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from histosynth.models.conditioning import dihedral

ArrayLike = torch.Tensor | np.ndarray


class SegmentationTrainConfig(BaseModel):
    """Settings of :func:`train_segmenter` (defaults: the BASELINES recipe)."""

    size: int = Field(112, ge=8, multiple_of=8)  # the U-Net pools three times
    steps: int = Field(600, ge=1)
    batch_size: int = Field(16, ge=2)  # BatchNorm needs more than one tile
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    num_classes: int = Field(2, ge=2)  # 2: one logit + BCE; more: one logit per class + CE
    base_channels: int = Field(16, ge=1)
    jitter: float = Field(0.1, ge=0, lt=1)  # colour jitter strength (brightness, contrast; half per channel)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class SegmentationUNet(nn.Module):
    """U-Net with ``levels`` resolutions; input side must be divisible by ``2 ** (levels - 1)``.

    Takes images in [-1, 1]; returns logits (N,1,H,W) for two classes, else (N,C,H,W).
    """

    def __init__(self, num_classes: int = 2, base_channels: int = 16, levels: int = 4) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(levels)]
        self.num_classes = num_classes
        self.encoders = nn.ModuleList(_block(cin, cout) for cin, cout in zip([3, *widths[:-1]], widths))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(levels - 1))
        self.decoders = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in range(levels - 1))
        self.head = nn.Conv2d(base_channels, 1 if num_classes == 2 else num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, decoder in zip(reversed(self.ups), reversed(self.decoders)):
            x = decoder(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def resize_images(images: torch.Tensor, size: int, chunk: int = 64) -> torch.Tensor:
    """uint8 (N,3,H,W) -> uint8 (N,3,size,size), bilinear with antialiasing, in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        x = F.interpolate(images[start:start + chunk].float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        out[start:start + chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Class-id masks (N,H,W) -> (N,size,size), nearest neighbour."""
    if masks.shape[-2:] == (size, size):
        return masks
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].to(masks.dtype)


def colour_jitter(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Mild per-tile contrast, brightness and per-channel (stain balance, half strength) jitter of [0, 1] images."""
    if strength <= 0:
        return x

    def factor(*shape: int, scale: float = strength) -> torch.Tensor:
        return 1 + scale * (2 * torch.rand(shape, generator=generator) - 1)

    n = len(x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(n, 1, 1, 1) + mean  # contrast
    return (x * factor(n, 1, 1, 1) * factor(n, 3, 1, 1, scale=strength / 2)).clamp(0, 1)  # brightness, stain


def _augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator,
             jitter: float, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random dihedral symmetry per tile + colour jitter (none without ``augment``); images in [-1, 1], long masks."""
    if not augment:
        return images.float() / 127.5 - 1, masks.long()
    ks = torch.randint(8, (len(images),), generator=generator).tolist()
    x = torch.stack([dihedral(image, k) for image, k in zip(images, ks)]).float() / 255
    y = torch.stack([dihedral(mask, k) for mask, k in zip(masks, ks)]).long()
    return colour_jitter(x, generator, jitter) * 2 - 1, y


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice for one logit channel; CE + mean soft Dice of the non-background classes otherwise."""
    if logits.shape[1] == 1:
        t = target[:, None].float()
        p = logits.sigmoid()
        dice = (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        return F.binary_cross_entropy_with_logits(logits, t) + 1 - dice
    p = logits.softmax(dim=1)[:, 1:]
    t = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    dice = (2 * (p * t).sum(dim=(0, 2, 3)) + 1) / (p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3)) + 1)
    return F.cross_entropy(logits, target) + 1 - dice.mean()


def train_segmenter(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: SegmentationTrainConfig | None = None,
    on_step: Callable[[int, float], None] | None = None,
    device: str | torch.device = "cpu",
    select: Callable[[SegmentationUNet], float] | None = None,
    select_every: int = 100,
    augment: bool = True,
) -> SegmentationUNet:
    """Train a U-Net on uint8 images (N,3,H,W) and class-id masks (N,H,W); returns it in eval mode.

    ``on_step(step, loss)`` is called after every optimiser step (steps count from 1). With
    ``select`` (a validation score, higher is better), the model is scored every ``select_every``
    steps and at the end, and the best-scoring weights are returned (model selection on val).
    ``augment=False`` trains without flips, rotations and colour jitter (a plain baseline).
    """
    config = config or SegmentationTrainConfig()
    images, masks = torch.as_tensor(images), torch.as_tensor(masks)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N,3,H,W), got {tuple(images.shape)} {images.dtype}")
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("no training tiles")
    if int(masks.max()) >= config.num_classes:
        raise ValueError(f"masks hold class id {int(masks.max())} but num_classes is {config.num_classes}")
    x_all, y_all = resize_images(images, config.size), resize_masks(masks, config.size)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SegmentationUNet(config.num_classes, config.base_channels)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    best: tuple[float, dict] | None = None
    for step in range(1, config.steps + 1):
        index = torch.randint(len(x_all), (config.batch_size,), generator=generator)
        x, y = _augment(x_all[index], y_all[index], generator, config.jitter, augment)
        loss = segmentation_loss(model(x.to(device)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, loss.item())
        if select is not None and (step % select_every == 0 or step == config.steps):
            best = keep_best(model, select, best)
    if select is not None:
        model.load_state_dict(best[1])
    return model.eval()


def keep_best(model: nn.Module, select: Callable, best: tuple[float, dict] | None) -> tuple[float, dict]:
    """Score ``model`` in eval mode; return (score, weights) of the better of it and ``best``."""
    import copy

    model.eval()
    score = float(select(model))
    model.train()
    if best is None or score > best[0]:
        return score, copy.deepcopy(model.state_dict())
    return best


def predict_masks(model: SegmentationUNet, images: torch.Tensor, size: int, batch_size: int = 32) -> torch.Tensor:
    """Class-id masks (uint8, N,H,W) for uint8 images (N,3,H,W), at the images' own resolution.

    Images are resized to ``size`` as in training; logits are resized back (bilinear) before the
    threshold (one logit: > 0) or arg-max.
    """
    return predict_masks_with_confidence(model, images, size, batch_size)[0]


@torch.inference_mode()
def predict_masks_with_confidence(model: SegmentationUNet, images: torch.Tensor, size: int, batch_size: int = 32,
                                  ) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`predict_masks`, and each mask's confidence: the mean over its pixels of the predicted class's
    probability (sigmoid or softmax), in [0.5, 1] for one logit."""
    images = torch.as_tensor(images)
    model.eval()
    device = next(model.parameters()).device
    n, _, height, width = images.shape
    out = torch.empty((n, height, width), dtype=torch.uint8)
    confidence = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch_size):
        x = resize_images(images[start:start + batch_size], size).float().div(127.5).sub(1)
        logits = model(x.to(device)).float()
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        if logits.shape[1] == 1:
            pred, chosen = logits[:, 0] > 0, torch.sigmoid(logits[:, 0].abs())
        else:
            chosen, pred = logits.softmax(dim=1).max(dim=1)
        out[start:start + batch_size] = pred.to(torch.uint8).cpu()
        confidence[start:start + len(x)] = chosen.flatten(1).mean(dim=1).cpu().numpy()
    return out, confidence


def dice_per_image(pred: ArrayLike, target: ArrayLike, foreground_class: int = 1) -> np.ndarray:
    """Dice of ``foreground_class`` per image: 2|P∩T| / (|P| + |T|) over (N,H,W) (or one H,W) masks.

    When both prediction and target hold no foreground the image scores 1.0 (they agree
    perfectly); when only one is empty it scores 0.0.
    """
    p = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred) == foreground_class
    t = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target) == foreground_class
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    if p.ndim == 2:
        p, t = p[None], t[None]
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    inter = (p & t).sum(axis=1)
    total = p.sum(axis=1) + t.sum(axis=1)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
