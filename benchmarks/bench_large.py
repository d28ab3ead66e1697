"""C benchmark: large images by random-patch (and its greedy / offset-grid plans) vs sliding-window vs
MultiDiffusion, decoders, memory.

    .venv/bin/python benchmarks/bench_large.py --sizes 1024,2048 --steps 10 --out bench_out/large

1. Samplers: for each size and method, one `generate_large_image` run (generated mask, same seed and
   DDIM steps for all) in its own process, so peak RSS is that run's: window evaluations per
   megapixel, wall time per megapixel (whole command and latent stage), peak memory, and the seam
   score of the decoded image on the boundaries where that sampler's windows had edges (weighted by
   how often), against the other lines of the 16 px latent/mask-cell lattice (1.0 = no seams).
   Then window evaluations per megapixel at ``--plan-sizes`` from the window plans alone (exact).
2. Decoders: one random-patch latent at ``--decoder-size`` decoded by the Hann four-grid decoder,
   naive tiles, diffusers' tiled decode and whole (the autoencoder is fully convolutional, so a
   whole decode is the no-tiling reference); seam score on each decoder's own tile edges and on the
   naive grid.
3. Memory scaling: peak RSS of a 1-step random-patch run at each of ``--memory-sizes``.
4. Masks: per class, tile-sized masks from the mask model (one window, 20 levels) vs the val split's
   masks on the same 16 px cell grid: gland fraction and connected gland regions per mask.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402

MODEL = "src/histosynth/weights/default"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--methods", default="random-patch,sliding-window,multidiffusion")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--label", default="Adenocarcinoma")
    parser.add_argument("--decoder-size", type=int, default=1024)
    parser.add_argument("--memory-sizes", default="1024,4096")
    parser.add_argument("--plan-sizes", default="1024,2048,4096")
    parser.add_argument("--out", default="bench_out/large")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler runs (noise, windows, mask)")
    parser.add_argument("--child", nargs=3, metavar=("SIZE", "METHOD", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: samplers,plans,decoders,masks,memory")
    return parser.parse_args(argv)


def _seed_suffix(args: argparse.Namespace) -> str:
    return f"_s{args.seed}" if args.seed else ""  # seed 0 keeps the names earlier runs wrote


def child(args: argparse.Namespace) -> dict:
    """One run of the `large` pipeline; prints its figures as one JSON line."""
    import tifffile

    from histosynth.evaluation.seams import seam_score_from_counts
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.large.image import LargeImageRequest, generate_large_image

    size, method, steps = int(args.child[0]), args.child[1], int(args.child[2])
    model = LatentDiffusionModel.load(args.model)
    request = LargeImageRequest(width=size, height=size, label=model.classes.resolve_label(args.label), method=method,
                                steps=steps, seed=args.seed)
    out = Path(args.out) / f"{method}_{size}_{steps}{_seed_suffix(args)}.ome.tif"
    start = time.perf_counter()
    result = generate_large_image(model, request, out, args.device)
    wall = time.perf_counter() - start
    peak = peak_rss_mib()
    image = tifffile.imread(out, series=0, level=0)
    megapixels = size * size / 1e6
    np.savez(out.with_suffix(".edges.npz"), rows=result.edges.rows, cols=result.edges.cols)
    lattice = int(np.lcm(model.autoencoder_config.downsample, model.mask_factor))
    return {"size": size, "method": method, "steps": steps, "seed": args.seed, "evaluations": result.evaluations,
            "evaluations_per_mp": result.evaluations / megapixels, "mask_evaluations": result.mask_evaluations,
            "seconds": result.seconds, "wall_s": round(wall, 1), "s_per_mp": wall / megapixels,
            "latent_s_per_mp": result.seconds["latent"] / megapixels, "peak_rss_mib": round(peak),
            "seam_all_boundaries": seam_score_from_counts(image, result.edges.rows, result.edges.cols),
            "seam": seam_score_from_counts(image, result.edges.rows, result.edges.cols, lattice), "lattice": lattice}


def run_child(args: argparse.Namespace, size: int, method: str, steps: int) -> dict:
    done_file = Path(args.out) / f"{method}_{size}_{steps}{_seed_suffix(args)}.json"
    if done_file.exists():  # finished in an earlier invocation
        return json.loads(done_file.read_text())
    command = [sys.executable, __file__, "--model", args.model, "--label", args.label, "--out", args.out,
               "--device", args.device, "--seed", str(args.seed), "--child", str(size), method, str(steps)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{size} {method}: {done.stderr.strip().splitlines()[-1:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    done_file.write_text(json.dumps(row))
    return row


def decoders(args: argparse.Namespace) -> list[dict]:
    import torch

    from histosynth.evaluation.seams import seam_score
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.large.masks import clean_mask_cells, condition_fractions, generate_mask_cells, upsample_nearest
    from histosynth.sampling.large.samplers import LargeLatentSampler, LargeSamplingSettings
    from histosynth.sampling.large.decode import (
        collect_bands, decoder_edges, diffusers_tiled_decode, hann_decode_bands, naive_decode_bands,
    )

    model = LatentDiffusionModel.load(args.model)
    size, factor, label = args.decoder_size, model.autoencoder_config.downsample, model.classes.resolve_label(args.label)
    cells = -(-size // model.mask_factor)
    fractions = generate_mask_cells(model.mask_model, label, cells, cells, LargeSamplingSettings(steps=20, guidance=1.0), 0)
    mask = upsample_nearest(clean_mask_cells(fractions, model.classes.num_mask_classes), model.mask_factor, size, size)
    sampler = LargeLatentSampler(model.denoiser, LargeSamplingSettings(steps=args.steps))
    state = sampler.run(sampler.initial_state(size // factor, size // factor, 0), label,
                        condition_fractions(mask, model.classes.num_mask_classes, factor), 0)
    config = model.autoencoder_config
    runs = {
        "hann": lambda: collect_bands(hann_decode_bands(state.latent, model.decode), size, size),
        "naive": lambda: collect_bands(naive_decode_bands(state.latent, model.decode), size, size),
        "diffusers": lambda: diffusers_tiled_decode(model.autoencoder, state.latent, config.scaling_factor,
                                                    config.latent_shift),
        "whole": lambda: model.decode(torch.from_numpy(state.latent)[None])[0],
    }
    naive_rows, naive_cols = decoder_edges("naive", size, size, 32)
    lattice = int(np.lcm(factor, model.mask_factor))
    rows = []
    for name, decode in runs.items():
        start = time.perf_counter()
        image = decode()
        seconds = time.perf_counter() - start
        own = seam_score(image, *decoder_edges(name, size, size, 32), lattice=lattice) if name != "whole" else None
        row = {"decoder": name, "size": size, "seconds": round(seconds, 1), "seam_own_edges": own,
               "seam_naive_grid": seam_score(image, naive_rows, naive_cols, lattice=lattice), "lattice": lattice}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def masks(args: argparse.Namespace, per_class: int = 32) -> list[dict]:
    from skimage.measure import label as connected

    from histosynth.data.manifest import load_manifest
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.large.masks import clean_mask_cells, generate_mask_cells
    from histosynth.sampling.large.samplers import LargeSamplingSettings
    from histosynth.models.conditioning import mask_fractions
    from histosynth.training.tensors import load_tile_tensors

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_quality import DEFAULT_DATA

    model = LatentDiffusionModel.load(args.model)
    factor, cells, gland = model.mask_factor, model.mask_model.config.latent_size, 1
    val = load_tile_tensors(load_manifest(DEFAULT_DATA, classes=model.classes).select_split("val"),
                            model.autoencoder_config.tile_size)
    real = mask_fractions(val.masks, val.mask_known, model.classes.num_mask_classes, factor).numpy()

    def describe(class_maps: list[np.ndarray]) -> dict:
        fractions = [float((m == gland).mean()) for m in class_maps]
        regions = [int(connected(m == gland, connectivity=1).max()) for m in class_maps]
        return {"n": len(class_maps), "gland_fraction": [float(np.mean(fractions)), float(np.std(fractions))],
                "gland_regions": [float(np.mean(regions)), float(np.std(regions))],
                "unknown_fraction": float(np.mean([(m == model.classes.num_mask_classes).mean() for m in class_maps]))}

    rows = []
    settings = LargeSamplingSettings(steps=20, guidance=1.0)
    for label_id, name in enumerate(model.classes.labels):
        keep = (val.labels.numpy() == label_id) & val.mask_known.numpy()
        real_maps = [f.argmax(0) for f in real[keep]]
        generated = [clean_mask_cells(generate_mask_cells(model.mask_model, label_id, cells, cells, settings, seed),
                                      model.classes.num_mask_classes) for seed in range(per_class)]
        row = {"class": name, "real_val": describe(real_maps), "generated": describe(generated)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def plans(args: argparse.Namespace) -> list[dict]:
    """Window evaluations per megapixel from the samplers' window plans alone (exact, no denoising):
    the plans are the same functions of (size, seed, level) that the runs use."""
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.large.samplers import LEVEL_PLANS
    from histosynth.sampling.large.windows import grid_windows

    model = LatentDiffusionModel.load(args.model)
    factor, window = model.autoencoder_config.downsample, model.denoiser.config.latent_size
    rows = []
    for size in (int(v) for v in args.plan_sizes.split(",")):
        side = size // factor
        grid = len(grid_windows(side, side, window, window // 2))
        counts = {method: sum(len(plan(side, side, window, np.random.default_rng([0, 2, level])).windows)
                              for level in range(args.steps)) for method, plan in LEVEL_PLANS.items()}
        counts.update({"sliding-window": grid * args.steps, "multidiffusion": grid * args.steps})
        row = {"size": size, "steps": args.steps, "minimum_windows_per_level": (-(-side // window)) ** 2,
               **{f"{method}_per_mp": n / (size * size / 1e6) for method, n in counts.items()}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    result: dict = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
                    "machine": machine()}
    if "samplers" not in skip:
        result["samplers"] = [run_child(args, int(size), method, args.steps)
                              for size in args.sizes.split(",") for method in args.methods.split(",")]
    if "plans" not in skip:
        result["plans"] = plans(args)
    if "decoders" not in skip:
        result["decoders"] = decoders(args)
    if "masks" not in skip:
        result["masks"] = masks(args)
    if "memory" not in skip:
        result["memory"] = [run_child(args, int(size), "random-patch", 1) for size in args.memory_sizes.split(",")]
    from histosynth.io import write_json

    write_json(Path(args.out) / "large.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
