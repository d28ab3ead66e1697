"""Spots with cell-type abundance targets, read from an AnnData ``.h5ad`` or a CSV manifest.

A CSV row is a spot: an id, its section (and patient), its centre in the section's slide image
(``pixel_x``, ``pixel_y``) and either a pre-cut ``tile`` file or a slide ``image`` to cut it from
(slide images given as arguments take precedence over both),
plus numeric abundance columns (her2st's ``spots.csv`` layout by default). An ``.h5ad`` holds spots in
``obs``, centres in ``obsm['spatial']`` (x = column, y = row, full-resolution pixels) and abundances
in ``obs`` columns or in one ``obsm`` matrix (e.g. cell2location's ``q05_cell_abundance_w_sf``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.errors import InputError


@dataclass(frozen=True)
class SpotColumns:
    """Names of the metadata columns (CSV columns or ``obs`` columns); absent ones are optional."""

    id: str = "spot_id"
    section: str = "section"
    patient: str = "patient"
    x: str = "pixel_x"
    y: str = "pixel_y"
    tile: str = "tile"
    image: str = "image"


@dataclass
class SpotTable:
    """Spots of one or more sections with their abundance targets (rows aligned everywhere)."""

    source: Path
    ids: list[str]
    sections: np.ndarray
    patients: np.ndarray
    coords: np.ndarray | None
    targets: np.ndarray
    target_names: list[str]
    normalised: bool
    tiles: list[Path] | None = None
    images: dict[str, Path] = field(default_factory=dict)
    diameter: float | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def groups(self, by: str) -> np.ndarray:
        """Group label of every spot: ``section`` or ``patient``."""
        if by not in ("section", "patient"):
            raise InputError(f"unknown grouping {by!r}; choose section or patient")
        return self.sections if by == "section" else self.patients

    def require_coords(self, purpose: str) -> np.ndarray:
        """Spot centres, or a one-line error saying what needs them."""
        if self.coords is None:
            raise InputError(f"{purpose} needs spot coordinates, but the file has none", self.source)
        return self.coords


def _preview(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(repr(str(c)) for c in list(names)[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def select_targets(available: Sequence[str], spec: str, source: str | Path) -> list[str]:
    """Columns named by ``spec``: comma-separated exact names or glob patterns (``'major:*'``), in file order."""
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
        raise InputError("no abundance columns asked for (--targets is empty)", source)
    names = [str(c) for c in available]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [pattern] if pattern in names else [c for c in names if fnmatch.fnmatchcase(c, pattern)]
        if not hits:
            raise InputError(f"no abundance column matches {pattern!r} (columns: {_preview(names)})", source)
        chosen += [h for h in hits if h not in chosen]
    return chosen


def check_abundances(values: np.ndarray, names: Sequence[str], ids: Sequence[str], source: str | Path) -> None:
    """One-line errors for missing/non-numeric or negative abundances (naming column and first spot)."""
    for j, name in enumerate(names):
        column = values[:, j]
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            raise InputError(f"abundance column {name!r} has {bad.size} missing or non-numeric value(s) "
                             f"(first: spot {ids[bad[0]]})", source)
        negative = np.flatnonzero(column < 0)
        if negative.size:
            raise InputError(f"abundance column {name!r} has {negative.size} negative value(s) "
                             f"(first: spot {ids[negative[0]]} = {column[negative[0]]:g})", source)


def normalise_rows(values: np.ndarray, ids: Sequence[str], source: str | Path) -> np.ndarray:
    """Abundances -> proportions per spot; all-zero spots are an error (they have no composition)."""
    sums = values.sum(axis=1)
    zero = np.flatnonzero(sums <= 0)
    if zero.size:
        raise InputError(f"{zero.size} spot(s) have all-zero abundances over the chosen columns (first: "
                         f"{ids[zero[0]]}); drop them or keep raw abundances (--raw)", source)
    return values / sums[:, None]


def _numeric(frame: Any, names: Sequence[str]) -> np.ndarray:
    import pandas as pd

    return np.column_stack([pd.to_numeric(frame[n], errors="coerce").to_numpy(np.float64) for n in names])


def _parse_images(images: Sequence[str | Path], sections: Sequence[str], source: Path) -> dict[str, Path]:
    """``PATH`` (one section) or ``SECTION=PATH`` items -> section -> image path (existing files)."""
    mapping: dict[str, Path] = {}
    unique = list(dict.fromkeys(sections))
    for item in images:
        text = str(item)
        name, _, rest = text.partition("=")
        if rest and name in unique:
            mapping[name] = Path(rest)
        elif len(unique) == 1:
            mapping[unique[0]] = Path(text)
        else:
            raise InputError(f"{len(unique)} sections need one image each: give --image SECTION=PATH "
                             f"(sections: {_preview(unique)})", text)
    for path in mapping.values():
        if not path.is_file():
            raise InputError("slide image not found", path)
    return mapping


def _assemble(source: Path, meta: Any, frame: Any, targets: str | None, columns: SpotColumns,
              images: Sequence[str | Path], coords: np.ndarray | None, default_section: str, normalise: bool,
              diameter: float | None) -> SpotTable:
    n = len(meta)
    if n == 0:
        raise InputError("no spots in the file", source)
    ids = [str(v) for v in meta[columns.id]] if columns.id in meta else [f"spot{i}" for i in range(n)]
    if len(set(ids)) != n:
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"spot id {duplicate!r} appears more than once", source)
    sections = (meta[columns.section].astype(str).to_numpy() if columns.section in meta
                else np.full(n, default_section, dtype=object))
    patients = meta[columns.patient].astype(str).to_numpy() if columns.patient in meta else sections.copy()
    if targets is None:  # spots to predict: no abundances read
        names, values = [], np.zeros((n, 0))
    else:
        names = select_targets(list(frame.columns), targets, source)
        values = _numeric(frame, names)
        check_abundances(values, names, ids, source)
        values = normalise_rows(values, ids, source) if normalise else values
    if coords is not None and not np.isfinite(coords).all():
        row = int(np.flatnonzero(~np.isfinite(coords).all(axis=1))[0])
        raise InputError(f"spot {ids[row]} has a missing or non-numeric coordinate", source)
    tiles = None
    image_map: dict[str, Path] = {}
    if columns.tile in meta and not images:  # an explicit --image wins over pre-cut tiles
        tiles = [source.parent / str(p) for p in meta[columns.tile]]
        missing = next((p for p in tiles if not p.is_file()), None)
        if missing is not None:
            raise InputError(f"tile file of column {columns.tile!r} not found", missing)
    else:
        if images:
            image_map = _parse_images(images, list(sections), source)
        elif columns.image in meta:
            pairs = dict(zip(sections, (source.parent / str(p) for p in meta[columns.image])))
            image_map = _parse_images([f"{s}={p}" for s, p in pairs.items()], list(sections), source)
        else:
            raise InputError(f"no tile column {columns.tile!r} and no slide image: give --image "
                             f"(or an {columns.image!r} column)", source)
        lacking = sorted(set(sections) - set(image_map))
        if lacking:
            raise InputError(f"no slide image for section(s) {_preview(lacking)}: give --image SECTION=PATH", source)
        if coords is None:
            raise InputError("spot tiles are cut from the slide image, but the spots have no coordinates "
                             f"(columns {columns.x!r}/{columns.y!r} or obsm['spatial'])", source)
    return SpotTable(source, ids, np.asarray(sections, dtype=str), np.asarray(patients, dtype=str), coords, values,
                     names, normalise, tiles, image_map, diameter)


def read_spot_csv(path: Path):
    """A spot CSV as a pandas frame; missing or unreadable files fail in one line."""
    import pandas as pd

    if not path.is_file():
        raise InputError("spot file not found", path)
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"not a readable CSV ({' '.join(str(error).split())[:160]})", path) from None


def load_csv(path: str | Path, targets: str | None, *, columns: SpotColumns = SpotColumns(),
             images: Sequence[str | Path] = (), normalise: bool = True) -> SpotTable:
    """Spots of a CSV manifest (paths relative to the CSV); abundance columns chosen by ``targets``."""

    path = Path(path)
    frame = read_spot_csv(path)
    coords = None
    if columns.x in frame and columns.y in frame:
        coords = _numeric(frame, [columns.x, columns.y])
    return _assemble(path, frame, frame, targets, columns, images, coords, "all", normalise, None)


def _spot_diameter(uns: Any) -> float | None:
    """``spot_diameter_fullres`` from Visium-style ``uns['spatial'][library]['scalefactors']`` when unique."""
    try:
        values = {float(lib["scalefactors"]["spot_diameter_fullres"]) for lib in uns["spatial"].values()}
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    return values.pop() if len(values) == 1 else None


def obsm_frame(adata: Any, key: str, source: Path) -> Any:
    """``obsm[key]`` as a DataFrame (cell2location's are; arrays get ``uns['mod']['factor_names']`` or ``key[i]``)."""
    import pandas as pd

    if key not in adata.obsm:
        raise InputError(f"obsm has no {key!r} (keys: {_preview(list(adata.obsm))})", source)
    matrix = adata.obsm[key]
    if isinstance(matrix, pd.DataFrame):
        return matrix
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise InputError(f"obsm[{key!r}] is not a spots x types matrix", source)
    factor_names = adata.uns.get("mod", {}).get("factor_names") if isinstance(adata.uns.get("mod"), dict) else None
    names = ([str(v) for v in factor_names] if factor_names is not None and len(factor_names) == matrix.shape[1]
             else [f"{key}[{i}]" for i in range(matrix.shape[1])])
    return pd.DataFrame(matrix, columns=names, index=adata.obs_names)


def read_h5ad(path: str | Path) -> Any:
    """An AnnData read fully into memory; unreadable files fail with one line."""
    import anndata

    path = Path(path)
    if not path.is_file():
        raise InputError("AnnData file not found", path)
    try:
        return anndata.read_h5ad(path)
    except Exception as error:  # h5py / anndata raise many types for a bad file
        raise InputError(f"not a readable .h5ad ({' '.join(str(error).split())[:160]})", path) from None


def spatial_coords(adata: Any, source: Path) -> np.ndarray | None:
    """``obsm['spatial']`` as float (N, 2) x/y, None when absent; a wrong shape is an error."""
    if "spatial" not in adata.obsm:
        return None
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise InputError("obsm['spatial'] must be a spots x 2 (x, y) array", source)
    return coords[:, :2]


def load_h5ad(path: str | Path, targets: str | None, *, abundance_key: str | None = None,
              columns: SpotColumns = SpotColumns(), images: Sequence[str | Path] = (),
              normalise: bool = True) -> SpotTable:
    """Spots of an AnnData: targets from ``obsm[abundance_key]`` columns, else from ``obs`` columns."""
    path = Path(path)
    adata = read_h5ad(path)
    frame = obsm_frame(adata, abundance_key, path) if abundance_key else adata.obs
    meta = adata.obs.copy()
    if columns.id not in meta:
        meta[columns.id] = adata.obs_names.astype(str)
    return _assemble(path, meta, frame, targets, columns, images, spatial_coords(adata, path), path.stem, normalise,
                     _spot_diameter(adata.uns))


def load_spots(path: str | Path, targets: str | None, *, abundance_key: str | None = None,
               columns: SpotColumns = SpotColumns(), images: Sequence[str | Path] = (),
               normalise: bool = True) -> SpotTable:
    """Read spots from a ``.h5ad`` or a ``.csv`` (by suffix); ``targets=None`` reads no abundances (for
    prediction: ``targets`` is then an N x 0 array)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        return load_h5ad(path, targets, abundance_key=abundance_key, columns=columns, images=images,
                         normalise=normalise)
    if suffix == ".csv":
        if abundance_key:
            raise InputError("--abundance-key applies to .h5ad files; a CSV names its columns in --targets", path)
        return load_csv(path, targets, columns=columns, images=images, normalise=normalise)
    raise InputError(f"unknown spot file type {suffix or '(none)'!r}; give a .h5ad or a .csv", path)
