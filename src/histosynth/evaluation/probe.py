"""Linear probe of frozen embeddings: logistic regression fitted on train, C chosen on val, scored on test.

Features are standardised with the train split's mean and spread; classes are weighted by the inverse
of their train frequency (the score is balanced accuracy, so rare classes must count). The C with the
best val balanced accuracy wins (ties: the smaller C, i.e. the stronger regularisation); the model fitted
on train with that C is scored once on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from histosynth.errors import InputError

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class ProbeResult:
    """Balanced accuracies of the probe; ``val_scores`` maps each tried C to its val score."""

    c: float
    val_balanced_accuracy: float
    test_balanced_accuracy: float
    val_scores: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def check_features(
    features: np.ndarray, labels: Sequence[int] | np.ndarray, name: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``features`` as a finite (N, D) float array and ``labels`` as N non-negative ints, or a one-line error."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise InputError(f"{name} features must be a 2-D (tiles x dims) array, got shape {x.shape}")
    if len(x) == 0:
        raise InputError(f"{name} split has no tiles")
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{name} split has {len(x)} feature rows but {y.size} labels")
    if not np.isfinite(x).all():
        raise InputError(f"{name} features contain NaN or infinite values")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise InputError(f"{name} labels must be non-negative class ids (unlabelled tiles cannot be probed)")
    return x, y.astype(np.int64)


def linear_probe(
    train: tuple[np.ndarray, Sequence[int] | np.ndarray],
    val: tuple[np.ndarray, Sequence[int] | np.ndarray],
    test: tuple[np.ndarray, Sequence[int] | np.ndarray],
    cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 3000,
    balance_classes: bool = True,
) -> ProbeResult:
    """Fit a logistic-regression probe on ``train`` (features, labels) per C; pick C on ``val``; score ``test``.

    Deterministic (lbfgs). Raises :class:`InputError` on mismatched shapes, non-finite features, a
    train split with fewer than two classes, or feature dimensions that differ between splits.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = check_features(*train, "train")
    x_val, y_val = check_features(*val, "val")
    x_test, y_test = check_features(*test, "test")
    dims = {x.shape[1] for x in (x_train, x_val, x_test)}
    if len(dims) != 1:
        raise InputError(f"train/val/test features differ in dimension ({x_train.shape[1]}, {x_val.shape[1]}, "
                         f"{x_test.shape[1]})")
    if len(np.unique(y_train)) < 2:
        raise InputError("train split has fewer than two classes; nothing to probe")
    if not cs or any(c <= 0 for c in cs):
        raise InputError("probe C values must be a non-empty list of positive numbers")

    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (scaler.transform(x) for x in (x_train, x_val, x_test))
    best: tuple[float, float, object] | None = None
    scores: dict[str, float] = {}
    for c in sorted(cs):
        model = LogisticRegression(C=c, max_iter=max_iter, class_weight="balanced" if balance_classes else None)
        model.fit(x_train, y_train)
        score = float(balanced_accuracy_score(y_val, model.predict(x_val)))
        scores[f"{c:g}"] = score
        if best is None or score > best[1]:
            best = (c, score, model)
    c, val_score, model = best  # type: ignore[misc]
    test_score = float(balanced_accuracy_score(y_test, model.predict(x_test)))  # type: ignore[attr-defined]
    return ProbeResult(c, val_score, test_score, scores, len(x_train), len(x_val), len(x_test))
