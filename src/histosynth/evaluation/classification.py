"""A small CNN tile classifier (the histology encoder's backbone + a linear head) for downstream tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from histosynth.evaluation.segmentation import colour_jitter, keep_best
from histosynth.models.conditioning import dihedral
from histosynth.models.histology_encoder import HistologyCNN, HistologyEncoderConfig


class ClassifierTrainConfig(BaseModel):
    size: int = Field(96, ge=16)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    steps: int = Field(600, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0
    jitter: float = Field(0.1, ge=0, lt=1)  # colour jitter strength, as the segmenter's (0: flips and rotations only)


class TileClassifier(nn.Module):
    def __init__(self, num_classes: int, config: ClassifierTrainConfig) -> None:
        super().__init__()
        self.backbone = HistologyCNN(HistologyEncoderConfig(widths=config.widths, input_size=config.size))
        self.head = nn.Linear(config.widths[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # images in [0, 1]
        return self.head(self.backbone(images))


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, config: ClassifierTrainConfig | None = None,
    select: Callable[[TileClassifier], float] | None = None, select_every: int = 100, augment: bool = True,
    device: str | torch.device = "cpu",
) -> TileClassifier:
    """Train on uint8 images (N,3,H,W) and label ids (N,) with class-balanced sampling.

    Augmentation (``augment``): a random dihedral symmetry (flips, quarter turns) per tile and mild
    colour jitter (``config.jitter``); ``augment=False`` trains on the tiles as they are. Without
    ``select`` the weights after the last step are returned (cosine decay to zero: no checkpoint pick).
    """
    config = config or ClassifierTrainConfig()
    x_all = F.interpolate(images.float().div(255), size=(config.size, config.size), mode="bilinear", antialias=True)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).float()
    weights = (1.0 / counts)[labels]
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = TileClassifier(num_classes, config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    best = None
    model.train()
    for step in range(1, config.steps + 1):
        index = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
        x = x_all[index]
        if augment:
            ks = torch.randint(0, 8, (config.batch_size,), generator=generator)
            x = colour_jitter(torch.stack([dihedral(tile, int(k)) for tile, k in zip(x, ks)]), generator, config.jitter)
        loss = F.cross_entropy(model(x.to(device)), labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if select is not None and (step % select_every == 0 or step == config.steps):
            best = keep_best(model, select, best)
    if best is not None:
        model.load_state_dict(best[1])
    return model.eval()


@torch.inference_mode()
def predict_logits(model: TileClassifier, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Class logits (N, classes), on the CPU, for uint8 images (N,3,H,W)."""
    size = model.backbone.config.input_size
    device = next(model.parameters()).device
    out = [torch.zeros((0, model.head.out_features))]
    for start in range(0, len(images), batch_size):
        x = F.interpolate(images[start:start + batch_size].float().div(255), size=(size, size), mode="bilinear",
                          antialias=True)
        out.append(model(x.to(device)).float().cpu())
    return torch.cat(out)


def predict_labels(model: TileClassifier, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    return predict_logits(model, images, batch_size).argmax(1).numpy()


def balanced_accuracy(predicted: np.ndarray, target: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``target``."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # predictions of classes absent from target are expected
        return float(balanced_accuracy_score(target, predicted))


def recall_per_class(predicted: np.ndarray, target: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Recall of each class present in ``target``, by class name (``labels[id]``)."""
    return {labels[c]: float((predicted[target == c] == c).mean()) for c in sorted(set(target.tolist()))}
