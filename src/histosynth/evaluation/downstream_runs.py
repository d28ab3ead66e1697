"""One downstream run as a JSONL row: written as it finishes, read back to resume and to summarise.

Rows written before arms existed lack the newer fields; they read as what they were: the arm ``real`` at
round 0, else ``synthetic``, mode ``rounds``, with augmentation, weights picked on val (``checkpoint``
``val``), task, steps and size unknown.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

#: Arms of the grid: real subset only (with or without augmentation), + synthetic tiles, + unlabelled train
#: tiles with the real-only model's labels (the semi-supervised baseline), + extra real tiles.
ARMS = ("real", "real-noaug", "synthetic", "pseudo-label", "extra-real")


@dataclass
class DownstreamRun:
    fraction: float
    rounds: int
    seed: int
    n_real: int
    n_synthetic: int
    val_score: float
    test_score: float
    seconds: float
    arm: str = ""  # one of ARMS ("" in old rows: derived from rounds)
    mode: str = "rounds"  # rounds: k per real tile; balanced: every class up to the largest
    augment: bool = True
    n_extra: int = 0  # real train tiles from outside the subset (arms extra-real and pseudo-label)
    task: str | None = None
    steps: int | None = None
    size: int | None = None
    checkpoint: str | None = None  # last: the weights after the last step; val: best on the val split (old rows)
    generator: str = ""  # the model behind the synthetic tiles (their manifest's model column)
    test_per_class: dict[str, float] = field(default_factory=dict)  # recall (classification) or Dice by tile label
    pseudo_score: float | None = None  # arm pseudo-label: its labels' accuracy (or masks' Dice) against the truth,
    # reported only: the run never sees the true labels of the tiles it adds

    def __post_init__(self) -> None:
        if not self.arm:
            self.arm = "real" if self.rounds == 0 else "synthetic"
        if self.checkpoint is None:
            self.checkpoint = "val"  # the only pick there was before the field

    @property
    def cell(self) -> tuple[float, str, str, int]:
        """(fraction, arm, mode, rounds): runs of one cell differ only in the seed."""
        return self.fraction, self.arm, self.mode, self.rounds

    @property
    def n_train(self) -> int:
        return self.n_real + self.n_synthetic + self.n_extra

    def settings(self) -> dict[str, object]:
        """The training settings a resumed grid must share (unknown ones left out)."""
        values = {"task": self.task, "steps": self.steps, "size": self.size, "checkpoint": self.checkpoint}
        return {key: value for key, value in values.items() if value is not None}


_NAMES = {f.name for f in fields(DownstreamRun)}


def parse_run(line: str) -> DownstreamRun:
    """One row; unknown keys (from newer writers) are ignored. ``ValueError``/``TypeError`` when cut or foreign."""
    values = json.loads(line)
    if not isinstance(values, dict):
        raise TypeError("not a run")
    return DownstreamRun(**{k: v for k, v in values.items() if k in _NAMES})


def read_runs(path: Path, repair: bool = True) -> list[DownstreamRun]:
    """Every complete row; with ``repair`` a row cut by a kill mid-write is dropped from the file (and redone)."""
    if not path.exists():
        return []
    from histosynth.io import atomic_open

    text = path.read_text()
    runs, lines = [], text.splitlines()
    for line in lines:
        try:
            runs.append(parse_run(line))
        except (ValueError, TypeError):
            continue
    if repair and (len(runs) != len(lines) or (lines and not text.endswith("\n"))):
        with atomic_open(path, "w") as handle:  # drop the cut line before appending again
            handle.writelines(json.dumps(asdict(run)) + "\n" for run in runs)
    return runs


def append_run(path: Path, run: DownstreamRun) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(asdict(run)) + "\n")
        handle.flush()
