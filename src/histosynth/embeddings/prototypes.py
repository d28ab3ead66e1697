"""Morphological prototypes: per-group k-means on embeddings, k chosen at the elbow of the WCSS curve.

For each group (e.g. each diagnostic label) k-means (scikit-learn) is fitted for k = 1..k_max on a
uniform random subsample of the group's tiles; k is the elbow of the within-cluster sum of squares
(the point of the normalised log-WCSS curve farthest below the chord from its first to its last point,
i.e. "Kneedle" on a log scale). Every tile of the group is then assigned to its nearest prototype.
Prototypes are numbered globally, groups in sorted order and, within a group, by cluster size (largest
first); their names are ``"<group>/<k>"``.

The prototypes file (``prototypes.h5ad``) is the contract for downstream prototype guidance: ``obs``
columns ``tile`` (image path; relative paths are relative to the file's folder), ``prototype`` (name)
and ``prototype_id`` (int 0..P-1); ``uns['prototype_centroids']`` (P x D, P >= 2); optionally
``uns['prototype_names']`` (P; else the names come from ``obs``), ``X`` (the tiles' embeddings) and
``uns['encoder']`` (the encoder's identity). :func:`read_prototype_table` reads and checks it,
:func:`write_prototype_table` writes a minimal one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.errors import InputError

EMPTY_GROUP = "(none)"
CENTROIDS_KEY = "prototype_centroids"
NAMES_KEY = "prototype_names"


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


def nearest_prototype(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Id of the nearest centroid (Euclidean) of each embedding row."""
    return _distances(embeddings, centroids).argmin(1)


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
    """A prototypes file read back: each tile's path and prototype id, the prototype names (index = id),
    the centroids (P, D) and, when stored, the tiles' embeddings and the encoder's identity."""

    source: Path
    tiles: list[Path]
    ids: np.ndarray
    names: list[str]
    centroids: np.ndarray
    embeddings: np.ndarray | None = None
    encoder: str | None = None

    @property
    def num_prototypes(self) -> int:
        return len(self.centroids)

    def members(self, prototype: int | str) -> list[Path]:
        """Tile paths of one prototype (validated id or name)."""
        return [self.tiles[i] for i in prototype_members(self.ids, prototype, self.names)]


def read_prototype_table(path: str | Path) -> PrototypeTable:
    """Read and check a prototypes ``.h5ad``; every problem is one :class:`InputError` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("prototype file not found", path)
    try:
        import anndata

        data = anndata.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise InputError(f"not a readable .h5ad file ({type(error).__name__})", path) from None
    missing = [c for c in ("tile", "prototype", "prototype_id") if c not in data.obs.columns]
    if missing:
        raise InputError(f"obs lacks column(s) {', '.join(missing)} (write it with `histosynth prototypes`)", path)
    if CENTROIDS_KEY not in data.uns:
        raise InputError(f"uns has no {CENTROIDS_KEY!r}", path)
    centroids = np.asarray(data.uns[CENTROIDS_KEY], dtype=np.float64)
    if centroids.ndim != 2 or len(centroids) < 2:
        raise InputError(f"uns[{CENTROIDS_KEY!r}] must be a P x D matrix with P >= 2", path)
    count = len(centroids)
    try:
        ids = np.asarray(data.obs["prototype_id"], dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError("obs column prototype_id must hold integers", path) from None
    bad = ids[(ids < 0) | (ids >= count)]
    if len(bad):
        raise InputError(f"prototype_id {int(bad[0])} is out of range for {count} centroids", path)
    stored = data.uns.get(NAMES_KEY)  # optional: the names are also in obs
    names = [str(n) for n in np.asarray(stored).tolist()] if stored is not None else [str(i) for i in range(count)]
    if len(names) != count:
        raise InputError(f"{len(names)} prototype names but {count} centroids", path)
    for pid, name in zip(ids.tolist(), data.obs["prototype"].astype(str).tolist()):
        if names[pid] not in (str(pid), name):
            raise InputError(f"prototype_id {pid} is named both {names[pid]!r} and {name!r}", path)
        names[pid] = name
    tiles = [Path(t) if Path(t).is_absolute() else path.parent / t for t in data.obs["tile"].astype(str)]
    embeddings = None
    if data.X is not None and data.X.shape == (len(ids), centroids.shape[1]):
        embeddings = np.asarray(data.X, dtype=np.float64)
    encoder = data.uns.get("encoder")
    encoder = encoder.get("identity") if isinstance(encoder, dict) else (str(encoder) if encoder else None)
    return PrototypeTable(path, tiles, ids, names, centroids, embeddings, encoder)


def write_prototype_table(path: str | Path, tiles: Sequence[str], ids: np.ndarray, names: Sequence[str],
                          centroids: np.ndarray, embeddings: np.ndarray | None = None,
                          encoder: str | None = None) -> None:
    """Write a minimal prototypes ``.h5ad`` that :func:`read_prototype_table` reads (atomically)."""
    import anndata
    import pandas as pd

    from histosynth.io import atomic_path

    obs = pd.DataFrame({"tile": [str(t) for t in tiles], "prototype": [names[i] for i in ids],
                        "prototype_id": np.asarray(ids, dtype=np.int64)}, index=[str(i) for i in range(len(ids))])
    X = np.asarray(embeddings, np.float32) if embeddings is not None else np.zeros((len(ids), 0), np.float32)
    uns = {CENTROIDS_KEY: np.asarray(centroids, np.float64)}
    if encoder:
        uns["encoder"] = {"identity": encoder}
    with atomic_path(path) as tmp:
        anndata.AnnData(X=X, obs=obs, uns=uns).write_h5ad(tmp)
