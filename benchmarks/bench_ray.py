"""Ray generation throughput (1 and 2 workers) against the plain sampler, on the same tiles.

    .venv/bin/python benchmarks/bench_ray.py --model src/histosynth/weights/default --n 8 --labels 0,1,2,3 \\
        --steps 20 --batch 8 --cpus 2

Every run writes the same dataset into a fresh folder under ``--out``: the plain sampler with
``--cpus`` torch threads, Ray with one actor of ``--cpus`` threads (the overhead), and Ray with
``--cpus`` actors of one thread each (the parallel path). Wall times include each actor's start
(process, imports, model load); the local cluster's own start is timed separately. The script
compares every Ray folder with the plain one: byte identity holds when the torch thread counts
match (CPU sums are split by thread); otherwise it reports the largest pixel difference.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from histosynth.distributed.ray_generate import generate_dataset_ray, require_ray  # noqa: E402
from histosynth.io import write_json  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.generate import MaskSource, generate_dataset  # noqa: E402
from histosynth.sampling.sampler import SamplingSettings  # noqa: E402


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _compare(reference: Path, folder: Path) -> dict:
    """Byte identity, and where images differ: the largest pixel difference and the share of pixels."""
    from PIL import Image

    same = _files(folder) == _files(reference)
    largest, changed, total = 0, 0, 0
    for path in sorted((reference / "images").glob("*.png")):
        a = np.asarray(Image.open(path), dtype=np.int16)
        b = np.asarray(Image.open(folder / "images" / path.name), dtype=np.int16)
        largest, changed, total = max(largest, int(np.abs(a - b).max())), changed + int((a != b).sum()), total + a.size
    return {"identical": same, "max_pixel_diff": largest, "pixels_differing": changed / max(total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--n", type=int, default=8, help="tiles per label")
    parser.add_argument("--labels", default="0,1,2,3", help="class ids, comma-separated")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for the plain run and the local Ray cluster")
    parser.add_argument("--out", default="bench_out/ray")
    args = parser.parse_args()

    ray = require_ray()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    labels = [int(x) for x in args.labels.split(",")]
    settings = SamplingSettings(steps=args.steps, guidance=2.0, sampler="ddim", batch_size=args.batch)
    model = LatentDiffusionModel.load(args.model)
    tiles = args.n * len(labels)
    common = dict(n=args.n, labels=labels, masks=MaskSource(), settings=settings, seed=0)
    results: list[dict] = []

    torch.set_num_threads(args.cpus)
    began = time.perf_counter()
    generate_dataset(model, out / "plain", **common)
    plain_s = time.perf_counter() - began
    results.append({"run": f"plain sampler ({args.cpus} threads)", "wall_s": plain_s, "tiles_per_s": tiles / plain_s,
                    "identical": True, "max_pixel_diff": 0, "pixels_differing": 0.0})

    began = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    cluster_s = time.perf_counter() - began
    try:
        for workers, threads in ((1, args.cpus), (args.cpus, 1)):
            folder = out / f"ray_{workers}w"
            began = time.perf_counter()
            generate_dataset_ray(model, folder, **common, workers=workers, cpus_per_worker=threads)
            wall = time.perf_counter() - began
            results.append({"run": f"Ray, {workers} worker(s) x {threads} thread(s)", "wall_s": wall,
                            "tiles_per_s": tiles / wall, **_compare(out / "plain", folder)})
    finally:
        ray.shutdown()

    summary = {"machine": machine(), "ray": ray.__version__, "tiles": tiles, "steps": args.steps,
               "batch": args.batch, "tile_size": model.autoencoder_config.tile_size, "cluster_start_s": cluster_s,
               "runs": results}
    write_json(out / "results.json", summary)
    print(f"{summary['machine']}; ray {ray.__version__}; local cluster start {cluster_s:.1f} s")
    print(f"{tiles} tiles, {args.steps} DDIM steps, CFG 2, batch {args.batch}, "
          f"{summary['tile_size']} px\n")
    print("| run | wall (s) | tiles/s | vs plain | same bytes as plain | max pixel diff | pixels differing |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['wall_s']:.1f} | {r['tiles_per_s']:.2f} | {plain_s / r['wall_s']:.2f}x | "
              f"{'yes' if r['identical'] else 'no'} | {r['max_pixel_diff']} | {100 * r['pixels_differing']:.4f}% |")


if __name__ == "__main__":
    main()
