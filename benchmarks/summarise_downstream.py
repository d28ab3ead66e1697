"""Summarise downstream grids (runs files of `evaluate downstream`, bench_downstream, bench_transfer) for the docs.

    .venv/bin/python benchmarks/summarise_downstream.py --svg docs/downstream_{task}.svg \
        --classes "Normal,Serrated adenoma" \
        leak-free=bench_out/downstream_cls/classification.runs.jsonl \
        "shipped model (leaky upper bound)=bench_out/downstream_cls_leaky/classification.runs.jsonl"

Per runs file, one markdown table with a row per cell (real fraction x arm x rounds / balanced): mean +- sd
of the test score over seeds, and the paired gain: each seed's score minus the same seed's real-only
(``real`` arm) score, mean +- sd and how many seeds gained. Real-only runs are looked up in every file
given (same task, training settings, fraction and seed), so a file holding only synthetic runs still
pairs. Then the per-class test scores (recall for classification) of ``--classes`` (default: all).
The SVG draws test score against training-set size (seed 002, Figure 3), one chart per task when the
path holds ``{task}``. Old runs files (before arms) read as real (round 0) and synthetic rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from histosynth.evaluation.downstream_runs import DownstreamRun, read_runs
from histosynth.evaluation.downstream_summary import cell_name, size_series, summarise
from histosynth.io import atomic_open
from histosynth.report.svg import line_chart

METRIC = {"classification": "balanced accuracy", "segmentation": "Dice"}


def load_runs(path: Path) -> list[DownstreamRun]:
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such runs file")
    return read_runs(path, repair=False)


def markdown_rows(runs: list[DownstreamRun], baselines: list[DownstreamRun] | None = None) -> list[str]:
    rows = []
    for row in summarise(runs, baselines):
        gain = "" if row["gain_mean"] is None else (
            f"{row['gain_mean']:+.3f} +- {row['gain_sd']:.3f} ({row['seeds_gained']} of {row['gain_seeds']} gained)")
        rows.append(f"| {row['fraction']:g} | {cell_name(row)} | {row['n_real']} + {row['n_synthetic']} + "
                    f"{row['n_extra']} | {row['test_mean']:.3f} +- {row['test_sd']:.3f} | {gain} | {row['seeds']} |")
    return rows


def class_rows(runs: list[DownstreamRun], classes: list[str] | None) -> tuple[list[str], list[str]]:
    """(class names, markdown rows) of the mean per-class test score per cell; empty when runs hold none."""
    summary = summarise(runs)
    names = classes or sorted({name for row in summary for name in row["per_class"]})
    rows = [f"| {row['fraction']:g} | {cell_name(row)} | "
            + " | ".join(f"{row['per_class'][n]:.3f}" if n in row["per_class"] else "" for n in names) + " |"
            for row in summary if row["per_class"]]
    return names, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=PATH of a runs .jsonl file")
    parser.add_argument("--svg", help="write the score-vs-size chart here ({task} in the name: one per task)")
    parser.add_argument("--classes", default="", help="comma-separated classes for the per-class table (default all)")
    parser.add_argument("--svg-arms", default="synthetic,extra-real",
                        help="arms drawn as lines from each fraction's real-only point (comma-separated)")
    args = parser.parse_args(argv)
    files = [(label, Path(path), load_runs(Path(path))) for label, _, path in (s.partition("=") for s in args.runs)]
    everything = [run for _, _, runs in files for run in runs]
    charts: dict[str, dict] = {}
    for label, path, runs in files:
        tasks = sorted({r.task or "?" for r in runs})
        generators = sorted({r.generator for r in runs if r.generator}) or ["-"]
        print(f"## {label} ({path}, {len(runs)} runs; task {', '.join(tasks)}; generator {', '.join(generators)})")
        print("| real fraction | arm | real + synthetic + extra real | test | paired gain vs real only | seeds |")
        print("|---|---|---|---|---|---|")
        print("\n".join(markdown_rows(runs, everything)))
        pseudo = [f"{row['fraction']:g} {cell_name(row)} {row['pseudo_score']:.3f}" for row in summarise(runs) if "pseudo_score" in row]
        if pseudo:
            what = "accuracy of the added tiles' labels" if "classification" in tasks else "Dice of the added masks"
            print(f"\nPseudo-labels right ({what} against the truth, mean over seeds): {', '.join(pseudo)}")
        names, rows = class_rows(runs, [c.strip() for c in args.classes.split(",") if c.strip()] or None)
        if rows:
            print(f"\nPer-class test score ({'recall' if 'classification' in tasks else 'Dice by tile class'}, "
                  "mean over seeds):\n")
            print("| real fraction | arm | " + " | ".join(names) + " |")
            print("|---|---|" + "---|" * len(names))
            print("\n".join(rows))
        print()
        for task in tasks:
            task_runs = [r for r in runs if (r.task or "?") == task]
            charts.setdefault(task, {}).update(size_series(summarise(task_runs, everything), label,
                                                           args.svg_arms.split(",")))
    if args.svg:
        if len(charts) > 1 and "{task}" not in args.svg:
            raise SystemExit("error: the runs hold several tasks; put {task} in --svg")
        for task, series in charts.items():
            chart = line_chart(series, "training tiles (real + added)",
                               f"test {METRIC.get(task, 'score')} (mean +- sd over seeds)",
                               width=720, height=420, legend="bottom right")
            with atomic_open(Path(args.svg.format(task=task)), "w") as handle:
                handle.write(chart + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
