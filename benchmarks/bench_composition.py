"""Cell-type composition on her2st-spots: mean Pearson r per model under leave-one-section-out and
leave-one-patient-out, for the major (8) and minor (22) Stereoscope types, with fit times.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_composition.py --encoders histology

For each encoder the 1,015 spot tiles are embedded once (cached in bench_out/composition/feature_cache).
For each tier and each CV scheme, every model (ridge, mlp, neighbourhood) is fitted on all groups but
one and scored on the held-out one: per-type Pearson r / Spearman rho across the spots of each held-out
section, averaged over sections, then over types; the share of types with r > 0.3. Sections of one
patient are serial sections of one tumour, so leave-one-section-out leaks the patient; leave-one-patient-
out (2 folds: B = B4; C = C2-C5) does not. Fit times are CPU seconds of the process (robust to other
jobs on the machine; with 1 thread they equal wall time on an idle core): mean per CV fold, and the
median of ``--repeats`` fits on all 1,015 spots. Nothing trained here is saved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402

from histosynth.composition.crossval import cross_validate  # noqa: E402
from histosynth.composition.embed import embed_spots  # noqa: E402
from histosynth.composition.inputs import load_spots  # noqa: E402
from histosynth.composition.modelfolder import fit_composition  # noqa: E402
from histosynth.composition.models import MODEL_KINDS, RegressorSettings  # noqa: E402
from histosynth.encoders.registry import get_encoder  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "her2st-spots" / "spots.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--encoders", default="histology", help="comma-separated registry names")
    parser.add_argument("--tiers", default="major,minor")
    parser.add_argument("--out", default="bench_out/composition")
    parser.add_argument("--repeats", type=int, default=3, help="full-data fits per model (the median is reported)")
    parser.add_argument("--maps", action="store_true", help="also draw maps (major tier, leave-one-section-out)")
    args = parser.parse_args()
    if not Path(args.data).exists():
        sys.exit(f"skipped: {args.data} not found (internal her2st-spots data)")
    out = Path(args.out)
    settings = RegressorSettings()
    print(f"machine: {machine()}")
    print(f"settings: {settings.model_dump_json()}")
    results = []
    print("| encoder | tier (types) | CV | model | mean Pearson r | mean Spearman rho | types r > 0.3 | "
          "fit CPU s / fold | fit CPU s, all 1,015 spots |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.encoders.split(","):
        encoder = get_encoder(name)
        for tier in args.tiers.split(","):
            table = load_spots(args.data, f"{tier}:*")
            start = time.process_time()
            features = embed_spots(table, encoder, out / "feature_cache")
            embed_s = time.process_time() - start
            warm = slice(0, 64)  # first calls pay imports and allocator warm-up; keep them out of the timings
            fit_composition(features[warm], table.targets[warm], table.coords[warm], table.sections[warm],
                            list(MODEL_KINDS), settings.model_copy(update={"epochs": 1}), True)
            repeats = [fit_composition(features, table.targets, table.coords, table.sections, list(MODEL_KINDS),
                                       settings, True)[1] for _ in range(args.repeats)]
            full_fit = {kind: float(np.median([r[kind] for r in repeats])) for kind in MODEL_KINDS}
            for by in ("section", "patient"):
                evaluation = cross_validate(features, table.targets, table.sections, table.groups(by), table.coords,
                                            list(MODEL_KINDS), settings, True, table.target_names, by)
                for row in evaluation.summary():
                    row.update(encoder=encoder.identity, tier=tier, types=len(table.target_names), cv=by,
                               fit_seconds_all=full_fit[row["model"]], embed_seconds=embed_s)
                    results.append(row)
                    print(f"| {name} | {tier} ({row['types']}) | leave-one-{by}-out | {row['model']} | "
                          f"{row['mean_pearson']:.3f} | {row['mean_spearman']:.3f} | "
                          f"{row['frac_types_r_gt_0.3']:.0%} | {row['fit_seconds_mean']:.2f} | "
                          f"{row['fit_seconds_all']:.2f} |", flush=True)
                if args.maps and by == "section" and tier == args.tiers.split(",")[0]:
                    from histosynth.composition.report import write_evaluation

                    write_evaluation(out / f"eval_{name}_{tier}", table, evaluation, maps=True)
            ratio = full_fit["mlp"] / full_fit["neighbourhood"]
            print(f"| {name} | {tier} | fit-time ratio mlp / neighbourhood (all spots) | {ratio:.2f} | "
                  f"embedding {embed_s:.1f} CPU s (~0 when cached) |||||", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": machine(), "rows": results}, indent=2))
    mlp_vs_nb = [r["fit_seconds_mean"] for r in results if r["model"] == "mlp"]
    nb = [r["fit_seconds_mean"] for r in results if r["model"] == "neighbourhood"]
    print(f"mean fit-time ratio mlp / neighbourhood over CV folds: {np.mean(np.array(mlp_vs_nb) / np.array(nb)):.2f}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
