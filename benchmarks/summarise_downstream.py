"""Summarise downstream grids (B's and D's runs files) into markdown rows and one score-vs-size SVG.

    .venv/bin/python benchmarks/summarise_downstream.py --svg docs/downstream_segmentation.svg \
        sampled=bench_out/downstream/segmentation.runs.jsonl \
        "transfer (masked)=bench_out/transfer/alternate.runs.jsonl" \
        "transfer (unmasked)=bench_out/transfer/plain.runs.jsonl"

For each (fraction, rounds) it prints mean +- sd of the test score over seeds and the paired gain: each
seed's score minus the same seed's real-only (round 0) score, with how many seeds lost. The SVG draws
one line per (runs file, fraction) of test score against training-set size (seed 002, Figure 3).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from histosynth.evaluation.downstream import DownstreamRun, summarise
from histosynth.io import atomic_open
from histosynth.report.svg import line_chart


def load_runs(path: Path) -> list[DownstreamRun]:
    return [DownstreamRun(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def paired_gains(runs: list[DownstreamRun]) -> dict[tuple[float, int], list[float]]:
    """Each run's test score minus its (fraction, seed)'s real-only score, grouped by (fraction, rounds)."""
    base = {(r.fraction, r.seed): r.test_score for r in runs if r.rounds == 0}
    gains: dict[tuple[float, int], list[float]] = defaultdict(list)
    for run in runs:
        if run.rounds and (run.fraction, run.seed) in base:
            gains[(run.fraction, run.rounds)].append(run.test_score - base[(run.fraction, run.seed)])
    return gains


def markdown_rows(runs: list[DownstreamRun]) -> list[str]:
    gains, rows = paired_gains(runs), []
    for row in sorted(summarise(runs), key=lambda r: (r["fraction"], r["rounds"])):
        gain = gains.get((row["fraction"], row["rounds"]))
        text = ""
        if gain:
            sd = float(np.std(gain, ddof=1)) if len(gain) > 1 else 0.0
            text = f"{np.mean(gain):+.3f} +- {sd:.3f} ({sum(g < 0 for g in gain)} of {len(gain)} lower)"
        rows.append(f"| {row['fraction']:g} | {row['rounds']} | {row['n_real']} + {row['n_synthetic']} | "
                    f"{row['test_mean']:.3f} +- {row['test_sd']:.3f} | {text} | {row['seeds']} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=PATH of a runs .jsonl file")
    parser.add_argument("--svg", help="write the score-vs-size chart here")
    args = parser.parse_args(argv)
    series: dict[str, list[tuple[float, float, float]]] = {}
    for spec in args.runs:
        label, _, path = spec.partition("=")
        runs = load_runs(Path(path))
        print(f"## {label} ({path}, {len(runs)} runs)")
        print("| real fraction | rounds | real + synthetic | test | gain vs real only (paired) | seeds |")
        print("|---|---|---|---|---|---|")
        print("\n".join(markdown_rows(runs)))
        for row in summarise(runs):
            series.setdefault(f"{row['fraction']:.0%} real + {label}", []).append(
                (row["n_real"] + row["n_synthetic"], row["test_mean"], row["test_sd"]))
    if args.svg:
        chart = line_chart(series, "training tiles (real + synthetic)", "test score (mean +- sd over seeds)",
                           width=640, height=360, legend="bottom right")
        with atomic_open(Path(args.svg), "w") as handle:
            handle.write(chart + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
