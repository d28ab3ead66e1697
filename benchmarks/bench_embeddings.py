"""Embedding throughput per encoder (tiles/s) and prototype (k-means + elbow) time against the number of tiles.

    .venv/bin/python benchmarks/bench_embeddings.py --encoders pixels,histology,efficientnet-lite0,phikon,uni,conch
    .venv/bin/python benchmarks/bench_embeddings.py --skip-encoders --kmeans-tiles 1000,5000,20000

Throughput: ``FeatureEncoder.encode`` on 224 px uint8 tiles (EBHI-Seg test tiles when the shared data is
there, else random tiles: the cost does not depend on the content), after one warm-up batch, as tiles/s
over ``--tiles`` tiles in batches of ``--batch``. The foundation encoders are built at full size with
random weights (no weights file needed to time an architecture): UNI = ViT-L/16, UNI2-h = ViT-g/14 variant,
Virchow(2) = ViT-H/14, Phikon = ViT-B/16, CONCH = ViT-B/16 at 448 px + its pooler.

k-means: :func:`fit_prototypes` (k = 1..10 per group, elbow, n_init 3) on 1024-d Gaussian blobs with 6
centres, one group, with the default uniform subsample (``--max-fit 5000``) and without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ebhi-seg" / "manifest.csv"
FOUNDATION = ("uni", "uni2-h", "conch", "phikon", "virchow", "virchow2")


def _tiles(n: int, data: Path) -> tuple[list[np.ndarray], str]:
    if data.is_file():
        from histosynth.data.images import read_rgb
        from histosynth.data.manifest import load_manifest

        records = load_manifest(data).select_split("test").records[:n]
        tiles = [read_rgb(r.image) for r in records]
        if len(tiles) == n and all(t.shape == (224, 224, 3) for t in tiles):
            return tiles, "EBHI-Seg test tiles"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n)], "random tiles"


def _encoder(name: str):
    if name in FOUNDATION:
        from histosynth.encoders.foundation import FOUNDATION_SPECS, FoundationEncoder

        return FoundationEncoder(FOUNDATION_SPECS[name], "cpu", weights=None)  # full size, random weights
    from histosynth.encoders.registry import get_encoder

    return get_encoder(name)


def bench_encoders(names: list[str], n: int, batch: int, data: Path) -> None:
    tiles, source = _tiles(n, data)
    print(f"\n{n} {source} at 224 px, batch {batch}, after one warm-up batch\n")
    print("| encoder | dim | params (M) | build (s) | tiles/s | s / tile |")
    print("|---|---|---|---|---|---|")
    for name in names:
        start = time.perf_counter()
        encoder = _encoder(name)
        build = time.perf_counter() - start
        net = getattr(encoder, "net", None) or getattr(encoder, "model", None) or getattr(encoder, "_net", None)
        params = sum(p.numel() for p in net.parameters()) / 1e6 if hasattr(net, "parameters") else 0.0
        encoder.encode(tiles[:batch], batch)
        start = time.perf_counter()
        encoder.encode(tiles, batch)
        wall = time.perf_counter() - start
        print(f"| {name} | {encoder.dim} | {params:.1f} | {build:.1f} | {n / wall:.2f} | {wall / n:.3f} |", flush=True)
        del encoder, net


def bench_kmeans(sizes: list[int], dim: int, max_fit: int) -> None:
    from sklearn.datasets import make_blobs

    from histosynth.embeddings.prototypes import fit_prototypes

    print(f"\nk-means + elbow (k = 1..10, n_init 3), {dim}-d blobs with 6 centres, one group\n")
    print("| tiles | subsample | fitted | k chosen | fit + assign (s) |")
    print("|---|---|---|---|---|")
    for n in sizes:
        X, _ = make_blobs(n_samples=n, centers=6, n_features=dim, cluster_std=4.0, random_state=0)
        X = X.astype(np.float32)
        for limit in (max_fit, n):
            if limit == n and n > 20000:
                continue  # without subsampling, too slow to be worth measuring here
            start = time.perf_counter()
            found = fit_prototypes(X, ["all"] * n, k_max=10, max_fit=limit, seed=0)
            found.assign(X, ["all"] * n)
            wall = time.perf_counter() - start
            curve = found.curves[0]
            label = f"{limit}" if limit < n else "none"
            print(f"| {n} | {label} | {curve.n_fit} | {curve.k} | {wall:.1f} |", flush=True)
            if limit >= n:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="pixels,histology,efficientnet-lite0,phikon,conch,uni,virchow,uni2-h")
    parser.add_argument("--tiles", type=int, default=8, help="Tiles timed per encoder (after the warm-up batch).")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--skip-encoders", action="store_true")
    parser.add_argument("--kmeans-tiles", default="1000,5000,20000")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--max-fit", type=int, default=5000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.skip_encoders:
        bench_encoders(args.encoders.split(","), args.tiles, args.batch, Path(args.data))
    if args.kmeans_tiles:
        bench_kmeans([int(s) for s in args.kmeans_tiles.split(",")], args.dim, args.max_fit)
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
