"""Feature encoders: cost (seconds per 1,000 tiles) and what they see (a linear probe of the class).

    .venv/bin/python benchmarks/bench_encoders.py --encoders inception,efficientnet-lite0,histology,pixels

For each registered encoder: wall time to encode the first 256 EBHI-Seg test tiles (224 px, batch 32,
no cache) as seconds per 1,000 tiles; then features of all train and test tiles (cached), a logistic-
regression probe of the six diagnostic classes fitted on train and scored on test (balanced accuracy),
and the FID between real train and test in that encoder's space (the floor the fidelity audit reports).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402

from histosynth.data.images import read_rgb  # noqa: E402
from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.encoders.features import image_features  # noqa: E402
from histosynth.encoders.registry import get_encoder  # noqa: E402
from histosynth.evaluation.fidelity import frechet_distance  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ebhi-seg" / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--encoders", default="inception,efficientnet-lite0,histology,pixels")
    parser.add_argument("--cache", default="bench_out/feature_cache")
    parser.add_argument("--timed", type=int, default=256)
    args = parser.parse_args()
    if not Path(args.data).exists():
        sys.exit(f"skipped: {args.data} not found (shared EBHI-Seg data)")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    manifest = load_manifest(args.data)
    train, test = manifest.select_split("train"), manifest.select_split("test")
    timed = [read_rgb(r.image) for r in test.records[: args.timed]]
    print(f"machine: {machine()}")
    print("| encoder | dim | s / 1,000 tiles | probe balanced accuracy (6 classes, test) | FID train vs test |")
    print("|---|---|---|---|---|")
    for name in args.encoders.split(","):
        encoder = get_encoder(name)
        encoder.encode(timed[:32])  # warm-up (lazy weights, allocator)
        start = time.perf_counter()
        encoder.encode(timed)
        per_thousand = (time.perf_counter() - start) / len(timed) * 1000
        f_train = image_features(encoder, [r.image for r in train.records], args.cache)
        f_test = image_features(encoder, [r.image for r in test.records], args.cache)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        probe.fit(f_train, train.label_ids())
        accuracy = balanced_accuracy_score(test.label_ids(), probe.predict(f_test))
        print(f"| {name} (`{encoder.identity}`) | {encoder.dim} | {per_thousand:.1f} | {accuracy:.3f} | "
              f"{frechet_distance(f_train, f_test):.4g} |", flush=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
