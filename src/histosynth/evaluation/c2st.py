"""Classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017): can a small CNN tell real tiles from synthetic ones?

Feature-space distances (FID, KID, precision/recall) only see what one encoder sees; an encoder that
ignores colour saturation or blur scores obviously fake tiles close to real. A classifier trained on
the pixels themselves has no such blind spot, and its held-out accuracy has an exact null
distribution: if the two sets come from one distribution, no classifier beats a coin on tiles it
has not seen, so the number of correct held-out calls is Binomial(n, 0.5).

Procedure (deterministic given ``config.seed``):

1. Balance: the larger set is subsampled (seeded) to the smaller set's count, and both to at most
   ``config.max_per_side`` tiles.
2. Split each side 50/50 (seeded) into train and held-out. One split rather than k-fold: every
   held-out call then comes from one classifier that never saw any held-out tile, so the calls are
   independent given that classifier and the binomial test is exact (Wilson interval: close); k-fold
   would double or more the CPU time and its pooled calls share training data across folds.
   With 50/50 and balanced sides, held-out accuracy equals balanced accuracy.
3. Downsize every tile to ``config.size`` px (antialiased), train a four-layer CNN with global
   average pooling for ``config.steps`` AdamW steps on class-balanced batches with random flips and
   quarter turns (the 8 symmetries of the square; tissue has no orientation).
4. Report held-out accuracy, a 95% Wilson interval, and the exact one-sided binomial p-value of
   "accuracy > 0.5". Accuracy near 0.5 means indistinguishable to this classifier; near 1 means
   trivially told apart. Accuracy below 0.5 is chance (nothing is ever learnt "backwards").

Cost: the network is small (stride-2 convolutions, widths 16-32-64-64) and the step count fixed,
so the time hardly depends on the number of tiles; ``docs/architecture.md`` notes the measured time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from histosynth.errors import InputError

StepCallback = Callable[[int, int], None]  # (step, total steps)

#: Fewer tiles than this per side (after balancing) leave too few held-out calls to mean anything.
MIN_PER_SIDE = 10


class C2STConfig(BaseModel):
    """Settings of :func:`classifier_two_sample_test`; the defaults take well under a minute on one CPU thread."""

    size: int = Field(64, ge=16, le=512, description="Tiles are downsized to size x size px.")
    steps: int = Field(300, ge=1, description="AdamW steps (batches) of classifier training.")
    batch_size: int = Field(32, ge=2, description="Tiles per batch, half real and half synthetic.")
    lr: float = Field(2e-3, gt=0)
    widths: tuple[int, int, int, int] = (16, 32, 64, 64)
    max_per_side: int = Field(1000, ge=MIN_PER_SIDE, description="At most this many tiles per side are used.")
    seed: int = 0


@dataclass
class C2STResult:
    accuracy: float  # held-out accuracy, real and synthetic calls pooled (balanced, so = balanced accuracy)
    ci_low: float  # 95% Wilson interval of the accuracy
    ci_high: float
    p_value: float  # exact one-sided binomial test of accuracy > 0.5
    n_heldout: int  # held-out tiles, both sides together
    n_correct: int
    n_train: int  # training tiles, both sides together
    real_accuracy: float  # held-out real tiles called real
    synthetic_accuracy: float  # held-out synthetic tiles called synthetic
    n_real_available: int
    n_synthetic_available: int
    size: int
    steps: int
    seed: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


class C2STNet(nn.Module):
    """Four 3x3 convolutions (three of stride 2) + ReLU, global average pooling, one logit.

    No normalisation layers, on purpose: per-tile normalisation (GroupNorm, InstanceNorm) erases a
    tile's overall colour and contrast, exactly the artefacts (washed-out or over-saturated stain)
    the test must see, and BatchNorm's running statistics lag after a few steps (measured: both
    missed contrast-halved tiles that this plain network separates perfectly in 20 steps).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64)) -> None:
        super().__init__()
        layers, previous = [], 3
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(previous, width, 3, stride=2 if i < 3 else 1, padding=1), nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x in [-1, 1], (N, 3, H, W) -> (N,) logits
        return self.head(self.features(x).mean((2, 3))).squeeze(1)


def _as_nchw(tiles, name: str) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (N, 3, H, W), numpy or torch -> uint8 torch (N, 3, H, W)."""
    x = torch.as_tensor(np.asarray(tiles) if not isinstance(tiles, torch.Tensor) else tiles)
    if x.dtype != torch.uint8:
        raise InputError(f"C2ST {name} tiles must be uint8 RGB, got {x.dtype}")
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise InputError(f"C2ST {name} tiles must be (N, H, W, 3) or (N, 3, H, W), got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2) if x.shape[-1] == 3 else x


def _downsize(x: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float (N, 3, size, size) in [-1, 1], antialiased, in chunks to bound memory."""
    out = []
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].float().div(127.5).sub(1.0)
        if part.shape[-2:] != (size, size):
            part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(part)
    return torch.cat(out) if out else torch.zeros(0, 3, size, size)


def _flips(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Apply symmetry ``ks[i]`` (k % 4 quarter turns, then a flip if k >= 4) to ``x[i]``."""
    out = x.clone()
    for k in range(8):
        chosen = (ks == k).nonzero().squeeze(1)
        if len(chosen):
            y = torch.rot90(x[chosen], k % 4, dims=(-2, -1))
            out[chosen] = torch.flip(y, dims=(-1,)) if k >= 4 else y
    return out


def require_tiles(n_real: int, n_synthetic: int) -> None:
    """One-line :class:`InputError` unless both sides have at least ``MIN_PER_SIDE`` tiles."""
    if min(n_real, n_synthetic) < MIN_PER_SIDE:
        raise InputError(f"C2ST needs at least {MIN_PER_SIDE} tiles per side, got {n_real} real and "
                         f"{n_synthetic} synthetic (skip it with --no-c2st)")


def binomial_summary(correct: int, n: int) -> tuple[float, float, float, float]:
    """(accuracy, 95% Wilson low, high, exact one-sided p-value of accuracy > 0.5) for ``correct`` of ``n``."""
    from scipy.stats import binomtest

    interval = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    p_value = binomtest(correct, n, 0.5, alternative="greater").pvalue
    return correct / n, float(interval.low), float(interval.high), float(p_value)


def classifier_two_sample_test(
    real, synthetic, config: C2STConfig | None = None, on_step: StepCallback | None = None, device: str = "cpu",
) -> C2STResult:
    """Train a small CNN to tell ``real`` from ``synthetic`` tiles and test its held-out accuracy against 0.5.

    ``real`` and ``synthetic`` are uint8 RGB tiles, (N, H, W, 3) or (N, 3, H, W), numpy or torch; the
    two sets may differ in count and tile size. ``on_step(step, steps)`` is called after each training
    step. Raises :class:`InputError` (one line) for bad arrays or fewer than 10 tiles on either side.
    """
    config = config or C2STConfig()
    started = time.perf_counter()
    real_x, synth_x = _as_nchw(real, "real"), _as_nchw(synthetic, "synthetic")
    require_tiles(len(real_x), len(synth_x))
    n_side = min(len(real_x), len(synth_x), config.max_per_side)
    rng = np.random.default_rng(config.seed)
    n_train = n_side // 2
    sides = []
    for x in (real_x, synth_x):  # seeded subsample to n_side, then a seeded 50/50 split
        order = rng.permutation(len(x))[:n_side]
        sides.append((_downsize(x[np.sort(order[:n_train])], config.size),
                      _downsize(x[np.sort(order[n_train:])], config.size)))
    (real_train, real_held), (synth_train, synth_held) = sides

    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = C2STNet(config.widths).to(dev)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    half = config.batch_size // 2
    target = torch.cat([torch.zeros(half), torch.ones(half)]).to(dev)  # 0 = real, 1 = synthetic
    model.train()
    for step in range(1, config.steps + 1):
        picks = [torch.randint(0, n_train, (half,), generator=generator) for _ in range(2)]
        x = torch.cat([real_train[picks[0]], synth_train[picks[1]]])
        x = _flips(x, torch.randint(0, 8, (len(x),), generator=generator)).to(dev)
        loss = F.binary_cross_entropy_with_logits(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, config.steps)

    model.eval()
    with torch.inference_mode():
        calls = [torch.cat([model(held[s:s + 256].to(dev)).cpu() > 0 for s in range(0, len(held), 256)])
                 for held in (real_held, synth_held)]
    real_ok, synth_ok = int((~calls[0]).sum()), int(calls[1].sum())
    n_held = len(real_held) + len(synth_held)
    accuracy, low, high, p_value = binomial_summary(real_ok + synth_ok, n_held)
    return C2STResult(
        accuracy=accuracy, ci_low=low, ci_high=high, p_value=p_value, n_heldout=n_held, n_correct=real_ok + synth_ok,
        n_train=2 * n_train, real_accuracy=real_ok / len(real_held), synthetic_accuracy=synth_ok / len(synth_held),
        n_real_available=len(real_x), n_synthetic_available=len(synth_x), size=config.size, steps=config.steps,
        seed=config.seed, seconds=round(time.perf_counter() - started, 2),
    )
