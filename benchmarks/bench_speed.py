"""Speed at equal quality (issue K): histosynth's sampling against the textbook diffusers loop, side by side.

    .venv/bin/python benchmarks/bench_speed.py --model src/histosynth/weights/default --n 412 \
        --out bench_out/speed --cache bench_out/cache

1. Time to quality. The ``n`` tiles of the issue-H protocol (labels and masks of ``n`` random train tiles, the
   draw and seeds of ``bench_quality.py``) are made twice: by the **baseline**, a plain diffusers DDIM loop
   (50 steps, guidance 2, a conditional and an unconditional forward per step under ``torch.no_grad``,
   float32), and by **histosynth** with its defaults (or ``--ours``). Batches alternate (baseline batch i,
   then ours batch i) so both arms see the same load on a shared machine; an arm's time is the sum of its
   batches, decode included. Both sets are scored in Inception features against all train tiles (no test
   tile is read); ours counts only if its FID is within 3 points of the baseline's, or better.
2. Engineering speed-up: the baseline's own settings (DDIM 50, guidance 2, float32) through ``TileSampler``
   against the plain loop on one batch, with the largest latent difference (same outputs up to noise).
3. How close to the machine: FLOPs of one denoiser forward (``torch.utils.flop_counter``), its achieved
   GFLOP/s against a float32 (and bfloat16) matmul peak measured in the same run, and where the time goes
   (profiler self time by operator family; the decoder's share of a tile).
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402
from bench_quality import DEFAULT_DATA, cache_key, cached_features  # noqa: E402
from bench_sampling import plain_loop  # noqa: E402
from bench_sampling_sweep import parse_setting  # noqa: E402

from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.errors import HistosynthError  # noqa: E402
from histosynth.evaluation.fidelity import fidelity_metrics  # noqa: E402
from histosynth.io import write_json  # noqa: E402
from histosynth.models.conditioning import mask_fractions  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.sampler import SamplingSettings, TileSampler  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402

BASELINE = SamplingSettings(steps=50, guidance=2, sampler="ddim", precision="float32")
FAMILIES = {  # profiler operator name fragments -> family
    "convolution": ("conv",), "attention": ("attention", "bmm", "baddbmm", "softmax"),
    "group norm": ("group_norm",), "linear": ("addmm", "linear", "aten::mm"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="manifest with a train split")
    parser.add_argument("--ours", default=None,
                        help="sampler:steps:guidance[@low-high][:reuseN] for histosynth (default: the package "
                        "defaults)")
    parser.add_argument("--precision", default=None, help="histosynth's precision (default: the package default)")
    parser.add_argument("--n", type=int, default=412)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench_out/speed")
    parser.add_argument("--cache", help="feature cache folder (default OUT/features)")
    parser.add_argument("--skip-quality", action="store_true", help="only measures 2 and 3 (minutes, not an hour)")
    return parser.parse_args(argv)


def our_settings(args: argparse.Namespace) -> SamplingSettings:
    values: dict = {"batch_size": args.batch}
    if args.ours:
        s = parse_setting(args.ours)
        low, high = (float(v) for v in s.guidance_interval.split(","))
        values.update(sampler=s.sampler, steps=s.steps, guidance=s.guidance, guidance_interval=(low, high),
                      feature_reuse=s.feature_reuse)
    if args.precision:
        values["precision"] = args.precision
    return SamplingSettings(**values)


def describe(settings: SamplingSettings) -> str:
    """Resolved settings as the manifest records them, e.g. ``unipc+bf16:20:1.5``."""
    return f"{settings.sampler_record}:{settings.steps}:{settings.guidance_record}"


def time_to_quality(model: LatentDiffusionModel, args: argparse.Namespace, ours: TileSampler, described: str) -> dict:
    """Measure 1: both arms over the same batches, interleaved; their wall times and fidelity."""
    size = model.autoencoder_config.tile_size
    train = load_tile_tensors(load_manifest(args.data, classes=model.classes).select_split("train"), size)
    candidates = np.flatnonzero(train.mask_known.numpy())
    picks = np.random.default_rng(args.seed).choice(candidates, args.n, replace=args.n > len(candidates))
    baseline = TileSampler(model, BASELINE)
    arms = {"baseline": [], "histosynth": []}
    seconds = {"baseline": 0.0, "histosynth": 0.0}
    for start in range(0, args.n, args.batch):
        idx = torch.from_numpy(picks[start:start + args.batch])
        labels, seeds = train.labels[idx], [args.seed + i for i in range(start, start + len(idx))]
        fractions = mask_fractions(train.masks[idx], train.mask_known[idx], model.classes.num_mask_classes,
                                   model.autoencoder_config.downsample)
        began = time.perf_counter()
        latents = plain_loop(model, baseline.initial_noise(seeds), labels, fractions, BASELINE.steps,
                             BASELINE.guidance)
        arms["baseline"].append(model.decode(latents))
        seconds["baseline"] += time.perf_counter() - began
        began = time.perf_counter()
        masks = [train.masks[j].numpy() for j in idx]
        arms["histosynth"].append(ours.sample(labels.tolist(), masks, seeds))
        seconds["histosynth"] += time.perf_counter() - began
        print(f"time to quality: {start + len(idx)}/{args.n} (baseline {seconds['baseline']:.0f} s, "
              f"histosynth {seconds['histosynth']:.0f} s)", flush=True)
    cache = Path(args.cache) if args.cache else Path(args.out) / "features"
    source = str(Path(args.data).resolve())
    train_f = cached_features(cache, "train", cache_key(source, size, train.ids),
                              (x.permute(1, 2, 0).numpy() for x in train.images), len(train), "cpu")
    result = {}
    for arm, label in (("baseline", "plain-ddim:50:2 float32"), ("histosynth", described)):
        images = np.concatenate(arms[arm])
        key = cache_key("speed", hashlib.sha256(images.tobytes()).hexdigest())  # the pixels themselves: never stale
        metrics = fidelity_metrics(train_f, cached_features(cache, f"speed-{arm}", key, iter(images), len(images),
                                                            "cpu"))
        result[arm] = {"settings": label, "seconds": round(seconds[arm], 1), **metrics}
    return result


def engineering(model: LatentDiffusionModel, batch: int) -> dict:
    """Measure 2: the baseline's settings through TileSampler vs the plain loop (best of two each)."""
    sampler = TileSampler(model, BASELINE)
    size = model.autoencoder_config.tile_size
    labels = torch.arange(batch) % len(model.classes.labels)
    masks = torch.zeros(batch, size, size, dtype=torch.uint8)
    masks[:, : size // 2] = 1
    fractions = mask_fractions(masks, torch.ones(batch, dtype=torch.bool), model.classes.num_mask_classes,
                               model.autoencoder_config.downsample)
    seeds = list(range(batch))
    timings: dict[str, list[float]] = {"plain": [], "histosynth": []}
    for _ in range(2):
        began = time.perf_counter()
        plain = plain_loop(model, sampler.initial_noise(seeds), labels, fractions, BASELINE.steps, BASELINE.guidance)
        timings["plain"].append(time.perf_counter() - began)
        began = time.perf_counter()
        ours = sampler.denoise(sampler.initial_noise(seeds), labels, fractions, seeds=seeds)
        timings["histosynth"].append(time.perf_counter() - began)
    best = {k: min(v) for k, v in timings.items()}
    return {"batch": batch, "plain_s": round(best["plain"], 2), "histosynth_s": round(best["histosynth"], 2),
            "speedup": round(best["plain"] / best["histosynth"], 3),
            "max_latent_difference": float((plain - ours).abs().max())}


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def machine_use(model: LatentDiffusionModel, settings: SamplingSettings, precision: str, batch: int) -> dict:
    """Measure 3: FLOPs and achieved GFLOP/s of one guided forward (2 x batch latents), the profile by
    operator family, and the decoder's time per tile."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    config = model.denoiser.config
    n = 2 * batch  # conditional + unconditional rows of one guided step
    x = torch.randn(n, config.latent_channels, config.latent_size, config.latent_size)
    t = torch.full((n,), 500)
    labels = torch.arange(n) % config.null_label
    fractions = torch.rand(n, config.num_mask_classes, config.latent_size, config.latent_size)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")

    def forward() -> None:
        with torch.inference_mode(), autocast:
            model.denoiser(x, t, labels, fractions)

    with FlopCounterMode(display=False) as counter:
        forward()
    flops = counter.get_total_flops()
    forward()
    seconds = min(_timed(forward) for _ in range(5))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            forward()
    self_us: dict[str, float] = {family: 0.0 for family in (*FAMILIES, "other ops")}
    for event in prof.key_averages():
        family = next((f for f, keys in FAMILIES.items() if any(k in event.key for k in keys)), "other ops")
        self_us[family] += event.self_cpu_time_total
    wall_us = 3 * seconds * 1e6
    latents = torch.randn(batch, config.latent_channels, config.latent_size, config.latent_size)
    model.decode(latents)
    decode_s = min(_timed(lambda: model.decode(latents)) for _ in range(2)) / batch
    return {"precision": precision, "forward_latents": n, "gflop_per_forward": round(flops / 1e9, 2),
            "forward_s": round(seconds, 4), "achieved_gflops": round(flops / seconds / 1e9, 1),
            "peak_fp32_gflops": round(matmul_peak(torch.float32), 1),
            "peak_bf16_gflops": round(matmul_peak(torch.bfloat16), 1),
            "profile_share": {k: round(v / max(wall_us, sum(self_us.values())), 3) for k, v in self_us.items()},
            "decode_s_per_tile": round(decode_s, 3),
            # a guided step runs both rows per tile, an unguided one (w = 1) only the conditional half
            "denoise_s_per_tile": round(seconds / batch * settings.steps * (1 if settings.guidance != 1 else 0.5), 3)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join([sys.executable, *(sys.argv if argv is None else [__file__, *argv])])
    if not args.skip_quality and not Path(args.data).exists():
        print(f"skipped: no data at {args.data}")
        return 0
    try:
        model = LatentDiffusionModel.load(args.model)
        settings = our_settings(args)
        ours = TileSampler(model, settings)
        described = describe(ours.settings)
        result = {"command": command, "machine": machine(), "model": model.identity,
                  "model_folder": str(Path(args.model).resolve()), "ours": described,
                  "engineering": engineering(model, args.batch),
                  "machine_use": machine_use(model, settings, ours.settings.precision, args.batch)}
        if not args.skip_quality:
            result["time_to_quality"] = time_to_quality(model, args, ours, described)
    except HistosynthError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    result["peak_rss_mib"] = round(peak_rss_mib())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(args.out) / "speed.json", result)
    report(result)
    return 0


def report(result: dict) -> None:
    eng, use = result["engineering"], result["machine_use"]
    print(f"\nmachine: {result['machine']}\nmodel {result['model']} ({result['model_folder']})")
    print(f"engineering (DDIM 50, guidance 2, float32, batch {eng['batch']}): plain loop {eng['plain_s']} s, "
          f"histosynth {eng['histosynth_s']} s -> {eng['speedup']:.2f}x; max |latent difference| "
          f"{eng['max_latent_difference']:.1e}")
    print(f"denoiser forward ({use['precision']}, {use['forward_latents']} latents): {use['gflop_per_forward']} "
          f"GFLOP in {use['forward_s']} s = {use['achieved_gflops']} GFLOP/s; matmul peak fp32 "
          f"{use['peak_fp32_gflops']}, bf16 {use['peak_bf16_gflops']} GFLOP/s")
    print("profile (self time share): " + ", ".join(f"{k} {v:.0%}" for k, v in use["profile_share"].items()))
    print(f"decode {use['decode_s_per_tile']} s per tile")
    ttq = result.get("time_to_quality")
    if ttq:
        base, ours = ttq["baseline"], ttq["histosynth"]
        print("| arm | settings | wall (s) | FID | precision | recall |")
        print("|---|---|---|---|---|---|")
        for arm, row in ttq.items():
            print(f"| {arm} | {row['settings']} | {row['seconds']:.0f} | {row['fid']:.1f} | {row['precision']:.3f} "
                  f"| {row['recall']:.3f} |")
        verdict = "counts" if ours["fid"] <= base["fid"] + 3 else "does NOT count (FID more than 3 above)"
        print(f"time to quality: {base['seconds'] / ours['seconds']:.2f}x less time; {verdict}")
    print(f"command: {result['command']}")


if __name__ == "__main__":
    sys.exit(main())
