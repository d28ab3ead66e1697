"""Fidelity and memorisation audits of a synthetic dataset folder against a real manifest.

Every metric is reported beside a real-vs-real floor so a number means something: the same metric
between real train and real held-out tiles, once with all train tiles and once with a random train
subset as large as the synthetic set (FID and KID are biased by sample size).

The fidelity audit also runs a classifier two-sample test on the pixels (``evaluation/c2st.py``):
feature-space metrics only see what the encoder sees, a classifier trained on the tiles does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histosynth.data.manifest import TileManifest, load_manifest
from histosynth.encoders.base import FeatureEncoder
from histosynth.encoders.features import image_features
from histosynth.errors import InputError
from histosynth.evaluation.fidelity import fidelity_metrics
from histosynth.evaluation.privacy import (
    authenticity,
    data_copying_ct,
    flag_near_copies,
    near_copy_threshold,
    nearest_neighbours,
    pixel_nearest_neighbours,
    pixel_signatures,
)

if TYPE_CHECKING:
    from histosynth.evaluation.c2st import C2STConfig

Progress = Callable[[int], None]


def load_synthetic(folder: str | Path) -> TileManifest:
    """A synthetic dataset folder (``manifest.csv`` or ``images/`` [+ ``masks/``]); empty folders fail."""
    manifest = load_manifest(folder)
    if not manifest.records:
        raise InputError("synthetic dataset has no tiles", folder)
    return manifest


@dataclass
class AuditSets:
    """The three tile sets every audit compares, with their features in one encoder's space."""

    train: TileManifest
    heldout: TileManifest
    synthetic: TileManifest
    f_train: np.ndarray
    f_heldout: np.ndarray
    f_synthetic: np.ndarray


def load_audit_sets(
    real: str | Path, synthetic: str | Path, encoder: FeatureEncoder, train_split: str = "train",
    heldout_split: str = "test", cache_dir: str | Path | None = None, on_batch: Progress | None = None,
) -> AuditSets:
    """Real train and held-out splits plus the synthetic folder, each with (cached) features."""
    manifest = load_manifest(real)
    train, heldout = manifest.select_split(train_split), manifest.select_split(heldout_split)
    synth = load_synthetic(synthetic)
    features = [image_features(encoder, [r.image for r in m.records], cache_dir, on_batch=on_batch)
                for m in (train, heldout, synth)]
    return AuditSets(train, heldout, synth, *features)


@dataclass
class FidelityAudit:
    encoder: str
    real: str
    heldout_split: str
    synthetic: str
    n_synthetic: int
    n_heldout: int
    n_train: int
    synthetic_vs_heldout: dict[str, float]
    train_vs_heldout: dict[str, float]  # floor, all train tiles
    train_subset_vs_heldout: dict[str, float]  # floor at the synthetic set's size
    c2st: dict | None = None  # C2STResult.to_dict(): synthetic vs held-out real; None when skipped
    c2st_floor: dict | None = None  # the same test, real train vs held-out (only when asked for)

    def to_dict(self) -> dict:
        return asdict(self)


def _c2st_tiles(manifest: TileManifest, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` seeded-random tiles of ``manifest`` read and downsized to ``size`` px: (n, size, size, 3) uint8."""
    from PIL import Image

    from histosynth.data.images import read_rgb

    picks = np.sort(rng.choice(len(manifest.records), min(n, len(manifest.records)), replace=False))
    tiles = np.zeros((len(picks), size, size, 3), dtype=np.uint8)
    for i, j in enumerate(picks):
        image = read_rgb(manifest.records[j].image)
        tiles[i] = image if image.shape[:2] == (size, size) else np.asarray(
            Image.fromarray(image).resize((size, size), Image.BILINEAR))  # PIL's downsizing is antialiased
    return tiles


def run_c2st(
    real: TileManifest, synthetic: TileManifest, config: C2STConfig, on_step: Callable[[int, int], None] | None = None,
    device: str = "cpu",
) -> dict:
    """The classifier two-sample test between two manifests' tiles, reading only the tiles it uses."""
    from histosynth.evaluation.c2st import classifier_two_sample_test, require_tiles

    require_tiles(len(real.records), len(synthetic.records))  # before reading any tile
    n = min(len(real.records), len(synthetic.records), config.max_per_side)
    rng = np.random.default_rng(config.seed)
    tiles = [_c2st_tiles(m, n, config.size, rng) for m in (real, synthetic)]
    result = classifier_two_sample_test(*tiles, config, on_step=on_step, device=device).to_dict()
    result.update(n_real_available=len(real.records), n_synthetic_available=len(synthetic.records))
    return result


def audit_fidelity(
    real: str | Path, synthetic: str | Path, encoder: FeatureEncoder, heldout_split: str = "test",
    train_split: str = "train", k: int = 3, cache_dir: str | Path | None = None, seed: int = 0,
    on_batch: Progress | None = None, c2st: bool = True, c2st_config: C2STConfig | None = None,
    c2st_floor: bool = False, on_c2st_step: Callable[[int, int], None] | None = None, device: str = "cpu",
) -> FidelityAudit:
    """Synthetic vs held-out real tiles, beside train vs held-out (all, and size-matched).

    With ``c2st`` (default) a classifier two-sample test of synthetic vs held-out real tiles is added
    (``c2st_config``, default :class:`C2STConfig`; run on ``device``); with ``c2st_floor`` also the same
    test of real train vs held-out tiles, whose accuracy shows how far apart the two real splits are.
    """
    sets = load_audit_sets(real, synthetic, encoder, train_split, heldout_split, cache_dir, on_batch)
    f_train, f_heldout, f_synth = sets.f_train, sets.f_heldout, sets.f_synthetic
    rng = np.random.default_rng(seed)
    subset = f_train[rng.choice(len(f_train), min(len(f_synth), len(f_train)), replace=False)]
    metrics = [fidelity_metrics(f_heldout, f, k) for f in (f_synth, f_train, subset)]  # cheap ones fail first
    c2st_result = c2st_floor_result = None
    if c2st or c2st_floor:
        from histosynth.evaluation.c2st import C2STConfig

        config = c2st_config or C2STConfig()
        if c2st:
            c2st_result = run_c2st(sets.heldout, sets.synthetic, config, on_c2st_step, device)
        if c2st_floor:
            c2st_floor_result = run_c2st(sets.heldout, sets.train, config, on_c2st_step, device)
    return FidelityAudit(
        encoder=encoder.identity, real=str(real), heldout_split=heldout_split, synthetic=str(synthetic),
        n_synthetic=len(f_synth), n_heldout=len(f_heldout), n_train=len(f_train),
        synthetic_vs_heldout=metrics[0], train_vs_heldout=metrics[1], train_subset_vs_heldout=metrics[2],
        c2st=c2st_result, c2st_floor=c2st_floor_result,
    )


def _signatures(manifest: TileManifest, size: int = 32) -> np.ndarray:
    from histosynth.data.images import read_rgb

    return np.concatenate([pixel_signatures(read_rgb(r.image)[None], size) for r in manifest.records])


@dataclass
class PrivacyAudit:
    encoder: str
    n_synthetic: int
    n_train: int
    n_heldout: int
    authenticity: float
    authenticity_heldout: float  # the same score for real held-out tiles: what "novel" looks like
    ct_score: float
    ct_cells_used: int
    ct_cells: int
    near_copy_quantile: float
    near_copy_threshold: float
    near_copies: int
    neighbours: list[dict] = field(default_factory=list)  # per synthetic tile: nearest train ids/distances

    def to_dict(self) -> dict:
        return asdict(self)


def audit_privacy(
    real: str | Path, synthetic: str | Path, encoder: FeatureEncoder, train_split: str = "train",
    heldout_split: str = "test", quantile: float = 0.01, cells: int = 5, min_per_cell: int = 20,
    neighbours: int = 3, cache_dir: str | Path | None = None, on_batch: Progress | None = None,
) -> PrivacyAudit:
    """Authenticity, C_T and the near-copy gate of ``synthetic`` against the training tiles."""
    sets = load_audit_sets(real, synthetic, encoder, train_split, heldout_split, cache_dir, on_batch)
    train, synth = sets.train, sets.synthetic
    f_train, f_heldout, f_synth = sets.f_train, sets.f_heldout, sets.f_synthetic
    threshold = near_copy_threshold(f_train, f_heldout, quantile)
    flagged, _ = flag_near_copies(f_train, f_synth, threshold)
    ct = data_copying_ct(f_train, f_heldout, f_synth, cells, min_per_cell)
    distances, indices = nearest_neighbours(f_synth, f_train, neighbours)
    pixel_d, pixel_i = pixel_nearest_neighbours(_signatures(synth), _signatures(train), neighbours)
    rows = [{"id": record.id, "near_copy": bool(flag),
             "train_ids": [train.records[j].id for j in idx], "distances": [round(float(x), 4) for x in dist],
             "pixel_train_ids": [train.records[j].id for j in p_idx],
             "pixel_rms": [round(float(x), 4) for x in p_dist]}
            for record, flag, idx, dist, p_idx, p_dist in zip(synth.records, flagged, indices, distances, pixel_i, pixel_d)]
    return PrivacyAudit(
        encoder=encoder.identity, n_synthetic=len(f_synth), n_train=len(f_train), n_heldout=len(f_heldout),
        authenticity=authenticity(f_train, f_synth)[0], authenticity_heldout=authenticity(f_train, f_heldout)[0],
        ct_score=ct.score, ct_cells_used=ct.cells_used, ct_cells=ct.cells,
        near_copy_quantile=quantile, near_copy_threshold=threshold, near_copies=int(flagged.sum()), neighbours=rows,
    )
