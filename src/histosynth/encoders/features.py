"""Features of image files, cached on disk by (encoder identity, file content hash).

The cache folder holds one ``<identity>.npz`` per encoder (a :class:`histosynth.io.VectorCache`)
mapping file SHA-256 -> feature vector; long runs also persist progress as small part files every
few hundred tiles, so a killed run resumes where the last part ended.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from histosynth.data.images import read_rgb, require_file
from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError
from histosynth.io import VectorCache, file_digest, prepare_output_dir


def default_cache_dir() -> Path:
    """``$HISTOSYNTH_CACHE`` or ``$XDG_CACHE_HOME/histosynth`` (``~/.cache/histosynth``), plus ``features``."""
    root = os.environ.get("HISTOSYNTH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "histosynth"
    return Path(root) / "features"


def prepare_cache_dir(cache: str | Path | None, *, read_only: bool = False, option: str = "--cache") -> Path:
    """The feature cache folder (``cache``, else :func:`default_cache_dir`), checked before any work.

    It must be a writable folder or creatable as one; an explicit ``cache`` also needs an existing
    parent folder (a mistyped path is not made). ``read_only``: only a file in its place is refused.
    Other files in the folder are never touched: the cache writes only its own ``<encoder>.npz`` and
    ``<encoder>.part-*.npz`` files, atomically. A problem is one :class:`InputError` line.
    """
    folder = Path(cache) if cache is not None else default_cache_dir()
    if read_only:
        if os.path.lexists(folder) and not folder.is_dir():
            raise InputError(f"{option} is a file, not a folder", folder)
        return folder
    shown = option if cache is not None else "the feature cache ($HISTOSYNTH_CACHE)"
    return prepare_output_dir(folder, kind="feature cache", option=shown, parents=cache is None)


def image_features(
    encoder: FeatureEncoder,
    paths: Sequence[str | Path],
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
    save_every: int = 0,
) -> np.ndarray:
    """Features (N, dim) of image files in order; cached vectors are reused, new ones are added.

    ``save_every > 0`` (with a cache) persists new vectors every that many tiles, so a rerun after a
    kill resumes where the last part ended.
    """
    digests = [file_digest(require_file(p)) for p in paths]  # a missing file: one line naming it
    cache = VectorCache(cache_dir, encoder.identity) if cache_dir is not None else None
    known = dict(cache.vectors) if cache is not None else {}
    first: dict[str, int] = {}  # one computation per distinct file content
    for i, digest in enumerate(digests):
        if digest not in known and digest not in first:
            first[digest] = i
    missing = list(first.values())
    if missing:
        if on_batch is not None and len(missing) < len(paths):
            on_batch(len(paths) - len(missing))
        step = save_every if (cache is not None and save_every > 0) else len(missing)
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            computed = encoder.encode((read_rgb(paths[i]) for i in chunk), batch_size, on_batch)
            new = {digests[i]: vector for i, vector in zip(chunk, computed)}
            known.update(new)
            if cache is not None and step < len(missing):
                cache.add(new)
        if cache is not None:
            cache.vectors = known
            cache.save()
    elif on_batch is not None:
        on_batch(len(paths))
    return np.stack([known[d] for d in digests]) if paths else np.zeros((0, encoder.dim))
