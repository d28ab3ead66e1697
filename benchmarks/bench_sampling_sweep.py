"""Sampling-settings sweep on the issue-H protocol, reading no test tile (for choosing defaults).

    .venv/bin/python benchmarks/bench_sampling_sweep.py --model src/histosynth/weights/default \
        --settings dpm:20:2 dpm:20:1.5 dpm:20:3@0.17-0.89 --out bench_out/sweep --cache bench_out/quality/features

Each setting is ``sampler:steps:guidance[@low-high][:reuseN][/bf16]`` (a guidance interval as fractions of
the training timesteps; ``:reuseN`` DeepCache-style feature reuse, the full denoiser every N steps
(``SamplingSettings.feature_reuse``; absent = 1 = exact); `/bf16` runs the denoiser in bfloat16). For every
setting, ``--n`` tiles are generated from the labels and masks of the
same ``n`` random train tiles (same seeds; the draw of ``bench_quality.py``) into ``OUT/<setting>/``, a
folder a rerun resumes, and scored in Inception features against all train tiles: FID, KID,
precision/recall, density/coverage (k = 3) and authenticity. Test tiles are never read, so the best
setting may be chosen from this table; ``bench_quality.py`` then measures it against the real floor.
Features are cached (share ``--cache`` with ``bench_quality.py`` to reuse the train features).

Speed: ``generate (s)`` includes resumed tiles, so each setting is also timed by a probe that does not
resume: ``--probe-repeats`` denoising passes (after one warm-up) of one batch of ``--batch`` tiles, reported
as denoiser seconds per tile (decode excluded) with the full / partial forward counts of feature reuse.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib, run_main  # noqa: E402
from bench_quality import DEFAULT_DATA, cache_key, cached_features, generate  # noqa: E402

from histosynth.data.images import read_rgb  # noqa: E402
from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.errors import InputError  # noqa: E402
from histosynth.evaluation.fidelity import fidelity_metrics  # noqa: E402
from histosynth.evaluation.privacy import authenticity  # noqa: E402
from histosynth.io import write_json  # noqa: E402
from histosynth.models.conditioning import mask_fractions  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.sampler import SamplingSettings, TileSampler  # noqa: E402
from histosynth.sampling.settings import SAMPLERS  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402


PRECISION_SUFFIXES = {"": "float32", "fp32": "float32", "bf16": "bfloat16"}


def parse_setting(text: str) -> argparse.Namespace:
    """``sampler:steps:guidance[@low-high][:reuseN][/bf16]`` -> the fields ``generate`` reads."""
    text, _, suffix = text.partition("/")
    if suffix not in PRECISION_SUFFIXES:
        raise InputError(f"setting {text!r}: precision suffix {suffix!r} is not bf16 or fp32")
    try:
        sampler, steps, guidance, *rest = text.split(":")
        reuse = rest.pop() if rest else "reuse1"
        if rest or not reuse.startswith("reuse"):
            raise ValueError(reuse)
        weight, _, interval = guidance.partition("@")
        low, high = interval.split("-") if interval else ("0", "1")
        parsed = argparse.Namespace(sampler=sampler, steps=int(steps), guidance=float(weight),
                                    guidance_interval=f"{float(low):g},{float(high):g}",
                                    precision=PRECISION_SUFFIXES[suffix], feature_reuse=int(reuse[len("reuse"):]))
    except ValueError:
        raise InputError(f"setting {text!r} is not sampler:steps:guidance[@low-high][:reuseN], e.g. "
                         "dpm:20:2@0.17-0.89 or unipc:20:1.5:reuse2")
    if sampler not in SAMPLERS:
        raise InputError(f"setting {text!r}: unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return parsed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="manifest with a train split")
    parser.add_argument("--settings", nargs="+", required=True,
                        help="sampler:steps:guidance[@low-high][:reuseN][/bf16] ...")
    parser.add_argument("--n", type=int, default=412)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_out/sweep")
    parser.add_argument("--cache", help="feature cache folder (default OUT/features)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--probe-repeats", type=int, default=2,
                        help="timed denoising passes of one batch per setting (0: no speed probe)")
    return parser.parse_args(argv)


def speed_probe(model: LatentDiffusionModel, train, picks: np.ndarray, setting: argparse.Namespace,
                repeats: int) -> dict:
    """Denoiser seconds per tile of one batch (best of ``repeats`` after a warm-up; decode excluded), and the
    full / partial forwards of a pass. Nothing is written or resumed, so settings compare at equal footing."""
    settings = SamplingSettings(steps=setting.steps, guidance=setting.guidance, sampler=setting.sampler,
                                precision=setting.precision, feature_reuse=setting.feature_reuse,
                                guidance_interval=tuple(float(v) for v in setting.guidance_interval.split(",")))
    sampler = TileSampler(model, settings, setting.device)
    idx = torch.from_numpy(picks[:setting.batch])
    fractions = mask_fractions(train.masks[idx], train.mask_known[idx], model.classes.num_mask_classes,
                               model.autoencoder_config.downsample)
    seeds = [setting.seed + i for i in range(len(idx))]
    best = float("inf")
    for attempt in range(repeats + 1):  # pass 0 warms up
        if sampler.device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        sampler.denoise(sampler.initial_noise(seeds), train.labels[idx], fractions, seeds=seeds)
        if sampler.device.type == "cuda":
            torch.cuda.synchronize()
        if attempt:
            best = min(best, time.perf_counter() - began)
    reuse = sampler.feature_reuse
    full, partial = (reuse.full_steps, reuse.partial_steps) if reuse else (setting.steps, 0)
    return {"denoise_s_per_tile": round(best / len(idx), 4), "full_forwards": full, "partial_forwards": partial,
            "probe_batch": len(idx)}


def run(args: argparse.Namespace, command: str) -> dict:
    settings = [parse_setting(text) for text in args.settings]
    model = LatentDiffusionModel.load(args.model)
    size = model.autoencoder_config.tile_size
    train = load_tile_tensors(load_manifest(args.data, classes=model.classes).select_split("train"), size)
    candidates = np.flatnonzero(train.mask_known.numpy())
    if len(candidates) == 0:
        raise InputError("the train split has no masks to condition on", args.data)
    picks = np.random.default_rng(args.seed).choice(candidates, args.n, replace=args.n > len(candidates))
    out, source = Path(args.out), str(Path(args.data).resolve())
    cache = Path(args.cache) if args.cache else out / "features"
    train_f = cached_features(cache, "train", cache_key(source, size, train.ids),
                              (x.permute(1, 2, 0).numpy() for x in train.images), len(train), args.device)
    rows = []
    for text, setting in zip(args.settings, settings):
        for name in ("batch", "seed", "device"):
            setattr(setting, name, getattr(args, name))
        start = time.perf_counter()
        folder = out / text.replace(":", "_").replace("@", "_at_").replace("/", "_")
        ids = generate(model, train, picks, setting, folder)
        seconds = time.perf_counter() - start
        generated = np.stack([read_rgb(folder / "images" / f"{tile_id}.png") for tile_id in ids])
        key = cache_key(model.identity, setting.steps, setting.guidance, setting.sampler, args.seed,
                   [train.ids[j] for j in picks],
                   *([] if setting.guidance_interval == "0,1" else [setting.guidance_interval]),
                   *([] if setting.precision == "float32" else [setting.precision]),
                   *([] if setting.feature_reuse == 1 else [f"reuse{setting.feature_reuse}"]))
        gen_f = cached_features(cache, "generated", key, iter(generated), len(generated), args.device)
        metrics = fidelity_metrics(train_f, gen_f)
        metrics["authenticity"] = authenticity(train_f, gen_f)[0]
        probe = speed_probe(model, train, picks, setting, args.probe_repeats) if args.probe_repeats > 0 else {}
        rows.append({"setting": text, "feature_reuse": setting.feature_reuse, "folder": str(folder),
                     "generate_s": round(seconds, 1), **probe, **metrics})
        speed = f", denoise {probe['denoise_s_per_tile']:.3f} s/tile" if probe else ""
        print(f"{text}: FID {metrics['fid']:.1f}, precision {metrics['precision']:.3f}, "
              f"recall {metrics['recall']:.3f}, authenticity {metrics['authenticity']:.3f}{speed}", flush=True)
    return {"command": command, "machine": machine(), "model": model.identity,
            "model_folder": str(Path(args.model).resolve()), "n": args.n, "n_train": len(train), "rows": rows,
            "peak_rss_mib": round(peak_rss_mib())}


def main(argv: list[str] | None = None) -> int:
    done = run_main(argv, parse_args, run, __file__)
    if isinstance(done, int):
        return done
    args, result = done
    print(f"\nmachine: {result['machine']}\nmodel {result['model']} ({result['model_folder']}); n = {result['n']} "
          f"generated vs all {result['n_train']} train tiles (Inception, k = 3)")
    print("| sampler:steps:guidance[@interval][:reuseN] | feature reuse | FID | KID x1000 | precision | recall "
          "| density | coverage | authenticity | generate (s, incl. resumed) | denoise s/tile (probe) "
          "| full / partial forwards |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        probe = (f"{row['denoise_s_per_tile']:.3f} | {row['full_forwards']} / {row['partial_forwards']}"
                 if "denoise_s_per_tile" in row else "- | -")
        print(f"| {row['setting']} | {row['feature_reuse']} | {row['fid']:.1f} | {row['kid_x1000']:.1f} | "
              f"{row['precision']:.3f} | {row['recall']:.3f} | {row['density']:.3f} | {row['coverage']:.3f} | "
              f"{row['authenticity']:.3f} | {row['generate_s']:.0f} | {probe} |")
    print(f"command: {result['command']}")
    write_json(Path(args.out) / "sweep.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
