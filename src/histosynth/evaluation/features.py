"""Features of image files, cached on disk by (encoder identity, file content hash).

One ``<identity>.npz`` per encoder maps file SHA-256 -> feature vector. Long runs also persist
progress as small ``<identity>.part-<random>.npz`` files (each written atomically) every few hundred
tiles, so a killed run loses at most one part's worth of work; loading reads the main file plus all
parts, and :meth:`FeatureCache.save` folds the parts back into the main file. A truncated or
corrupt cache file counts as empty: its tiles are computed again and the file rewritten.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from histosynth.data.images import read_rgb, require_file
from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError
from histosynth.io import atomic_path, file_digest, prepare_output_dir


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


def _write_npz(path: Path, vectors: dict[str, np.ndarray]) -> None:
    keys = np.array(list(vectors), dtype=str)
    features = np.stack(list(vectors.values())) if vectors else np.zeros((0, 0))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, keys=keys, features=features)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The vectors of one cache file; none when it is truncated or corrupt (they are computed again)."""
    try:
        with np.load(path) as data:
            return dict(zip(data["keys"].tolist(), data["features"]))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return {}


class FeatureCache:
    """One ``.npz`` per encoder identity mapping file SHA-256 -> feature vector (plus pending parts)."""

    def __init__(self, directory: str | Path, encoder: FeatureEncoder) -> None:
        stem = encoder.identity.replace("@", "_")
        self.path = Path(directory) / f"{stem}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            self.vectors = _read_npz(self.path)
        self._parts = sorted(self.path.parent.glob(f"{stem}.part-*.npz")) if self.path.parent.is_dir() else []
        for part in self._parts:
            self.vectors.update(_read_npz(part))

    def add(self, new: dict[str, np.ndarray]) -> None:
        """Keep ``new`` vectors and persist them now as one small part file (cheap, kill-safe)."""
        if not new:
            return
        self.vectors.update(new)
        part = self.path.with_name(f"{self.path.stem}.part-{uuid.uuid4().hex[:12]}.npz")
        _write_npz(part, new)
        self._parts.append(part)

    def save(self) -> None:
        """Write every vector to the main file (atomically), then drop the parts it now holds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_npz(self.path, self.vectors)
        for part in self._parts:
            part.unlink(missing_ok=True)
        self._parts = []


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
    cache = FeatureCache(cache_dir, encoder) if cache_dir is not None else None
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
