"""A rich progress bar shared by long-running commands (drawn on stderr)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class ProgressHandle:
    """Callable ``advance(n=1)``; also sets the total, the position and a status text."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def __call__(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def set_completed(self, completed: int) -> None:
        self._progress.update(self._task, completed=completed)

    def set_status(self, text: str) -> None:
        self._progress.update(self._task, status=text)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[ProgressHandle]:
    """Yield a :class:`ProgressHandle` for a bar with count, elapsed and remaining time."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, status="")
        yield ProgressHandle(progress, task)
