"""Embedding tables on disk: AnnData ``.h5ad`` or a wide ``.parquet``, both readable without histosynth.

- ``.h5ad``: ``obs`` = one row per tile (``tile`` = image path, then the manifest's ``id``, ``label``,
  ``split``, ``case``, ... and for slides ``x``, ``y``, ``level``); ``X`` = embeddings (float32);
  ``obsm['spatial']`` = level-0 tile corners (x, y) when known; ``uns`` = encoder identity and facts.
- ``.parquet``: the ``obs`` columns, then ``emb_0 .. emb_{D-1}`` (float32); ``uns`` as JSON in the
  schema metadata under ``histosynth``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.errors import InputError
from histosynth.io import atomic_path

SUFFIXES = (".h5ad", ".parquet")
TILE_COLUMN = "tile"
_EMB_PREFIX = "emb_"
_NUMERIC = ("x", "y", "level", "mpp", "tissue_fraction")


@dataclass
class Embeddings:
    """Embeddings ``X`` (N, D) with their per-tile table ``obs`` (pandas) and file-level facts ``uns``."""

    obs: Any  # pandas.DataFrame, index = tile ids
    X: np.ndarray
    uns: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.obs) != len(self.X):
            raise ValueError(f"{len(self.obs)} obs rows but {len(self.X)} embeddings")

    @property
    def spatial(self) -> np.ndarray | None:
        """(N, 2) level-0 tile corners when every row has ``x`` and ``y``, else None."""
        if not {"x", "y"} <= set(self.obs.columns):
            return None
        import pandas as pd

        xy = self.obs[["x", "y"]].apply(lambda c: pd.to_numeric(c, errors="coerce")).to_numpy(dtype=float)
        return None if len(xy) == 0 or np.isnan(xy).any() else xy


def check_suffix(path: str | Path) -> Path:
    """``path`` if it ends in .h5ad or .parquet, else InputError (checked before any work is done)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"output must end in {' or '.join(SUFFIXES)} (AnnData or Parquet)", path)
    return path


def _clean(value: Any) -> Any:
    """``uns`` values h5ad can store: None dropped, Paths as str, a list of mixed or nested items as JSON text."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = [v for v in value if v is not None]
        kinds = {"str" if isinstance(v, str) else "num" if isinstance(v, (int, float)) and not isinstance(v, bool)
                 else "other" for v in items}
        return items if len(kinds) <= 1 and "other" not in kinds else json.dumps(items, default=str)
    return value


def _obs_for_writing(obs: Any) -> Any:
    import pandas as pd

    out = obs.copy()
    for column in out.columns:
        if column in _NUMERIC:
            numbers = pd.to_numeric(out[column], errors="coerce")
            out[column] = numbers if numbers.notna().all() else out[column].astype(str)
        elif out[column].dtype == object or str(out[column].dtype) == "category":
            out[column] = out[column].astype(str)
    out.index = out.index.astype(str)
    return out


def write_embeddings(path: str | Path, embeddings: Embeddings) -> Path:
    """Write ``embeddings`` to ``path`` (.h5ad or .parquet by suffix), atomically."""
    path = check_suffix(path)
    obs = _obs_for_writing(embeddings.obs)
    X = np.asarray(embeddings.X, dtype=np.float32)
    uns = _clean(embeddings.uns)
    if path.suffix.lower() == ".h5ad":
        import anndata

        adata = anndata.AnnData(X=X, obs=obs, uns=uns)
        spatial = embeddings.spatial
        if spatial is not None:
            adata.obsm["spatial"] = spatial
        with atomic_path(path) as tmp:
            adata.write_h5ad(tmp)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"obs_name": pa.array(obs.index.tolist(), pa.string())}
    for column in obs.columns:
        columns[str(column)] = pa.array(obs[column].tolist())
    columns.update({f"{_EMB_PREFIX}{i}": pa.array(X[:, i]) for i in range(X.shape[1])})
    table = pa.table(columns).replace_schema_metadata({"histosynth": json.dumps(uns)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_embeddings(path: str | Path) -> Embeddings:
    """Read an embeddings file written by :func:`write_embeddings` (or any h5ad with a ``tile`` column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("embeddings file not found", path)
    check_suffix(path)
    try:
        if path.suffix.lower() == ".h5ad":
            import anndata

            adata = anndata.read_h5ad(path)
            obs = adata.obs.copy()
            X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float32)
            uns = dict(adata.uns)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            frame = table.to_pandas()
            emb = sorted((c for c in frame.columns if c.startswith(_EMB_PREFIX) and c[len(_EMB_PREFIX):].isdigit()),
                         key=lambda c: int(c[len(_EMB_PREFIX):]))
            X = frame[emb].to_numpy(dtype=np.float32)
            obs = frame.drop(columns=emb).set_index("obs_name") if "obs_name" in frame else frame.drop(columns=emb)
            meta = (table.schema.metadata or {}).get(b"histosynth")
            uns = json.loads(meta) if meta else {}
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"cannot read embeddings ({str(error).splitlines()[0][:160]})", path) from None
    for column in obs.columns:
        if str(obs[column].dtype) == "category":
            obs[column] = obs[column].astype(str)
    if TILE_COLUMN not in obs.columns:
        raise InputError(f"embeddings lack the {TILE_COLUMN!r} column (image paths); columns: "
                         f"{', '.join(map(str, obs.columns)) or 'none'}", path)
    if X.ndim != 2 or len(X) == 0:
        raise InputError("embeddings file holds no embeddings", path)
    return Embeddings(obs, X, uns)
