"""Predict compositions for spots (or a grid) of a slide and write them into an AnnData and a CSV, or for
the spots of a ``composition fit``-style CSV / ``.h5ad`` (tile files or cut tiles) into a CSV.

The AnnData keeps its spots in ``obs``, centres in ``obsm['spatial']``, predictions as
``obsm['histosynth_composition']`` (a DataFrame, one column per type) and as ``obs`` columns
``composition:<type>`` (``/`` in a type name becomes ``_``; ``uns['histosynth_composition']['types']``
keeps the names), and, when new, a low-resolution image under ``uns['spatial'][<slide>]`` so
``scanpy.pl.spatial(adata, color='composition:<type>')`` draws them over the tissue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.composition.inputs import SpotColumns, read_h5ad, read_spot_csv, spatial_coords
from histosynth.composition.modelfolder import CompositionConfig
from histosynth.composition.tiles import SlideImage
from histosynth.errors import InputError

OBSM_KEY = "histosynth_composition"
OBS_PREFIX = "composition:"


@dataclass
class Spots:
    """Spots to predict: ids, centres and (for an ``.h5ad`` input) the AnnData they came from."""

    ids: list[str]
    coords: np.ndarray
    adata: Any | None = None


def read_spot_file(path: str | Path, columns: SpotColumns = SpotColumns()) -> Spots:
    """Spot centres from a ``.h5ad`` (``obsm['spatial']``) or a CSV (x/y columns, optional id column)."""
    import pandas as pd

    path = Path(path)
    if path.suffix.lower() == ".h5ad":
        adata = read_h5ad(path)
        coords = spatial_coords(adata, path)
        if coords is None:
            raise InputError("no spot coordinates: obsm['spatial'] is missing", path)
        return Spots([str(i) for i in adata.obs_names], coords, adata)
    frame = read_spot_csv(path)
    if columns.x not in frame or columns.y not in frame:
        raise InputError(f"no spot coordinates: columns {columns.x!r} and {columns.y!r} are needed", path)
    coords = np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
                              for c in (columns.x, columns.y)])
    if not np.isfinite(coords).all():
        row = int(np.flatnonzero(~np.isfinite(coords).all(axis=1))[0])
        raise InputError(f"row {row + 1} has a missing or non-numeric coordinate", path)
    ids = [str(v) for v in frame[columns.id]] if columns.id in frame else [f"spot{i}" for i in range(len(frame))]
    return Spots(ids, coords)


def grid_spots(slide: str | Path, step: float, diameter: float, min_tissue: float = 0.5) -> Spots:
    """Grid centres every ``step`` px over the tissue of ``slide`` (ids ``grid_<x>_<y>``)."""
    from histosynth.composition.tiles import grid_centres

    with SlideImage(slide) as image:
        coords = grid_centres(image, step, diameter, min_tissue)
    return Spots([f"grid_{int(round(x))}_{int(round(y))}" for x, y in coords], coords)


def check_encoder(config: CompositionConfig, encoder: Any, model_dir: str | Path) -> None:
    """Refuse an encoder whose identity (name + weights hash) differs from the one the model was fitted on."""
    if encoder.identity != config.encoder_identity:
        raise InputError(f"the model was fitted on embeddings of {config.encoder_identity}, but the encoder "
                         f"now gives {encoder.identity}; pass the same --encoder/--weights", model_dir)


def predict_spots(config: CompositionConfig, models: dict[str, Any], which: str, encoder: Any, slide: str | Path,
                  spots: Spots, diameter: float, cache_dir: str | Path | None, batch_size: int = 32,
                  on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Predictions (N, T) of model ``which`` for ``spots`` cut from ``slide`` at ``diameter`` px."""
    from histosynth.composition.embed import embed_cut

    if which not in models:
        raise InputError(f"the model folder has no {which!r} model (it has {', '.join(models)})")
    features = embed_cut(encoder, Path(slide), spots.coords, spots.ids, diameter, config.tile_size, cache_dir,
                         batch_size, on_batch)
    return predict_features(config, models, which, features, spots.coords)


def predict_features(config: CompositionConfig, models: dict[str, Any], which: str, features: np.ndarray,
                     coords: np.ndarray | None, sections: np.ndarray | None = None) -> np.ndarray:
    """Predictions (N, T) of model ``which`` from spot embeddings; the neighbourhood model needs ``coords``
    (spots of different ``sections`` are never neighbours)."""
    from histosynth.composition.models import neighbour_matrix, predict_model

    if which not in models:
        raise InputError(f"the model folder has no {which!r} model (it has {', '.join(models)})")
    neighbours = None
    if which == "neighbourhood":
        if coords is None:
            raise InputError("the neighbourhood model needs spot coordinates; predict with --use mlp or ridge")
        groups = np.zeros(len(coords), dtype=int) if sections is None else sections
        neighbours = neighbour_matrix(coords, groups, config.settings.neighbour_radius)
    return predict_model(which, models[which], features, neighbours)


def _scanpy_image(slide: str | Path, diameter: float) -> dict[str, Any]:
    with SlideImage(slide) as image:
        thumb, scale = image.thumbnail(2000)
    return {"images": {"lowres": thumb}, "metadata": {},
            "scalefactors": {"tissue_lowres_scalef": float(scale), "spot_diameter_fullres": float(diameter)}}


def h5_key(name: str) -> str:
    """A type name usable as an HDF5 key (AnnData refuses ``/`` in keys): ``/`` -> ``_``."""
    return str(name).replace("/", "_")


def write_predictions(out: str | Path, spots: Spots, predictions: np.ndarray, names: Sequence[str],
                      slide: str | Path, diameter: float, model: str) -> tuple[Path, Path]:
    """Write ``out`` (.h5ad) and ``out`` with suffix .csv atomically; returns both paths."""
    import anndata
    import pandas as pd

    from histosynth.io import atomic_path

    out = Path(out)
    if out.suffix.lower() != ".h5ad":
        raise InputError("--out must end in .h5ad (the CSV is written beside it)", out)
    frame = pd.DataFrame(predictions, columns=list(names), index=pd.Index(spots.ids, name="spot_id"))
    if spots.adata is not None:
        adata = spots.adata.copy()
    else:
        adata = anndata.AnnData(X=predictions.astype(np.float32), obs=pd.DataFrame(index=frame.index.astype(str)),
                                var=pd.DataFrame(index=[str(n) for n in names]))
        adata.obsm["spatial"] = spots.coords.astype(np.float64)
        adata.uns["spatial"] = {Path(slide).stem: _scanpy_image(slide, diameter)}
    keys = [h5_key(n) for n in names]
    stored = pd.DataFrame(predictions, columns=keys, index=adata.obs_names)
    adata.obsm[OBSM_KEY] = stored
    for key in keys:
        adata.obs[f"{OBS_PREFIX}{key}"] = stored[key].to_numpy()
    adata.uns[OBSM_KEY] = {"model": model, "slide": Path(slide).name, "diameter": float(diameter),
                           "types": [str(n) for n in names]}
    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp)
    return out, write_prediction_csv(out.with_suffix(".csv"), spots.ids, predictions, names, spots.coords)


def write_prediction_csv(path: str | Path, ids: Sequence[str], predictions: np.ndarray, names: Sequence[str],
                         coords: np.ndarray | None = None) -> Path:
    """``spot_id`` (+ ``x``, ``y`` when known) and one column per type, written atomically."""
    import pandas as pd

    from histosynth.io import atomic_path

    path = Path(path)
    table = pd.DataFrame(predictions, columns=list(names), index=pd.Index(list(ids), name="spot_id"))
    if coords is not None:
        table.insert(0, "y", coords[:, 1])
        table.insert(0, "x", coords[:, 0])
    with atomic_path(path) as tmp:
        table.to_csv(tmp)
    return path
