"""A rich progress bar shared by long-running commands (drawn on stderr)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
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


def _progress(status: bool) -> Any:
    """A rich ``Progress`` on stderr: description, bar, count, elapsed and remaining time (and a status)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()] + ([TextColumn("{task.fields[status]}")] if status else [])
    return Progress(*columns, console=Console(stderr=True), transient=False)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[ProgressHandle]:
    """Yield a :class:`ProgressHandle` for a bar with count, elapsed and remaining time."""
    with _progress(status=True) as progress:
        task = progress.add_task(description, total=total, status="")
        yield ProgressHandle(progress, task)


@contextlib.contextmanager
def late_bar(description: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yield ``(on_total, advance)`` for a rich bar on stderr that appears only once the total is
    known, so an error found while reading the input (a slide, a folder of masks) stays a single line."""
    state: dict[str, Any] = {}

    def on_total(total: int) -> None:
        progress = _progress(status=False)
        progress.start()
        state["progress"], state["task"] = progress, progress.add_task(description, total=total)

    def advance(n: int = 1) -> None:
        if "progress" in state:
            state["progress"].advance(state["task"], n)

    try:
        yield on_total, advance
    finally:
        if "progress" in state:
            state["progress"].stop()
