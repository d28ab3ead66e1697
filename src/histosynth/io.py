"""Atomic file writing, a kill-safe on-disk cache of vectors, and the checks every verb runs on its
output location before any work.

Every writer creates ``<name>.<random>.tmp`` in the destination folder, then renames it over
the final name (``os.replace`` is atomic on POSIX within one file system). The checks
(:func:`prepare_output_dir`, :func:`prepare_output_file`, :func:`check_free_space`,
:func:`check_same_settings`) create nothing and report a problem as one :class:`InputError` line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from histosynth.errors import InputError

#: The file that declares a model folder's kind (see :mod:`histosynth.models.folder`).
MODEL_MANIFEST = "histosynth.json"


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: reading it means setting it, which is not thread-safe)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a file for writing that appears under ``path`` only once closed without error."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Save a uint8 HxW or HxWx3 array as PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete ``.*.tmp`` files (and folders, from ``atomic_dir``) left by a killed writer; return how many."""
    import shutil

    removed = 0
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _write_npz(path: Path, vectors: dict[str, np.ndarray]) -> None:
    keys = np.array(list(vectors), dtype=str)
    features = np.stack(list(vectors.values())) if vectors else np.zeros((0, 0))
    with atomic_open(path, "wb") as handle:
        np.savez(handle, keys=keys, features=features)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The vectors of one cache file; none when it is truncated or corrupt (they are computed again)."""
    import zipfile

    try:
        with np.load(path) as data:
            return dict(zip(data["keys"].tolist(), data["features"]))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return {}


class VectorCache:
    """Vectors keyed by a content digest (e.g. a file's SHA-256), in ``<directory>/<name>.npz``.

    ``name`` is typically an encoder identity (``@`` is written as ``_``). :meth:`add` persists new
    vectors at once as a small ``<name>.part-<random>.npz`` (so a killed run loses at most one part);
    loading reads the main file plus every part, and :meth:`save` folds the parts into the main file.
    A truncated or corrupt file counts as empty: its vectors are computed again and the file rewritten.
    """

    def __init__(self, directory: str | Path, name: str) -> None:
        stem = name.replace("@", "_")
        self.path = Path(directory) / f"{stem}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            self.vectors = _read_npz(self.path)
        self._parts = sorted(self.path.parent.glob(f"{stem}.part-*.npz")) if self.path.parent.is_dir() else []
        for part in self._parts:
            self.vectors.update(_read_npz(part))

    def add(self, new: dict[str, np.ndarray]) -> None:
        """Keep ``new`` vectors and persist them now as one small part file (cheap, kill-safe)."""
        import uuid

        if not new:
            return
        self.vectors.update(new)
        part = self.path.with_name(f"{self.path.stem}.part-{uuid.uuid4().hex[:12]}.npz")
        _write_npz(part, new)
        self._parts.append(part)

    def save(self) -> None:
        """Write every vector to the main file (atomically), then drop the parts it now holds."""
        _write_npz(self.path, self.vectors)
        for part in self._parts:
            part.unlink(missing_ok=True)
        self._parts = []


# --- output locations: checked before any work starts ----------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def is_complete_png(path: str | Path, size: int | None = None) -> bool:
    """True for a PNG whose last chunk is IEND (and, with ``size``, whose IHDR says ``size`` x ``size``).

    Cheap (reads 36 bytes) and catches every truncated file: a resumed run treats a tile that fails
    it as not done and writes it again.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
            handle.seek(-12, 2)
            tail = handle.read(12)
    except OSError:
        return False
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return head[:8] == _PNG_SIGNATURE and tail == _PNG_END and (size is None or width == height == size)


def _writable_ancestor(folder: Path, option: str, named: Path) -> Path:
    """The nearest existing folder at or above ``folder``; one line naming ``named`` when it is a file or
    not writable."""
    ancestor = folder
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        raise InputError(f"cannot create {option}: {ancestor} is a file, not a folder", named)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        where = "it is" if ancestor == named else f"{ancestor} is"
        raise InputError(f"cannot write {option}: {where} not writable (permission denied)", named)
    return ancestor


def prepare_output_file(path: str | Path, *, option: str = "--out") -> Path:
    """Check that the file ``path`` can be written (its folder exists or can be made, and is writable).

    Creates nothing; a problem is an :class:`InputError` naming ``path``.
    """
    path = Path(path)
    if os.path.isdir(path):
        raise InputError(f"{option} is a folder; give a file name", path)
    _writable_ancestor(path.parent, option, path)
    return path


def prepare_output_dir(path: str | Path, *, kind: str, option: str = "--out", columns: Sequence[str] | None = None,
                       layout: Collection[str] | None = None, marker: str | None = None,
                       models: Mapping[str, str] | None = None, parents: bool = True) -> Path:
    """Check, before any work, that ``path`` can receive the output of ``kind`` (a verb's name).

    ``path`` must be a folder or creatable as one (missing parents are made later, as ``mkdir -p``;
    with ``parents=False`` its parent folder must exist), and writable. A folder that holds someone
    else's files is refused, so that it is never overwritten or half-filled. An existing, non-empty
    folder (names starting with '.' are ignored) is accepted only when it looks like an earlier run
    of ``kind``:

    * ``columns``: its ``manifest.csv`` has exactly this header; without a manifest every entry is in
      ``layout`` and the folders among them hold only PNGs (a run killed before its first manifest);
    * ``layout`` alone: every entry is one of these names; ``runs/denoiser`` also admits a folder ``runs``
      and limits what it holds to the names listed under it;
    * ``marker``: it holds this file (e.g. ``export.json``);
    * ``models``: entries (``.``: the folder itself) that are model folders, with the kind their
      ``histosynth.json`` must declare (an entry present without one is refused; ``.`` may lack one).

    Creates nothing; a problem is an :class:`InputError` naming ``path``.
    """
    path = Path(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(f"{option} is a file, not a folder", path)
    if _writable_ancestor(path, option, path) not in (path, path.parent) and not parents:
        raise InputError(f"cannot create {option}: {path.parent} does not exist (create it first)", path)
    entries = sorted(p for p in _listing(path, option) if not p.startswith("."))
    if not entries or (columns is None and marker is None and layout is None and models is None):
        return path
    refuse = f"holds files not written by `histosynth {kind}` ({{}}); choose an empty or new {option}"
    if marker is not None and not (path / marker).is_file():
        raise InputError(refuse.format(f"no {marker}"), path)
    manifest = path / "manifest.csv"
    if columns is not None and manifest.exists():
        header = _csv_header(manifest)
        if header != list(columns):
            shown = " ".join(",".join(header).split())[:80] if header else "no header"
            raise InputError(refuse.format(f"its manifest.csv has columns {shown}"), path)
        return path
    if layout is not None:
        for name in entries:
            entry = path / name
            inner = {item.split("/", 1)[1] for item in layout if item.startswith(f"{name}/")}
            if name not in layout and not inner:
                raise InputError(refuse.format(f"found {name!r}"), path)
            if inner and not entry.is_dir():
                raise InputError(refuse.format(f"{name} is a file"), path)
            listed = _listing(entry, option) if inner else []
            stray = sorted(p for p in listed if not p.startswith(".") and p not in inner)
            if stray:
                raise InputError(refuse.format(f"found {name}/{stray[0]}"), path)
            if columns is not None and entry.is_dir() and any(not p.startswith(".") and not p.lower().endswith(".png")
                                                              for p in _listing(entry, option)):
                raise InputError(refuse.format(f"{name}/ holds other files than PNGs"), path)
    for name, model_kind in (models or {}).items():
        entry = path if name == "." else path / name
        if not os.path.lexists(entry / MODEL_MANIFEST if name == "." else entry):
            continue
        declared = _model_kind(entry)
        where = "it" if name == "." else f"its {name}/"
        if declared is None:
            raise InputError(refuse.format(f"{where} has no readable {MODEL_MANIFEST}"), path)
        if declared != model_kind:
            raise InputError(refuse.format(f"{where} holds a model of kind {declared!r}, not {model_kind!r}"), path)
    return path


def _model_kind(folder: Path) -> str | None:
    """The ``kind`` that ``folder/histosynth.json`` declares (None when missing, unreadable or not a model's)."""
    try:
        payload = json.loads((folder / MODEL_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else None


def _listing(folder: Path, option: str) -> list[str]:
    """Names in ``folder`` (none when it does not exist); one line when it cannot be read."""
    if not os.path.isdir(folder):
        return []
    try:
        return os.listdir(folder)
    except OSError as error:
        raise InputError(f"cannot read {option} ({error.strerror})", folder) from None


def _csv_header(path: Path) -> list[str]:
    """The first row of a CSV file (empty when unreadable or not text)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def check_free_space(path: str | Path, need: float, what: str) -> None:
    """Refuse (one line) when ``need`` bytes exceed the free space where ``path`` is (or would be) made."""
    import shutil

    path = Path(path)
    ancestor = path
    while not os.path.exists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    free = shutil.disk_usage(ancestor).free
    if need > free:
        raise InputError(f"{what} needs ~{_size(need)} of disk, {_size(free)} free", path)


def _size(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def check_same_settings(recorded: Mapping[str, Any], wanted: Mapping[str, Any], where: str | Path, *,
                        what: str, hint: str = "choose another --out") -> None:
    """Refuse to resume a run recorded with other settings: one line, ``what (key old -> new, ...); hint``."""
    changed = [f"{key} {recorded.get(key)!s} -> {value!s}" for key, value in wanted.items()
               if str(recorded.get(key)) != str(value)]
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise InputError(f"{what} ({shown}); {hint}", where)
