"""Leave-one-group-out cross-validation of the composition models, resumable fold by fold.

A group is a section or a patient (sections of one patient are serial sections of one tumour, so
leave-one-section-out lets the model see the held-out tumour). Scores are computed per held-out
*section* (per-type Pearson r and Spearman rho across its spots) and averaged over sections; a type
constant within a section has no r there and is skipped for that section.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.composition.models import RegressorSettings, fit_model, neighbour_matrix, predict_model
from histosynth.errors import InputError
from histosynth.io import atomic_path

#: A type "is predicted" when its mean Pearson r over held-out sections exceeds this.
R_THRESHOLD = 0.3


@dataclass(frozen=True)
class Fold:
    """One held-out group: spot indices to fit on and to predict."""

    name: str
    train: np.ndarray
    test: np.ndarray


def leave_one_group_out(groups: np.ndarray, by: str = "section") -> list[Fold]:
    """One fold per group (sorted); no spot of the held-out group is ever in its training set."""
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        raise InputError(f"leave-one-{by}-out needs at least 2 {by}s, found {len(names)} ({', '.join(names)})")
    folds = []
    for name in names:
        test = np.flatnonzero(groups == name)
        train = np.flatnonzero(groups != name)
        folds.append(Fold(name, train, test))
    return folds


def _rank(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=0)


#: A true column whose spread is below this fraction of the type's largest value counts as constant
#: (e.g. Stereoscope's ~1e-9 floor for an absent type: its r would be a correlation with noise).
CONSTANT_TOLERANCE = 1e-6


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=0) / np.where(denom > 0, denom, 1.0), np.nan)


def correlations(truth: np.ndarray, pred: np.ndarray, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column Pearson r and Spearman rho across rows; NaN where a column is constant.

    A true column is constant when its standard deviation is below ``CONSTANT_TOLERANCE`` times
    ``scale`` (per column; default its own largest absolute value).
    """
    scale = np.abs(truth).max(axis=0) if scale is None else np.asarray(scale, dtype=np.float64)
    constant = truth.std(axis=0) <= CONSTANT_TOLERANCE * np.maximum(scale, 1e-300)
    r, rho = _pearson(truth, pred), _pearson(_rank(truth), _rank(pred))
    return np.where(constant, np.nan, r), np.where(constant, np.nan, rho)


@dataclass
class Evaluation:
    """Out-of-fold predictions of every model, scores per section and type, and fit times."""

    by: str
    target_names: list[str]
    sections: list[str]
    predictions: dict[str, np.ndarray]
    pearson: dict[str, np.ndarray]  # model -> (sections, types)
    spearman: dict[str, np.ndarray]
    fit_seconds: dict[str, list[float]]
    folds: list[str] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        """One row per model: mean r / rho over types, share of types with r > 0.3, fit seconds."""
        rows = []
        for model in self.predictions:
            r_type, rho_type = _nanmean(self.pearson[model]), _nanmean(self.spearman[model])
            rows.append({"model": model, "mean_pearson": float(np.nanmean(r_type)),
                         "mean_spearman": float(np.nanmean(rho_type)),
                         "frac_types_r_gt_0.3": float(np.mean(np.nan_to_num(r_type, nan=-1.0) > R_THRESHOLD)),
                         "fit_seconds_mean": float(np.mean(self.fit_seconds[model])),
                         "fit_seconds_total": float(np.sum(self.fit_seconds[model]))})
        return rows

    def per_type(self) -> list[dict[str, Any]]:
        """One row per (model, type): Pearson r and Spearman rho averaged over held-out sections."""
        rows = []
        for model in self.predictions:
            r_type, rho_type = _nanmean(self.pearson[model]), _nanmean(self.spearman[model])
            rows += [{"model": model, "type": name, "pearson": _num(r), "spearman": _num(rho)}
                     for name, r, rho in zip(self.target_names, r_type, rho_type)]
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"cv": f"leave-one-{self.by}-out", "folds": self.folds, "sections": self.sections,
                "types": self.target_names, "summary": self.summary(), "per_type": self.per_type(),
                "per_section": {m: {s: [_num(v) for v in row] for s, row in zip(self.sections, self.pearson[m])}
                                for m in self.predictions},
                "fit_seconds": self.fit_seconds}


def _nanmean(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(matrix, axis=0)


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def _fold_key(features: np.ndarray, targets: np.ndarray, kind: str, settings: RegressorSettings, normalised: bool,
              fold: Fold, coords: np.ndarray | None) -> str:
    digest = hashlib.sha256(json.dumps([kind, settings.model_dump(mode="json"), normalised, fold.name]).encode())
    for array in (features, targets, fold.test, coords if coords is not None else np.zeros(0)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _fold_result(path: Path, compute: Callable[[], tuple[np.ndarray, float]]) -> tuple[np.ndarray, float]:
    """Load a finished fold, or compute and save it atomically."""
    if path.is_file():
        with np.load(path) as data:
            return data["pred"], float(data["seconds"])
    pred, seconds = compute()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, pred=pred, seconds=np.float64(seconds))
    return pred, seconds


def cross_validate(features: np.ndarray, targets: np.ndarray, sections: np.ndarray, groups: np.ndarray,
                   coords: np.ndarray | None, kinds: list[str], settings: RegressorSettings, normalised: bool,
                   target_names: list[str], by: str = "section", work_dir: str | Path | None = None,
                   on_fold: Callable[[str, str], None] | None = None) -> Evaluation:
    """Fit each model on all groups but one, predict the held-out group, for every group.

    With ``work_dir``, each (model, fold) result is kept in ``work_dir/folds/`` under a key of the
    data and settings, so an interrupted run resumes and a changed run never reuses stale folds.
    """
    folds = leave_one_group_out(groups, by)
    neighbours = neighbour_matrix(coords, sections, settings.neighbour_radius) if coords is not None else None
    if "neighbourhood" in kinds and neighbours is None:
        raise InputError("the neighbourhood model needs spot coordinates; drop it with --models mlp,ridge")
    folder = Path(work_dir) / "folds" if work_dir is not None else None
    predictions = {k: np.full(targets.shape, np.nan) for k in kinds}
    seconds: dict[str, list[float]] = {k: [] for k in kinds}
    for fold in folds:
        assert not set(groups[fold.train].tolist()) & set(groups[fold.test].tolist()), "fold leaks its group"
        for kind in kinds:
            def compute(kind: str = kind, fold: Fold = fold) -> tuple[np.ndarray, float]:
                sub = neighbours[fold.train][:, fold.train] if neighbours is not None else None
                if sub is not None:  # renormalise rows: test spots are never neighbours of training spots
                    sub = _row_normalise(sub)
                model, fit_s = fit_model(kind, features[fold.train], targets[fold.train], sub, settings, normalised)
                test_nb = _row_normalise(neighbours[fold.test][:, fold.test]) if neighbours is not None else None
                return predict_model(kind, model, features[fold.test], test_nb), fit_s

            if folder is None:
                pred, fit_s = compute()
            else:
                key = _fold_key(features, targets, kind, settings, normalised, fold, coords)
                safe = re.sub(r"[^A-Za-z0-9._-]", "_", fold.name)
                pred, fit_s = _fold_result(folder / f"{kind}_{safe}_{key}.npz", compute)
            predictions[kind][fold.test] = pred
            seconds[kind].append(fit_s)
            if on_fold is not None:
                on_fold(kind, fold.name)
    section_names = sorted(set(sections.tolist()))
    pearson, spearman = {}, {}
    scale = np.abs(targets).max(axis=0)
    for kind in kinds:
        scores = [correlations(targets[sections == s], predictions[kind][sections == s], scale)
                  for s in section_names]
        pearson[kind] = np.array([s[0] for s in scores])
        spearman[kind] = np.array([s[1] for s in scores])
    return Evaluation(by, list(target_names), section_names, predictions, pearson, spearman, seconds,
                      [f.name for f in folds])


def _row_normalise(matrix: Any) -> Any:
    """Rows of a sub-adjacency rescaled to sum 1 (a row left empty gets its own spot)."""
    from scipy.sparse import csr_matrix, identity

    matrix = csr_matrix(matrix)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    empty = sums <= 0
    if empty.any():
        matrix = matrix + identity(matrix.shape[0], format="csr").multiply(empty[:, None].astype(float))
        sums = np.asarray(matrix.sum(axis=1)).ravel()
    return csr_matrix(matrix.multiply(1.0 / sums[:, None]))
