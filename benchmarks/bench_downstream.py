"""B downstream benchmark, seed-002 protocol: synthetic tiles made from each real subset's own masks.

    .venv/bin/python benchmarks/bench_downstream.py --fractions 0.1 --rounds 0,1,2,4 --seeds 2 --train-steps 300

For every (fraction, seed) subset of the train split (whole cases, stratified by class) it generates,
with the model, ``max(rounds)`` synthetic tiles per real tile of the subset, from that tile's mask and
class (tile ``<id>__r<k>``, seeded), into ``--out``/synthetic; a rerun resumes. Then it runs the
downstream grid in "paired" mode: a run with k rounds adds exactly the first k synthetic tiles made from
each of its own real tiles, so no mask layout from outside the subset leaks in. Training runs resume too.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402
from bench_quality import DEFAULT_DATA, generate_from_train  # noqa: E402

from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.data.splits import subsample_by_case  # noqa: E402
from histosynth.errors import HistosynthError  # noqa: E402
from histosynth.sampling.settings import SAMPLERS  # noqa: E402
from histosynth.evaluation.downstream import DownstreamConfig, run_downstream, summarise  # noqa: E402
from histosynth.io import write_json  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="manifest with train, val and test splits")
    parser.add_argument("--task", choices=["segmentation", "classification"], default="segmentation")
    parser.add_argument("--fractions", default="0.1")
    parser.add_argument("--rounds", default="0,1,2,4")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--sampler", choices=SAMPLERS, default="dpm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="base sampling seed")
    parser.add_argument("--out", default="bench_out/downstream")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--generate-only", action="store_true", help="make the synthetic tiles, skip the grid")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> dict:
    out = Path(args.out)
    fractions = [float(v) for v in args.fractions.split(",")]
    rounds = [int(v) for v in args.rounds.split(",")]
    timings: dict[str, float] = {}
    start = time.perf_counter()

    model = LatentDiffusionModel.load(args.model)
    manifest = load_manifest(args.data, classes=model.classes)
    train_m = manifest.select_split("train")
    needed: set[str] = set()
    for fraction in fractions:
        for seed in range(args.seeds):
            subset = subsample_by_case(train_m.records, fraction, seed) if fraction < 1 else train_m.records
            needed.update(r.id for r in subset)
    train = load_tile_tensors(train_m, model.autoencoder_config.tile_size)
    index_of = {tile_id: i for i, tile_id in enumerate(train.ids)}
    sources = [i for i in sorted(index_of[t] for t in needed) if bool(train.mask_known[i])]
    items = [(f"{train.ids[j]}__r{k}", j, args.seed + k * len(train) + j)
             for k in range(max(rounds)) for j in sources]  # round-major: the first k per source are rounds < k
    print(f"{len(sources)} real tiles in the subsets, {len(items)} synthetic tiles to hold", flush=True)
    generate_from_train(model, train, items, args, out / "synthetic")
    timings["generate"] = round(time.perf_counter() - start, 1)
    result = {"command": command, "machine": machine(), "n_sources": len(sources), "n_synthetic": len(items)}
    if not args.generate_only:
        config = DownstreamConfig(task=args.task, fractions=tuple(fractions), rounds=tuple(rounds), seeds=args.seeds,
                                  steps=args.train_steps, pairing="paired")
        clock = time.perf_counter()
        runs = run_downstream(args.data, out / "synthetic", config, out / f"{args.task}.runs.jsonl",
                              on_run=lambda r: print(f"run {r.fraction:g}/{r.rounds}/{r.seed}: {r.n_real} real + "
                                                     f"{r.n_synthetic} synthetic, test {r.test_score:.3f} "
                                                     f"({r.seconds:.0f} s)", flush=True))
        timings["grid"] = round(time.perf_counter() - clock, 1)
        result.update(config=config.model_dump(mode="json"), summary=summarise(runs))
    result.update(timings_s=timings, peak_rss_mib=round(peak_rss_mib()))
    write_json(out / f"downstream_{args.task}.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    try:
        result = run(args, command)
    except HistosynthError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in result.get("summary", []):
        print(f"fraction {row['fraction']:g} + {row['rounds']} rounds ({row['n_real']} real + {row['n_synthetic']} "
              f"synthetic): test {row['test_mean']:.3f} +- {row['test_sd']:.3f} over {row['seeds']} seeds")
    print(json.dumps({k: result[k] for k in ("timings_s", "peak_rss_mib")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
