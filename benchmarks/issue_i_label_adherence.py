"""Issue I diagnostic: do synthetic tiles carry the class they were conditioned on?

    .venv/bin/python benchmarks/issue_i_label_adherence.py \
        "leak-free 10%=bench_out/issue_i/leakfree/bench/f0.1_s{seed}/synthetic" --seeds 5 \
        --out bench_out/issue_i/label_adherence.json

A judge classifier, trained once on **all** real train tiles (the downstream grid's 100% real arm: the small
CNN at 112 px, 1,500 steps, classic augmentation, last weights, training seed 0; cached under
bench_out/classifiers), labels the real test tiles (its recall per class: the yardstick) and every tile of
each synthetic folder. A synthetic tile adheres when the judge gives it the class it was conditioned on. Per
class, adherence is the share of that class's synthetic tiles the judge puts in it; beside it, the judge's
recall on real test tiles of the class, which bounds what a faithful generator could score. The judge saw
labels no scarce-label generator saw: it is a measuring instrument here, never a training input. A folder
path may hold ``{seed}``: its seeds' folders are pooled into one row and also given one row each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cached_classifier, machine, peak_rss_mib, run_main  # noqa: E402

from histosynth.data.manifest import TileManifest, load_manifest  # noqa: E402
from histosynth.evaluation.audit import load_synthetic  # noqa: E402
from histosynth.evaluation.classification import (  # noqa: E402
    ClassifierTrainConfig, balanced_accuracy, predict_labels, recall_per_class,
)
from histosynth.io import write_json  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ebhi-seg" / "manifest.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="LABEL=FOLDER of a synthetic dataset; FOLDER may hold {seed}")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="real manifest with train and test splits")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 filled into {seed}")
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path("bench_out/issue_i/label_adherence.json"))
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def score(judge: torch.nn.Module, manifest: TileManifest, tile_size: int, labels: list[str]) -> dict:
    """Share of each class's tiles the judge puts in that class, and their class-balanced mean."""
    tiles = load_tile_tensors(manifest, tile_size, resize=True)
    known = tiles.labels < len(labels)
    predicted, target = predict_labels(judge, tiles.images[known]), tiles.labels[known].numpy()
    return {"n": int(known.sum()), "balanced": balanced_accuracy(predicted, target),
            "per_class": recall_per_class(predicted, target, labels),
            "called_as": called_as(predicted, target, labels),
            "count_per_class": {labels[c]: int((target == c).sum()) for c in sorted(set(target.tolist()))}}


def called_as(predicted: np.ndarray, target: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """For each conditioning class, the share of its tiles the judge gives each class (rows of a confusion matrix)."""
    return {labels[c]: {labels[p]: float((predicted[target == c] == p).mean())
                        for p in sorted(set(predicted[target == c].tolist()))}
            for c in sorted(set(target.tolist()))}


def run(args: argparse.Namespace, command: str) -> dict:
    manifest = load_manifest(args.data)
    labels = manifest.classes.labels
    train_m = manifest.select_split("train")
    train = load_tile_tensors(train_m, args.tile_size, resize=True)
    keep = train.labels < len(labels)
    config = ClassifierTrainConfig(size=args.size, steps=args.train_steps, seed=0)
    started = time.perf_counter()
    judge = cached_classifier(train.images[keep], train.labels[keep], len(labels), config, device=args.device)
    result: dict = {"command": command, "machine": machine(), "judge": {"config": config.model_dump(),
                                                                        "train_tiles": int(keep.sum())},
                    "real test": score(judge, manifest.select_split("test"), args.tile_size, labels), "synthetic": {}}
    for spec in args.folders:
        name, _, template = spec.partition("=")
        folders = [template.format(seed=s) for s in range(args.seeds)] if "{seed}" in template else [template]
        records, generators = [], []
        for seed, folder in enumerate(folders):
            synth = load_synthetic(folder)
            records += synth.records
            generators += sorted({r.extra.get("model", "") for r in synth.records} - {""})
            if len(folders) > 1:
                result["synthetic"][f"{name}, seed {seed}"] = score(
                    judge, TileManifest(synth.source, synth.records, manifest.classes), args.tile_size, labels)
        pooled = score(judge, TileManifest(Path(folders[0]), records, manifest.classes), args.tile_size, labels)
        result["synthetic"][name] = {**pooled, "folders": folders, "generators": generators}
    result.update(seconds=round(time.perf_counter() - started, 1), peak_rss_mib=round(peak_rss_mib()))
    write_json(args.out, result)
    return result


def markdown(result: dict, labels: list[str]) -> list[str]:
    rows = ["| tiles | n | " + " | ".join(labels) + " | class-balanced |", "|---|---|" + "---|" * (len(labels) + 1)]
    for name, entry in [("real test (judge recall)", result["real test"]), *result["synthetic"].items()]:
        cells = [f"{entry['per_class'][c]:.3f}" if c in entry["per_class"] else "" for c in labels]
        rows.append(f"| {name} | {entry['n']} | " + " | ".join(cells) + f" | {entry['balanced']:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    done = run_main(argv, parse_args, run, __file__)
    if isinstance(done, int):
        return done
    args, result = done
    print("\n".join(markdown(result, load_manifest(args.data).classes.labels)))
    print(json.dumps({k: result[k] for k in ("seconds", "peak_rss_mib")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
