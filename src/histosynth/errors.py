"""Errors that the command line reports as one line with exit code 2."""

from __future__ import annotations

from pathlib import Path


class HistosynthError(Exception):
    """A user-facing problem: bad input, a wrong file, a model folder of another kind.

    The CLI prints ``str(error)`` on one line and exits with code 2, so the message must
    name the file (when there is one) and the problem.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class InputError(HistosynthError):
    """An input file or argument is missing, corrupt or inconsistent."""


class ModelFolderError(HistosynthError):
    """A model folder is missing files, is of another kind, or has a mismatched config."""
