"""Files of a composition evaluation: metrics JSON, per-type and prediction CSVs, a Markdown table, maps."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.composition.crossval import Evaluation
from histosynth.composition.inputs import SpotTable
from histosynth.io import atomic_open, write_json


def summary_markdown(evaluation: Evaluation) -> str:
    """The one table: a row per model with mean r, mean rho, share of types with r > 0.3 and fit time."""
    lines = [f"leave-one-{evaluation.by}-out over {len(evaluation.folds)} folds, {len(evaluation.target_names)} "
             "types (scores per held-out section, averaged)", "",
             "| model | mean Pearson r | mean Spearman rho | types with r > 0.3 | fit CPU s / fold |",
             "|---|---|---|---|---|"]
    for row in evaluation.summary():
        lines.append(f"| {row['model']} | {row['mean_pearson']:.3f} | {row['mean_spearman']:.3f} | "
                     f"{row['frac_types_r_gt_0.3']:.0%} | {row['fit_seconds_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def write_evaluation(out: str | Path, table: SpotTable, evaluation: Evaluation, maps: bool = True,
                     extra: dict[str, Any] | None = None) -> Path:
    """Write ``metrics.json``, ``summary.md``, ``per_type.csv``, ``predictions.csv`` and ``maps/``; returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {**(extra or {}), "normalised": table.normalised, "n_spots": len(table),
                                      **evaluation.to_dict()})
    with atomic_open(out / "summary.md", "w", encoding="utf-8") as handle:
        handle.write(summary_markdown(evaluation))
    with atomic_open(out / "per_type.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "type", "pearson", "spearman"])
        writer.writeheader()
        writer.writerows(evaluation.per_type())
    with atomic_open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        models = list(evaluation.predictions)
        writer.writerow(["spot_id", "section", "patient"] + [f"true:{t}" for t in table.target_names]
                        + [f"{m}:{t}" for m in models for t in table.target_names])
        for i, spot in enumerate(table.ids):
            values = list(table.targets[i]) + [v for m in models for v in evaluation.predictions[m][i]]
            writer.writerow([spot, table.sections[i], table.patients[i]] + [f"{v:.6g}" for v in values])
    if maps and table.coords is not None:
        from histosynth.composition.maps import write_maps

        pearson = {m: np.asarray(evaluation.pearson[m]) for m in evaluation.predictions}
        write_maps(out / "maps", table.coords, table.sections, table.targets, evaluation.predictions,
                   table.target_names, pearson)
    return out
