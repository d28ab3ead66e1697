"""Gated-attention multiple-instance learning (ABMIL, Ilse et al. 2018) on frozen tile embeddings.

A bag is the set of one case's tiles, its label the case's class. Each tile embedding ``h_k`` is
standardised (train-tile statistics), mapped to ``e_k = ReLU(W h_k)``, scored by the gated attention
``s_k = w^T (tanh(V e_k) * sigmoid(U e_k))``, and the bag is ``z = sum_k a_k e_k`` with
``a = softmax(s)`` over the bag's tiles; a linear layer gives the class logits. Bags of different
sizes are padded and masked, so attention is exactly zero on padding and sums to 1 over real tiles.

Training is seeded and leaves the global torch RNG untouched; the epoch with the best val balanced
accuracy (ties: lower val loss) is kept and scored once on test bags.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from histosynth.errors import InputError


@dataclass
class Bag:
    """One bag: tile features (n, D), its class id, and a name (e.g. the case id) for reports."""

    features: np.ndarray
    label: int
    name: str = ""


class ABMILConfig(BaseModel):
    """Model size and optimisation; defaults suit a few hundred bags of a few hundred-d embeddings."""

    hidden: int = Field(64, ge=1)
    attention_dim: int = Field(32, ge=1)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    balance_classes: bool = True
    seed: int = 0


class GatedAttentionMIL(nn.Module):
    """(B, N, D) padded bags + (B, N) mask of real tiles -> logits (B, C) and attention (B, N)."""

    def __init__(self, in_dim: int, num_classes: int, config: ABMILConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.embed = nn.Sequential(nn.Linear(in_dim, config.hidden), nn.ReLU(), nn.Dropout(config.dropout))
        self.attention_v = nn.Linear(config.hidden, config.attention_dim)
        self.attention_u = nn.Linear(config.hidden, config.attention_dim)
        self.attention_w = nn.Linear(config.attention_dim, 1)
        self.classifier = nn.Linear(config.hidden, num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed((x - self.mean) / self.scale)
        scores = self.attention_w(torch.tanh(self.attention_v(e)) * torch.sigmoid(self.attention_u(e))).squeeze(-1)
        attention = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return self.classifier(torch.einsum("bn,bnd->bd", attention, e)), attention


@dataclass
class ABMILResult:
    """Balanced accuracies over bags; ``best_epoch`` is 1-based."""

    seed: int
    best_epoch: int
    val_balanced_accuracy: float
    test_balanced_accuracy: float
    n_train: int
    n_val: int
    n_test: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def make_bags(
    features: np.ndarray, labels: Sequence[int] | np.ndarray, groups: Sequence[Hashable],
    mixed: Literal["error", "split"] = "error",
) -> list[Bag]:
    """Group tile ``features`` into bags by ``groups`` (e.g. case ids), in order of first appearance.

    A group whose tiles carry different labels is an error, or with ``mixed="split"`` one bag per
    (group, label) pair, named ``group/label``.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y) or len(x) != len(groups):
        raise InputError(f"make_bags needs one label and one group per feature row "
                         f"(features {x.shape}, {len(y)} labels, {len(groups)} groups)")
    members: dict[Hashable, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    bags = []
    for group, rows in members.items():
        group_labels = sorted({int(y[i]) for i in rows})
        if len(group_labels) > 1 and mixed != "split":
            raise InputError(f"group {group!r} has tiles of several classes {group_labels}; "
                             "one label per bag is needed (or split mixed groups)")
        for label in group_labels:
            chosen = [i for i in rows if int(y[i]) == label]
            name = str(group) if len(group_labels) == 1 else f"{group}/{label}"
            bags.append(Bag(x[chosen], label, name))
    return bags


def _check_bags(bags: Sequence[Bag], name: str, dim: int | None, num_classes: int | None) -> int:
    if not bags:
        raise InputError(f"{name} split has no bags")
    for bag in bags:
        f = np.asarray(bag.features)
        if f.ndim != 2 or len(f) == 0:
            raise InputError(f"{name} bag {bag.name!r} must hold at least one tile as a 2-D array, got shape {f.shape}")
        if dim is not None and f.shape[1] != dim:
            raise InputError(f"{name} bag {bag.name!r} has {f.shape[1]}-d features, expected {dim}")
        dim = f.shape[1]
        if not np.isfinite(f).all():
            raise InputError(f"{name} bag {bag.name!r} has NaN or infinite features")
        if num_classes is not None and not 0 <= int(bag.label) < num_classes:
            raise InputError(f"{name} bag {bag.name!r} has label {bag.label}, outside 0..{num_classes - 1}")
    return int(dim)  # type: ignore[arg-type]


def _pad(bags: Sequence[Bag]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    longest = max(len(b.features) for b in bags)
    dim = np.asarray(bags[0].features).shape[1]
    x = torch.zeros(len(bags), longest, dim)
    mask = torch.zeros(len(bags), longest, dtype=torch.bool)
    for i, bag in enumerate(bags):
        n = len(bag.features)
        x[i, :n] = torch.as_tensor(np.asarray(bag.features), dtype=torch.float32)
        mask[i, :n] = True
    return x, mask, torch.tensor([int(b.label) for b in bags])


@torch.no_grad()
def predict_bags(
    model: GatedAttentionMIL, bags: Sequence[Bag], batch_size: int = 64,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities (n_bags, C) and each bag's attention weights over its own tiles."""
    model.eval()
    probabilities, attention = [], []
    for start in range(0, len(bags), batch_size):
        chunk = bags[start:start + batch_size]
        x, mask, _ = _pad(chunk)
        logits, weights = model(x, mask)
        probabilities.append(torch.softmax(logits, 1).numpy())
        attention += [weights[i, :len(b.features)].numpy() for i, b in enumerate(chunk)]
    return np.concatenate(probabilities), attention


def _evaluate(model: GatedAttentionMIL, bags: Sequence[Bag], weights: torch.Tensor) -> tuple[float, float]:
    from sklearn.metrics import balanced_accuracy_score

    probabilities, _ = predict_bags(model, bags)
    labels = np.array([int(b.label) for b in bags])
    loss = F.nll_loss(torch.log(torch.as_tensor(probabilities).clamp_min(1e-12)), torch.as_tensor(labels),
                      weight=weights)
    return float(balanced_accuracy_score(labels, probabilities.argmax(1))), float(loss)


def train_abmil(
    train: Sequence[Bag], val: Sequence[Bag], num_classes: int, config: ABMILConfig | None = None,
) -> tuple[GatedAttentionMIL, int, float]:
    """Train on ``train`` bags; return the model of the best val epoch, that epoch (1-based) and its score."""
    config = config or ABMILConfig()
    dim = _check_bags(train, "train", None, num_classes)
    _check_bags(val, "val", dim, num_classes)
    labels = np.array([int(b.label) for b in train])
    if len(np.unique(labels)) < 2:
        raise InputError("train split has bags of fewer than two classes; nothing to learn")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = torch.ones(num_classes)
    if config.balance_classes:
        present = counts > 0
        weights = torch.as_tensor(np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0),
                                  dtype=torch.float32)
    tiles = np.concatenate([np.asarray(b.features) for b in train])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = GatedAttentionMIL(dim, num_classes, config)
        model.mean.copy_(torch.as_tensor(tiles.mean(0), dtype=torch.float32))
        model.scale.copy_(torch.as_tensor(tiles.std(0), dtype=torch.float32).clamp_min(1e-6))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        order = np.random.default_rng(config.seed)
        best: tuple[float, float, int, dict] | None = None
        for epoch in range(1, config.epochs + 1):
            model.train()
            permutation = order.permutation(len(train))
            for start in range(0, len(train), config.batch_size):
                x, mask, y = _pad([train[i] for i in permutation[start:start + config.batch_size]])
                logits, _ = model(x, mask)
                loss = F.cross_entropy(logits, y, weight=weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            score, val_loss = _evaluate(model, val, weights)
            if best is None or (score, -val_loss) > (best[0], -best[1]):
                best = (score, val_loss, epoch, copy.deepcopy(model.state_dict()))
    score, _, epoch, state = best  # type: ignore[misc]
    model.load_state_dict(state)
    return model.eval(), epoch, score


def evaluate_abmil(
    train: Sequence[Bag], val: Sequence[Bag], test: Sequence[Bag], num_classes: int,
    config: ABMILConfig | None = None,
) -> ABMILResult:
    """Train (val for epoch selection) and report the balanced accuracy over ``test`` bags."""
    from sklearn.metrics import balanced_accuracy_score

    config = config or ABMILConfig()
    _check_bags(test, "test", _check_bags(train, "train", None, num_classes), num_classes)  # fail before training
    began = time.perf_counter()
    model, epoch, val_score = train_abmil(train, val, num_classes, config)
    probabilities, _ = predict_bags(model, test)
    labels = np.array([int(b.label) for b in test])
    test_score = float(balanced_accuracy_score(labels, probabilities.argmax(1)))
    return ABMILResult(config.seed, epoch, val_score, test_score, len(train), len(val), len(test),
                       round(time.perf_counter() - began, 2))
