"""Validate a tile manifest: check every row and report all problems at once.

Table rules (ids, labels, splits) are checked on the records; file rules (missing, corrupt,
oversized, size mismatch, tile size, mask values) open every image and mask once, fully decoded,
in a thread pool. Problems come back in row order, then dataset-wide ones (required splits with no
rows). Loaders apply the same rules without reporting everything: the id rules of
:func:`~histosynth.data.manifest.id_conflicts` (called by
``load_manifest``) and :func:`histosynth.data.images.read_tile`, whose messages these share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from histosynth.data.images import Size, pair_mismatch, read_raw_mask, read_rgb, size_text, undeclared_mask_values
from histosynth.data.manifest import MANIFEST_FILE_NAME, TileManifest, TileRecord, id_conflicts
from histosynth.errors import HistosynthError, InputError

T = TypeVar("T")
R = TypeVar("R")
RowCallback = Callable[[int], None]
ID_RULES = ("empty_id", "duplicate_id")


@dataclass(frozen=True)
class Problem:
    """One problem found in a manifest; ``str()`` gives one line naming the place and the problem.

    ``path`` is the manifest CSV (or the dataset folder when it has none), ``row`` the 1-based
    data row, shown as the CSV line number (header = line 1); 0 when not about one CSV row.
    """

    path: Path
    row: int
    id: str | None
    kind: str
    message: str

    def __str__(self) -> str:
        place = f"{self.path}:{self.row + 1}" if self.row > 0 else str(self.path)
        who = f" (id {self.id})" if self.id else ""
        return f"{place}{who}: {self.message}"

    def as_error(self, more: int = 0) -> InputError:
        """This problem as an ``InputError`` on its file (``path: line N (id X): message``)."""
        where = f"line {self.row + 1}" if self.row > 0 else ""
        if self.id:
            where = f"{where} (id {self.id})" if where else f"id {self.id}"
        suffix = f" (and {more} more such problem{'s' if more > 1 else ''})" if more else ""
        return InputError(f"{where + ': ' if where else ''}{self.message}{suffix}", self.path)


def map_in_order(
    function: Callable[[T], R],
    items: Iterable[T],
    jobs: int = 1,
    on_row: RowCallback | None = None,
) -> Iterator[R]:
    """Apply ``function`` in ``jobs`` threads, yielding results in input order.

    At most ``4 * jobs`` items are in flight, so memory stays bounded; ``on_row(1)`` is called
    as each result is yielded. An exception stops the pool and propagates.
    """
    jobs = max(1, jobs)
    pending: list[Future[R]] = []
    executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="histosynth-read")
    try:
        for item in items:
            pending.append(executor.submit(function, item))
            if len(pending) >= 4 * jobs:
                yield _take_first(pending, on_row)
        while pending:
            yield _take_first(pending, on_row)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _take_first(pending: list[Future[R]], on_row: RowCallback | None) -> R:
    result = pending.pop(0).result()
    if on_row is not None:
        on_row(1)
    return result


def _display(path: Path, base: Path) -> str:
    """``path`` relative to the manifest folder when it lies below it, else as given."""
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _reason(error: Exception) -> str:
    """The message of an error without the ``<path>: `` prefix a :class:`HistosynthError` adds."""
    text = str(error)
    if isinstance(error, HistosynthError) and error.path is not None:
        text = text.removeprefix(f"{error.path}: ")
    elif not isinstance(error, HistosynthError):
        text = f"corrupt or unreadable ({type(error).__name__}: {text})"
    return " ".join(text.split())


class _Checker:
    """Builds :class:`Problem` objects for one manifest (knows where paths are shown from)."""

    def __init__(self, dataset: TileManifest, tile_size: Size | None = None) -> None:
        self.dataset = dataset
        self.tile_size = tile_size
        source = dataset.source
        self.is_csv = not source.is_dir() or (source / MANIFEST_FILE_NAME).exists()
        self.csv_path = source / MANIFEST_FILE_NAME if source.is_dir() and self.is_csv else source
        self.base = self.csv_path.parent if self.is_csv else source

    def problem(self, record: TileRecord | None, kind: str, message: str) -> Problem:
        path = self.csv_path if self.is_csv else self.dataset.source
        if record is None:
            return Problem(path, 0, None, kind, message)
        return Problem(path, record.row, record.id or None, kind, message)

    def show(self, path: Path) -> str:
        return _display(path, self.base)

    def check_files(self, record: TileRecord) -> list[Problem]:
        """Open the image and mask of one row (each once) and report what is wrong with them."""
        problems: list[Problem] = []
        image = None
        image_name = self.show(record.image)
        if record.image.is_dir():
            problems.append(self.problem(record, "missing_image", "image cell is empty or names a folder"))
        elif not record.image.is_file():
            problems.append(self.problem(record, "missing_image", f"image {image_name} not found"))
        else:
            try:
                image = read_rgb(record.image)
            except Exception as error:  # noqa: BLE001 - every failure is a problem to report
                problems.append(self.problem(record, "corrupt_image", f"image {image_name}: {_reason(error)}"))
        if image is not None and self.tile_size is not None and image.shape[1::-1] != tuple(self.tile_size):
            problems.append(self.problem(
                record, "tile_size",
                f"image {image_name} is {image.shape[1]}x{image.shape[0]} px, expected {size_text(self.tile_size)}",
            ))
        if record.mask is None:
            return problems
        mask_name = self.show(record.mask)
        if not record.mask.is_file():
            problems.append(self.problem(record, "missing_mask", f"mask {mask_name} not found"))
            return problems
        try:
            raw = read_raw_mask(record.mask)
        except Exception as error:  # noqa: BLE001
            problems.append(self.problem(record, "corrupt_mask", f"mask {mask_name}: {_reason(error)}"))
            return problems
        mismatch = pair_mismatch(f"mask {mask_name}", raw, f"image {image_name}", image) if image is not None else None
        if mismatch:
            problems.append(self.problem(record, "size_mismatch", mismatch))
        undeclared = undeclared_mask_values(raw, self.dataset.classes)
        if undeclared is not None:
            problems.append(self.problem(
                record, "mask_values",
                f"mask {mask_name} has values {undeclared[0]} outside the declared classes (allowed: {undeclared[1]})",
            ))
        return problems

    def check_table(self) -> dict[int, list[Problem]]:
        """Id, label and split rules, keyed by record index."""
        records = self.dataset.records
        labels = self.dataset.classes.labels
        has_split_values = any(r.split for r in records)
        conflicts = {id(record): first for record, first in id_conflicts(records)}
        found: dict[int, list[Problem]] = {}
        for index, record in enumerate(records):
            problems = found.setdefault(index, [])
            if id(record) in conflicts:
                first = conflicts[id(record)]
                if first is None:
                    problems.append(self.problem(record, "empty_id", "id is empty"))
                else:
                    if self.is_csv:
                        message = f"duplicate id {record.id!r}, first used on line {first.row + 1}"
                    else:
                        message = (f"duplicate id {record.id!r}: {self.show(record.image)} and "
                                   f"{self.show(first.image)} have the same name")
                    problems.append(self.problem(record, "duplicate_id", message))
            if record.label and record.label not in labels:
                problems.append(self.problem(
                    record, "unknown_label",
                    f"unknown label {record.label!r} (known: {', '.join(labels)})",
                ))
            if has_split_values and not record.split:
                problems.append(self.problem(record, "empty_split", "split cell is empty while other rows have one"))
        return found

    def check_required_splits(self, required_splits: Iterable[str]) -> list[Problem]:
        present = self.dataset.splits
        problems = []
        for split in required_splits:
            if not any(r.split == split for r in self.dataset.records):
                hint = ", ".join(present) if present else "none; pass --require-splits '' to allow that"
                problems.append(self.problem(None, "empty_split", f"split {split!r} has no rows (splits here: {hint})"))
        return problems


def validate_manifest(
    dataset: TileManifest,
    required_splits: Iterable[str] = (),
    jobs: int = 1,
    on_row: RowCallback | None = None,
    tile_size: Size | None = None,
) -> list[Problem]:
    """Check every row of ``dataset`` and return all problems (empty list when clean).

    Every image and mask is decoded once, in ``jobs`` threads; ``on_row(1)`` is called per row.
    ``tile_size`` (width, height): also report images of another size.
    """
    checker = _Checker(dataset, tile_size)
    table = checker.check_table()
    problems: list[Problem] = []
    file_results = map_in_order(checker.check_files, dataset.records, jobs=jobs, on_row=on_row)
    for index, file_problems in enumerate(file_results):
        problems.extend(table.get(index, []))
        problems.extend(file_problems)
    problems.extend(checker.check_required_splits(required_splits))
    return problems
