"""Embed every tile of a manifest, or of a whole-slide image cut by the tiler, with any registered encoder.

Features come through the file-hash keyed cache of :mod:`histosynth.encoders.features`, persisted in
parts every ``save_every`` tiles: rerunning a killed command recomputes only the tiles after the last
part (and a slide's tiling resumes too). The table is written once, atomically, at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histosynth.data.manifest import TileManifest, load_manifest
from histosynth.data.slides.tiler import TilingOptions, safe_stem, tile_slide
from histosynth.embeddings.store import TILE_COLUMN, Embeddings, check_suffix, write_embeddings
from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError

MANIFEST_SUFFIXES = (".csv",)
SAVE_EVERY = 256  # tiles between cache parts (a kill loses at most this many)


@dataclass(frozen=True)
class EmbedResult:
    """Where the table went and what it holds."""

    path: Path
    tiles: int
    dim: int
    identity: str
    tiles_dir: Path | None = None  # slides: the folder of cut tiles


@dataclass(frozen=True)
class SlideTiles:
    """A slide cut for embedding: its tile manifest and the facts that go into ``uns``/``obs``."""

    manifest: Path
    case: str
    facts: dict[str, Any]


def is_manifest_source(path: str | Path) -> bool:
    """True for a manifest CSV or a dataset folder; anything else is treated as a slide."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in MANIFEST_SUFFIXES


def manifest_obs(manifest: TileManifest) -> Any:
    """One pandas row per tile: ``tile`` (absolute image path), ``id``, ``mask``, ``label``, ``split``, extras."""
    import pandas as pd

    rows = []
    for record in manifest.records:
        rows.append({TILE_COLUMN: str(record.image.resolve()), "id": record.id,
                     "mask": str(record.mask.resolve()) if record.mask else "", "label": record.label or "",
                     "split": record.split or "", **record.extra})
    frame = pd.DataFrame(rows)
    ids = frame["id"]
    unique = ids.ne("").all() and not ids.duplicated().any()
    frame.index = ids.tolist() if unique else [str(i) for i in range(len(frame))]
    return frame


def encoder_facts(encoder: FeatureEncoder) -> dict[str, Any]:
    """Encoder identity (name@weights hash) and, for foundation encoders, preprocessing and output."""
    facts: dict[str, Any] = {"name": encoder.name, "identity": encoder.identity, "dim": int(encoder.dim)}
    spec = getattr(encoder, "spec", None)
    if spec is not None and hasattr(spec, "describe"):
        facts.update({k: v for k, v in spec.describe().items() if k not in facts})
    return facts


def _check_images(manifest: TileManifest) -> None:
    for record in manifest.records:
        if not record.image.is_file():
            where = f" (manifest row {record.row})" if record.row else ""
            raise InputError(f"tile image not found{where}", record.image)


def embed_manifest(
    source: str | Path,
    encoder: FeatureEncoder,
    out: str | Path,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
    save_every: int = SAVE_EVERY,
    extra_obs: dict[str, str] | None = None,
    extra_uns: dict[str, Any] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> EmbedResult:
    """Embed every tile of the manifest ``source`` into ``out`` (.h5ad or .parquet).

    ``extra_obs`` fills columns the manifest lacks (e.g. ``case`` for a slide); ``extra_uns`` is merged
    into ``uns``. ``on_total(n)`` is called once the manifest is read and every image found, then
    ``on_batch(k)`` as tiles are done. Without ``cache_dir`` nothing is cached and a killed run starts over.
    """
    from histosynth import __version__
    from histosynth.encoders.features import image_features

    out = check_suffix(out)
    manifest = load_manifest(source)
    if not manifest.records:
        raise InputError("manifest holds no tiles", source)
    _check_images(manifest)
    if on_total is not None:
        on_total(len(manifest.records))
    obs = manifest_obs(manifest)
    for column, value in (extra_obs or {}).items():
        if column not in obs.columns:
            obs[column] = value
    X = image_features(encoder, [r.image for r in manifest.records], cache_dir, batch_size, on_batch,
                       save_every=save_every)
    uns = {"encoder": encoder_facts(encoder), "source": str(Path(source).resolve()),
           "histosynth_version": __version__, **(extra_uns or {})}
    write_embeddings(out, Embeddings(obs, X, uns))
    return EmbedResult(out, len(obs), int(X.shape[1]), encoder.identity)


def default_tiles_dir(out: str | Path) -> Path:
    """``<out without suffix>_tiles`` beside the output file."""
    out = Path(out)
    return out.with_name(f"{out.name[: -len(out.suffix)] if out.suffix else out.name}_tiles")


def tile_for_embedding(
    slide: str | Path,
    tiles_dir: str | Path,
    options: TilingOptions,
    on_tile: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> SlideTiles:
    """Cut ``slide`` into tissue tiles under ``tiles_dir`` with the shared tiler (resumable)."""
    result = tile_slide(slide, tiles_dir, options, on_tile=on_tile, on_total=on_total)
    if result.kept == 0:
        raise InputError(f"no tissue tiles at --min-tissue {options.min_tissue:g} "
                         f"({result.candidates} grid positions examined)", slide)
    facts = json.loads((Path(tiles_dir) / "slide.json").read_text(encoding="utf-8"))
    return SlideTiles(result.manifest_path, safe_stem(Path(slide)), facts)


def embed_slide(
    slide: str | Path,
    encoder: FeatureEncoder,
    out: str | Path,
    tiles_dir: str | Path | None = None,
    options: TilingOptions | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
    save_every: int = SAVE_EVERY,
) -> EmbedResult:
    """Tile ``slide`` (default folder :func:`default_tiles_dir`) and embed its tiles; ``obs`` keeps
    ``x``, ``y`` (level-0 corners, also ``obsm['spatial']``), ``level`` and ``case`` = the slide's name."""
    out = check_suffix(out)
    tiles_dir = Path(tiles_dir) if tiles_dir is not None else default_tiles_dir(out)
    cut = tile_for_embedding(slide, tiles_dir, options or TilingOptions())
    result = embed_manifest(cut.manifest, encoder, out, cache_dir, batch_size, on_batch, save_every,
                            extra_obs={"case": cut.case}, extra_uns=cut.facts)
    return EmbedResult(result.path, result.tiles, result.dim, result.identity, tiles_dir)
