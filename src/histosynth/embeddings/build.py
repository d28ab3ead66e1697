"""``embeddings file -> prototypes folder``: fit, assign, and write the prototype outputs.

Layout of the output folder::

    prototypes.h5ad        the input table + obs ``prototype`` ("<group>/<k>"), ``prototype_id`` (0..P-1),
                           ``prototype_distance``; uns ``prototype_centroids`` (P x D), ``prototype_names``,
                           ``prototype_groups``, ``prototypes`` (settings)
    prototypes.json        per group: k chosen, the k range and its WCSS curve, tiles fitted / total
    elbow.svg              the WCSS curves, chosen k ringed
    contact_sheet.png      each prototype's tiles nearest its centroid
    maps/<case>.png        slides (tiles with x, y): each case's tiles coloured by prototype
    case_prototypes.csv    tile manifests: per-case prototype counts (+ case_prototypes.svg heat map)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histosynth.embeddings.figures import case_histograms, elbow_svg, nearest_members, prototype_sheet, slide_map
from histosynth.embeddings.prototypes import EMPTY_GROUP, PrototypeSet, fit_prototypes, group_labels
from histosynth.embeddings.store import TILE_COLUMN, Embeddings, read_embeddings, write_embeddings
from histosynth.errors import InputError
from histosynth.io import write_json

PROTOTYPES_FILE = "prototypes.h5ad"
ALL_GROUP = "all"


@dataclass(frozen=True)
class PrototypeSettings:
    """How prototypes are found: grouping column (None = one group), k range or fixed k, subsample, seed."""

    group_by: str | None = "label"
    k_max: int = 10
    k: int | None = None
    max_fit: int = 5000
    seed: int = 0
    nearest: int = 8  # tiles per prototype on the contact sheet
    case_column: str = "case"


@dataclass(frozen=True)
class PrototypeResult:
    folder: Path
    prototypes: PrototypeSet
    files: list[Path] = field(default_factory=list)


def _groups(table: Embeddings, settings: PrototypeSettings, source: Path) -> list[str]:
    if settings.group_by is None:
        return [ALL_GROUP] * len(table.obs)
    if settings.group_by not in table.obs.columns:
        raise InputError(f"--group-by column {settings.group_by!r} not in the embeddings (columns: "
                         f"{', '.join(map(str, table.obs.columns))})", source)
    groups = group_labels(table.obs[settings.group_by].tolist())
    return [ALL_GROUP] * len(groups) if set(groups) == {EMPTY_GROUP} else groups  # e.g. a slide's empty labels


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def build_prototypes(
    embeddings: str | Path,
    out_dir: str | Path,
    settings: PrototypeSettings | None = None,
    on_step: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> PrototypeResult:
    """Fit per-group prototypes on the embeddings file and write the folder described above.

    ``on_total(n)`` is called once the groups are known, then ``on_step(1)`` after each group is fitted
    and after each of the 3 output stages (``n = len(groups) + 3`` steps in all).
    """
    settings = settings or PrototypeSettings()
    source = Path(embeddings)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out exists and is not a folder", out_dir)
    table = read_embeddings(source)
    groups = _groups(table, settings, source)
    if on_total is not None:
        on_total(len(set(groups)) + 3)
    X = np.asarray(table.X, dtype=np.float32)
    prototypes = fit_prototypes(X, groups, settings.k_max, settings.k, settings.max_fit, settings.seed, on_step)
    ids, distances = prototypes.assign(X, groups)
    step = on_step or (lambda n=1: None)

    obs = table.obs.copy()
    obs["prototype"] = [prototypes.names[i] for i in ids]
    obs["prototype_id"] = ids
    obs["prototype_distance"] = distances.astype(np.float32)
    uns = {**table.uns, "prototype_centroids": prototypes.centroids, "prototype_names": prototypes.names,
           "prototype_groups": prototypes.groups,
           "prototypes": {"group_by": settings.group_by or "", "k_max": settings.k_max, "k": settings.k,
                          "max_fit": settings.max_fit, "seed": settings.seed, "source": str(source.resolve())}}
    files = [write_embeddings(out_dir / PROTOTYPES_FILE, Embeddings(obs, X, uns))]
    summary = {"embeddings": str(source.resolve()), "group_by": settings.group_by, "prototypes": len(prototypes.names),
               "groups": [{"group": c.group, "k": c.k, "tiles": c.n_tiles, "fitted": c.n_fit, "ks": c.ks,
                           "wcss": c.wcss} for c in prototypes.curves],
               "sizes": {n: int((ids == i).sum()) for i, n in enumerate(prototypes.names)}}
    write_json(out_dir / "prototypes.json", summary)
    files.append(out_dir / "prototypes.json")
    files.append(elbow_svg(out_dir / "elbow.svg", prototypes.curves))
    step(1)

    count = len(prototypes.names)
    tiles = obs[TILE_COLUMN].astype(str).tolist()
    near = nearest_members(ids, distances, count, settings.nearest)
    sizes = [int((ids == p).sum()) for p in range(count)]
    files.append(prototype_sheet(out_dir / "contact_sheet.png", prototypes.names, sizes,
                                 [[tiles[i] for i in members] for members in near]))
    step(1)

    files += _case_outputs(table, obs, ids, prototypes.names, settings, out_dir)
    step(1)
    return PrototypeResult(out_dir, prototypes, files)


def _case_outputs(table: Embeddings, obs, ids: np.ndarray, names: list[str], settings: PrototypeSettings,
                  out_dir: Path) -> list[Path]:
    """Slide maps when tiles have coordinates, else per-case histograms when a case column exists."""
    has_case = settings.case_column in obs.columns
    cases = group_labels(obs[settings.case_column].tolist()) if has_case else ["slide"] * len(obs)
    xy = table.spatial
    if xy is not None:
        files = []
        for case in sorted(set(cases)):
            rows = np.array([c == case for c in cases])
            files.append(slide_map(out_dir / "maps" / f"{_safe(case)}.png", xy[rows], ids[rows], names))
        return files
    if has_case:
        return list(case_histograms(out_dir / "case_prototypes.csv", out_dir / "case_prototypes.svg",
                                    cases, ids, names))
    return []
