"""Summaries of downstream runs: mean +- sd per cell, paired gains, per-class scores, score-vs-size series.

A cell is (fraction, arm, mode, rounds); its runs differ only in the seed. The paired gain of a run is its
test score minus the test score of the ``real`` run (augmented real subset only) of the same task,
fraction and seed: the subset and training seed are then the same, so subset-to-subset spread cancels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from histosynth.evaluation.downstream_runs import ARMS, DownstreamRun

BASELINE_ARM = "real"


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell_order(cell: tuple[float, str, str, int]) -> tuple:
    fraction, arm, mode, rounds = cell
    return -fraction, ARMS.index(arm) if arm in ARMS else len(ARMS), mode != "rounds", mode, rounds


def paired_gains(runs: Sequence[DownstreamRun], baselines: Iterable[DownstreamRun] | None = None,
                 ) -> dict[tuple[float, str, str, int], list[float]]:
    """Test-score gain of each non-baseline run over its own seed's ``real`` run (same task, training settings,
    fraction and seed), grouped by cell.

    ``baselines`` (default ``runs``) may hold the real runs of another runs file of the same grid.
    """
    def key(run: DownstreamRun) -> tuple:
        return run.task, run.steps, run.size, run.checkpoint, run.fraction, run.seed

    base = {key(r): r.test_score for r in (runs if baselines is None else baselines) if r.arm == BASELINE_ARM}
    gains: dict[tuple[float, str, str, int], list[float]] = {}
    for run in runs:
        if run.arm != BASELINE_ARM and key(run) in base:
            gains.setdefault(run.cell, []).append(run.test_score - base[key(run)])
    return gains


def summarise(runs: Sequence[DownstreamRun], baselines: Iterable[DownstreamRun] | None = None) -> list[dict]:
    """One row per cell: mean +- sd of the test score over seeds, the paired gain, mean per-class scores."""
    groups: dict[tuple[float, str, str, int], list[DownstreamRun]] = {}
    for run in runs:
        groups.setdefault(run.cell, []).append(run)
    gains = paired_gains(runs, baselines)
    rows = []
    for cell in sorted(groups, key=_cell_order):
        group = groups[cell]
        scores = [r.test_score for r in group]
        gain = gains.get(cell, [])
        classes = sorted({name for r in group for name in r.test_per_class})
        rows.append({
            "fraction": cell[0], "arm": cell[1], "mode": cell[2], "rounds": cell[3], "seeds": len(group),
            "n_real": int(np.mean([r.n_real for r in group])),
            "n_synthetic": int(np.mean([r.n_synthetic for r in group])),
            "n_extra": int(np.mean([r.n_extra for r in group])),
            "test_mean": float(np.mean(scores)), "test_sd": _sd(scores),
            "gain_mean": float(np.mean(gain)) if gain else None, "gain_sd": _sd(gain) if gain else None,
            "gain_seeds": len(gain), "seeds_gained": sum(g > 0 for g in gain),
            "per_class": {name: float(np.mean([r.test_per_class[name] for r in group if name in r.test_per_class]))
                          for name in classes},
            "generator": ", ".join(sorted({r.generator for r in group if r.generator})),
        })
        pseudo = [r.pseudo_score for r in group if r.pseudo_score is not None]
        if pseudo:
            rows[-1]["pseudo_score"] = float(np.mean(pseudo))  # how right the pseudo-labels were (reported only)
    return rows


def _arm(row: dict) -> str:
    return row.get("arm") or ("real" if row["rounds"] == 0 else "synthetic")  # old summaries have no arm


def cell_name(row: dict) -> str:
    """A short name of a summary row's condition, e.g. ``synthetic x2``, ``extra-real balanced``, ``synthetic
    filtered``, ``real``."""
    arm = _arm(row)
    if arm in ("real", "real-noaug"):
        return arm
    mode = row.get("mode", "rounds")
    return f"{arm} x{row['rounds']}" if mode == "rounds" else f"{arm} {mode}"


def size_series(rows: Sequence[dict], label: str = "", arms: Sequence[str] | None = None,
                ) -> dict[str, list[tuple[float, float, float]]]:
    """Score-vs-training-set-size lines (seed 002, Figure 3) from summary rows (old ones too): real only across
    fractions, and per fraction its real-only point joined to each arm's added tiles (rounds, balanced, filtered);
    ``arms`` limits the added lines to those arms."""
    def point(row: dict) -> tuple[float, float, float]:
        return row["n_real"] + row["n_synthetic"] + row.get("n_extra", 0), row["test_mean"], row["test_sd"]

    suffix = f" ({label})" if label else ""
    real = {row["fraction"]: point(row) for row in rows if _arm(row) == "real"}
    lines: dict[tuple[float, str], list[tuple[float, float, float]]] = {}
    for row in rows:
        if _arm(row) not in ("real", "real-noaug") and (arms is None or _arm(row) in arms):
            name = _arm(row) + ("" if row.get("mode", "rounds") == "rounds" else f" {row['mode']}")
            lines.setdefault((row["fraction"], name), [real[row["fraction"]]] if row["fraction"] in real else [])
            lines[(row["fraction"], name)].append(point(row))
    series = {f"real only{suffix}": sorted(real.values())} if len(real) > 1 else {}
    series.update({f"{fraction:.0%} + {name}{suffix}": points for (fraction, name), points in lines.items()})
    return series
