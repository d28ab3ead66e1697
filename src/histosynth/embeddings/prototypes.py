"""Morphological prototypes: per-group k-means on embeddings, k chosen at the elbow of the WCSS curve.

For each group (e.g. each diagnostic label) k-means (scikit-learn) is fitted for k = 1..k_max on a
uniform random subsample of the group's tiles; k is the elbow of the within-cluster sum of squares
(the point of the normalised log-WCSS curve farthest below the chord from its first to its last point,
i.e. "Kneedle" on a log scale). Every tile of the group is then assigned to its nearest prototype.
Prototypes are numbered globally, groups in sorted order and, within a group, by cluster size (largest
first); their names are ``"<group>/<k>"``.

The prototypes file (``prototypes.h5ad``) is the contract for downstream prototype guidance: ``obs``
columns ``tile``, ``prototype`` (name) and ``prototype_id`` (int 0..P-1); ``uns['prototype_centroids']``
(P x D) and ``uns['prototype_names']`` (P).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.errors import InputError

EMPTY_GROUP = "(none)"


@dataclass(frozen=True)
class ElbowCurve:
    """WCSS of k-means for each k on one group's subsample, and the k chosen."""

    group: str
    ks: list[int]
    wcss: list[float]
    k: int
    n_tiles: int
    n_fit: int


@dataclass(frozen=True)
class PrototypeSet:
    """Prototype names, groups and centroids (P x D), with each group's elbow curve."""

    names: list[str]
    groups: list[str]
    centroids: np.ndarray
    curves: list[ElbowCurve]

    def assign(self, X: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Global prototype id and Euclidean distance of each row's nearest prototype of its own group."""
        ids = np.full(len(X), -1, dtype=np.int64)
        dist = np.zeros(len(X))
        owner = np.array(self.groups)
        labels = np.asarray(groups, dtype=object)
        for group in dict.fromkeys(labels.tolist()):
            members = np.flatnonzero(labels == group)
            candidates = np.flatnonzero(owner == group)
            if not len(candidates):
                raise InputError(f"group {group!r} has no prototypes (groups with prototypes: "
                                 f"{', '.join(sorted(set(self.groups)))})")
            d = _distances(X[members], self.centroids[candidates])
            best = d.argmin(axis=1)
            ids[members] = candidates[best]
            dist[members] = np.sqrt(np.maximum(d[np.arange(len(members)), best], 0.0))
        return ids, dist


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)) in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]


def elbow_k(ks: Sequence[int], wcss: Sequence[float]) -> int:
    """The k at the elbow of a decreasing WCSS curve: the largest vertical gap below the chord from the
    first to the last point of log(WCSS) against k, both scaled to [0, 1] ("Kneedle" on a log scale, so
    a late, large relative drop, such as from 3 to 4 true clusters, is not hidden by the first drops).
    A flat curve, or one of fewer than 3 points, gives its first k."""
    ks_arr = np.asarray(ks, float)
    w = np.log(np.maximum(np.asarray(wcss, float), 1e-12 * max(float(np.max(wcss)), 1e-300)))
    if len(ks_arr) < 3 or w[0] - w[-1] <= 1e-9:
        return int(ks_arr[0])
    x = (ks_arr - ks_arr[0]) / (ks_arr[-1] - ks_arr[0])
    y = (w - w[-1]) / (w[0] - w[-1])
    gap = (1.0 - x) - y  # the chord runs from (0, 1) to (1, 0)
    return int(ks_arr[int(np.argmax(gap))])


def _kmeans(X: np.ndarray, k: int, seed: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit(X)


def fit_group(X: np.ndarray, group: str, k_max: int = 10, k: int | None = None, max_fit: int = 5000,
              seed: int = 0) -> tuple[np.ndarray, ElbowCurve]:
    """Centroids (k, D) of one group, largest cluster first, and the group's elbow curve.

    ``k`` fixes the number of prototypes (the curve then holds that k only)."""
    rng = np.random.default_rng(seed)
    n = len(X)
    fit = X[np.sort(rng.choice(n, max_fit, replace=False))] if n > max_fit else X
    distinct = len(np.unique(fit, axis=0))
    if k is not None:
        if k > distinct:
            raise InputError(f"--k {k} is more than group {group!r}'s {distinct} distinct embeddings")
        ks = [k]
    else:
        ks = list(range(1, max(1, min(k_max, distinct)) + 1))
    models = {kk: _kmeans(fit, kk, seed) for kk in ks}
    wcss = [float(models[kk].inertia_) for kk in ks]
    chosen = ks[0] if k is not None else elbow_k(ks, wcss)
    model = models[chosen]
    order = np.argsort(-np.bincount(model.labels_, minlength=chosen), kind="stable")
    curve = ElbowCurve(group, ks, wcss, chosen, n, len(fit))
    return model.cluster_centers_[order], curve


def group_labels(values: Sequence[object]) -> list[str]:
    """Group values as strings; empty/missing -> ``(none)``."""
    out = []
    for value in values:
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        out.append(text if text and text.lower() != "nan" else EMPTY_GROUP)
    return out


def fit_prototypes(X: np.ndarray, groups: Sequence[str], k_max: int = 10, k: int | None = None,
                   max_fit: int = 5000, seed: int = 0,
                   on_group: Callable[[int], None] | None = None) -> PrototypeSet:
    """Per-group prototypes of embeddings ``X`` (N, D); ``groups`` gives each row's group."""
    if k_max < 1 or (k is not None and k < 1) or max_fit < 1:
        raise InputError("--k-max, --k and --max-fit must be at least 1")
    labels = np.asarray(groups, dtype=object)
    names, owners, centroids, curves = [], [], [], []
    for group in sorted(set(labels.tolist())):
        centres, curve = fit_group(X[labels == group], group, k_max, k, max_fit, seed)
        names += [f"{group}/{i}" for i in range(len(centres))]
        owners += [group] * len(centres)
        centroids.append(centres)
        curves.append(curve)
        if on_group is not None:
            on_group(1)
    return PrototypeSet(names, owners, np.concatenate(centroids).astype(np.float32), curves)


def prototype_members(ids: Sequence[int] | np.ndarray, prototype: int | str,
                      names: Sequence[str]) -> np.ndarray:
    """Row indices whose prototype id is ``prototype`` (an id 0..P-1 or a name ``"<group>/<k>"``).

    An id outside 0..P-1 or an unknown name raises :class:`InputError`; so do stored ids out of range.
    """
    ids = np.asarray(ids)
    count = len(names)
    if ids.size and (ids.min() < 0 or ids.max() >= count):
        raise InputError(f"prototype ids must lie in 0..{count - 1}; found {int(ids.min())}..{int(ids.max())}")
    if isinstance(prototype, str):
        if prototype not in names:
            close = ", ".join(n for n in names if n.split("/")[0] == prototype.split("/")[0]) or ", ".join(names[:6])
            raise InputError(f"unknown prototype {prototype!r}; known: {close}")
        index = list(names).index(prototype)
    else:
        if isinstance(prototype, bool) or not float(prototype).is_integer() or not 0 <= int(prototype) < count:
            raise InputError(f"prototype id {prototype} is out of range: this file has {count} prototypes "
                             f"(ids 0..{count - 1})")
        index = int(prototype)
    return np.flatnonzero(ids == index)


@dataclass
class PrototypeTable:
    """A prototypes file read back: per-tile ids and paths, prototype names and centroids."""

    path: Path
    tiles: list[str]
    ids: np.ndarray
    names: list[str]
    centroids: np.ndarray

    def members(self, prototype: int | str) -> list[str]:
        """Tile paths of one prototype (validated id or name)."""
        return [self.tiles[i] for i in prototype_members(self.ids, prototype, self.names)]


def load_prototypes(path: str | Path) -> PrototypeTable:
    """Read ``prototypes.h5ad``; a file without the contract's columns/keys raises one InputError."""
    from histosynth.embeddings.store import read_embeddings

    path = Path(path)
    table = read_embeddings(path)
    missing = [c for c in ("prototype", "prototype_id") if c not in table.obs.columns]
    missing += [f"uns['{k}']" for k in ("prototype_centroids", "prototype_names") if k not in table.uns]
    if missing:
        raise InputError(f"not a prototypes file: lacks {', '.join(missing)}", path)
    names = [str(n) for n in np.asarray(table.uns["prototype_names"]).tolist()]
    centroids = np.asarray(table.uns["prototype_centroids"], dtype=np.float32)
    if centroids.shape[0] != len(names):
        raise InputError(f"{len(names)} prototype names but {centroids.shape[0]} centroids", path)
    ids = table.obs["prototype_id"].to_numpy().astype(np.int64)
    try:
        prototype_members(ids, 0, names)
    except InputError as error:
        raise InputError(str(error), path) from None
    return PrototypeTable(path, table.obs["tile"].astype(str).tolist(), ids, names, centroids)
