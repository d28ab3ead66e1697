"""B / issue I downstream benchmark: synthetic tiles made from each real subset's own tiles, in a grid of arms.

    .venv/bin/python benchmarks/bench_downstream.py --task classification --fractions 0.05,0.1,0.25,1.0 \
        --rounds 0,1,2,4 --modes rounds,balanced --arms real,real-noaug,synthetic,extra-real --seeds 5 \
        --train-steps 1500 --size 112 --out bench_out/downstream_cls

For every (fraction, seed) subset of the train split (``draw_subset``: whole cases, stratified by class,
the draw of ``histosynth evaluate downstream`` and ``histosynth data subset``) it generates, with the
model, synthetic tiles from each subset tile's own mask and class (tile ``<id>__r<k>``, seeded): ``max(rounds)``
per tile, in balanced mode as many as its class needs to reach the subset's largest class, and in filtered
mode ``--filter-pool`` times that (the grid keeps the ones the real-only model agrees with most). A rerun
resumes. Then the grid runs in "paired" mode: a run adds only tiles made from its own real subset, so no
label or mask layout from outside the subset leaks in through the conditioning.

Leak-free generators: ``--model`` may hold ``{fraction}`` and ``{seed}`` (e.g. ``models/f{fraction}_s{seed}``,
each fine-tuned on ``histosynth data subset --unlabel-rest``); every subset then gets its own folder
``OUT/f<fraction>_s<seed>/synthetic`` made by its own model. Without placeholders one folder serves all
subsets (the shipped model saw every train label: report it as the leaky upper bound).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib, run_main  # noqa: E402
from bench_quality import DEFAULT_DATA, generate_from_train  # noqa: E402

from histosynth.data.manifest import TileRecord, load_manifest  # noqa: E402
from histosynth.data.splits import draw_subset  # noqa: E402
from histosynth.evaluation.downstream import DownstreamConfig, run_downstream, summarise  # noqa: E402
from histosynth.evaluation.downstream_summary import cell_name  # noqa: E402
from histosynth.io import write_json  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.settings import SAMPLERS, SamplingSettings  # noqa: E402
from histosynth.sampling.variations import plan_variations  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402

DEFAULTS = SamplingSettings()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default",
                        help="model folder; may hold {fraction} and {seed} (one leak-free model per subset)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="manifest with train, val and test splits")
    parser.add_argument("--task", choices=["segmentation", "classification"], default="segmentation")
    parser.add_argument("--fractions", default="0.1")
    parser.add_argument("--rounds", default="0,1,2,4")
    parser.add_argument("--modes", default="rounds", help="comma-separated: rounds, balanced, filtered")
    parser.add_argument("--filter-pool", type=int, default=2,
                        help="filtered mode: synthetic tiles made per tile the balanced top-up keeps")
    parser.add_argument("--arms", default="real,synthetic", help="of real, real-noaug, synthetic, pseudo-label, extra-real")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--size", type=int, default=96, help="px the small models train at")
    parser.add_argument("--checkpoint", choices=["last", "val"], default="last")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=DEFAULTS.guidance)
    parser.add_argument("--sampler", choices=SAMPLERS, default=DEFAULTS.sampler)
    parser.add_argument("--strength", type=float, default=DEFAULTS.strength,
                        help="below 1: each synthetic tile is an SDEdit variation of its source tile (the share of "
                             "the schedule run from it noised); 1 = from pure noise")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="base sampling seed")
    parser.add_argument("--out", default="bench_out/downstream")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--generate-only", action="store_true", help="make the synthetic tiles, skip the grid")
    return parser.parse_args(argv)


def tiles_per_source(subset: list[TileRecord], rounds: int, balanced: bool, pool: int = 1) -> dict[str, int]:
    """Synthetic tiles each subset tile must have: ``rounds``, or more where balanced mode needs them
    (``pool`` times more for filtered mode, which keeps the best of them)."""
    counts = Counter(r.label for r in subset)
    top = max(counts.values())
    return {r.id: max(rounds, pool * math.ceil((top - counts[r.label]) / counts[r.label]) if balanced else 0)
            for r in subset}


def generate(args: argparse.Namespace, model_path: str, subsets: list[list[TileRecord]], config: DownstreamConfig,
             folder: Path) -> int:
    """Make (or resume) the synthetic tiles ``subsets`` need with one model into ``folder``; returns their count."""
    model = LatentDiffusionModel.load(model_path)
    train_m = load_manifest(args.data, classes=model.classes).select_split("train")
    need: dict[str, int] = {}
    for subset in subsets:
        for tile_id, n in tiles_per_source(subset, max(config.rounds), bool({"balanced", "filtered"} & set(config.modes)),
                                         args.filter_pool if "filtered" in config.modes else 1).items():
            need[tile_id] = max(need.get(tile_id, 0), n)
    train = load_tile_tensors(train_m, model.autoencoder_config.tile_size)
    index_of = {tile_id: i for i, tile_id in enumerate(train.ids)}
    sources = [index_of[t] for t in sorted(need, key=index_of.get) if bool(train.mask_known[index_of[t]])]
    items = plan_variations(train, need, args.seed, sources)
    print(f"{model_path}: {len(sources)} real tiles, {len(items)} synthetic tiles to hold in {folder}", flush=True)
    generate_from_train(model, train, items, args, folder)
    return len(items)


def run(args: argparse.Namespace, command: str) -> dict:
    out = Path(args.out)
    config = DownstreamConfig(task=args.task, fractions=tuple(float(v) for v in args.fractions.split(",")),
                              rounds=tuple(int(v) for v in args.rounds.split(",")), seeds=args.seeds,
                              steps=args.train_steps, size=args.size, checkpoint=args.checkpoint, pairing="paired",
                              arms=tuple(args.arms.split(",")), modes=tuple(args.modes.split(",")))
    leak_free = "{" in args.model
    synthetic = out / "f{fraction}_s{seed}" / "synthetic" if leak_free else out / "synthetic"
    start, timings = time.perf_counter(), {}
    train = load_manifest(args.data).select_split("train").records
    cells = [(f, s, draw_subset(train, f, s, config.task)) for f in config.fractions for s in range(config.seeds)]
    n_synthetic = 0
    if "synthetic" in config.arms and leak_free:
        for fraction, seed, subset in cells:
            n_synthetic += generate(args, args.model.format(fraction=fraction, seed=seed), [subset], config,
                                    Path(str(synthetic).format(fraction=fraction, seed=seed)))
    elif "synthetic" in config.arms:
        n_synthetic = generate(args, args.model, [subset for _, _, subset in cells], config, synthetic)
    timings["generate"] = round(time.perf_counter() - start, 1)
    result = {"command": command, "machine": machine(), "model": args.model, "n_synthetic": n_synthetic}
    if not args.generate_only:
        clock = time.perf_counter()
        runs = run_downstream(args.data, synthetic, config, out / f"{args.task}.runs.jsonl", device=args.device,
                              on_run=lambda r: print(f"run {r.fraction:g}/{r.arm}/{r.mode}/{r.rounds}/{r.seed}: "
                                                     f"{r.n_real} real + {r.n_synthetic} synthetic + {r.n_extra} "
                                                     f"extra, test {r.test_score:.3f} ({r.seconds:.0f} s)", flush=True))
        timings["grid"] = round(time.perf_counter() - clock, 1)
        result.update(config=config.model_dump(mode="json"), summary=summarise(runs))
    result.update(timings_s=timings, peak_rss_mib=round(peak_rss_mib()))
    write_json(out / f"downstream_{args.task}.json", result)
    if "summary" in result and not leak_free and (synthetic / "manifest.csv").is_file():
        write_json(synthetic / "audit" / f"downstream_{args.task}.json", result)  # drawn by `histosynth report`
    return result


def main(argv: list[str] | None = None) -> int:
    done = run_main(argv, parse_args, run, __file__)
    if isinstance(done, int):
        return done
    args, result = done
    for row in result.get("summary", []):
        print(f"fraction {row['fraction']:g} {cell_name(row)} ({row['n_real']} real + {row['n_synthetic']} synthetic "
              f"+ {row['n_extra']} extra): test {row['test_mean']:.3f} +- {row['test_sd']:.3f} over {row['seeds']} seeds")
    print(json.dumps({k: result[k] for k in ("timings_s", "peak_rss_mib")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
