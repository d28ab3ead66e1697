"""Features of image files, cached on disk by (encoder identity, file content hash)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from histosynth.data.images import read_rgb
from histosynth.encoders.base import FeatureEncoder
from histosynth.io import atomic_path, file_digest


def default_cache_dir() -> Path:
    """``$HISTOSYNTH_CACHE`` or ``$XDG_CACHE_HOME/histosynth`` (``~/.cache/histosynth``), plus ``features``."""
    root = os.environ.get("HISTOSYNTH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "histosynth"
    return Path(root) / "features"


class FeatureCache:
    """One ``.npz`` per encoder identity mapping file SHA-256 -> feature vector."""

    def __init__(self, directory: str | Path, encoder: FeatureEncoder) -> None:
        self.path = Path(directory) / f"{encoder.identity.replace('@', '_')}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["features"]))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.vectors), dtype=str)
        features = np.stack(list(self.vectors.values())) if self.vectors else np.zeros((0, 0))
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, keys=keys, features=features)


def image_features(
    encoder: FeatureEncoder,
    paths: Sequence[str | Path],
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features (N, dim) of image files in order; cached vectors are reused, new ones are added."""
    digests = [file_digest(p) for p in paths]
    cache = FeatureCache(cache_dir, encoder) if cache_dir is not None else None
    known = cache.vectors if cache is not None else {}
    missing = [i for i, d in enumerate(digests) if d not in known]
    if missing:
        if on_batch is not None and len(missing) < len(paths):
            on_batch(len(paths) - len(missing))
        computed = encoder.encode((read_rgb(paths[i]) for i in missing), batch_size, on_batch)
        new = {digests[i]: vector for i, vector in zip(missing, computed)}
        known = {**known, **new}
        if cache is not None:
            cache.vectors = known
            cache.save()
    elif on_batch is not None:
        on_batch(len(paths))
    return np.stack([known[d] for d in digests]) if paths else np.zeros((0, encoder.dim))
