"""Sampling throughput: histosynth's TileSampler vs a plain diffusers DDIM loop, same UNet/steps/batch.

    .venv/bin/python benchmarks/bench_sampling.py --model src/histosynth/weights/default --steps 50 --batch 16

The plain loop is the textbook diffusers recipe: DDIMScheduler, a conditional and an unconditional
forward per step under torch.no_grad, guidance mixed, scheduler.step. Both decode with the same
autoencoder, and both start from the same noise; the script checks they produce the same latents.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402

from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.masks import procedural_mask  # noqa: E402
from histosynth.sampling.sampler import SamplingSettings, TileSampler, build_scheduler  # noqa: E402
from histosynth.models.conditioning import mask_fractions  # noqa: E402


def plain_loop(model: LatentDiffusionModel, noise, labels, fractions, steps: int, guidance: float) -> torch.Tensor:
    scheduler = build_scheduler(model, "ddim")
    scheduler.set_timesteps(steps)
    latents = noise * scheduler.init_noise_sigma
    null = torch.full_like(labels, model.denoiser.config.null_label)
    with torch.no_grad():
        for t in scheduler.timesteps:
            batch_t = t.expand(len(latents))
            cond = model.denoiser(latents, batch_t, labels, fractions)
            uncond = model.denoiser(latents, batch_t, null, torch.zeros_like(fractions))
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    return latents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = LatentDiffusionModel.load(args.model)
    sampler = TileSampler(model, SamplingSettings(steps=args.steps, guidance=args.guidance, batch_size=args.batch))
    size = model.autoencoder_config.tile_size
    masks = [procedural_mask(size, 0.6, i) for i in range(args.batch)]
    labels = torch.arange(args.batch) % len(model.classes.labels)
    seeds = list(range(args.batch))
    fractions = mask_fractions(torch.from_numpy(np.stack(masks)), torch.ones(args.batch, dtype=torch.bool),
                               model.classes.num_mask_classes, model.autoencoder_config.downsample)

    timings = {"histosynth": [], "plain diffusers loop": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = sampler.denoise(sampler.initial_noise(seeds), labels, fractions)
        sampler.decode(ours)
        timings["histosynth"].append(time.perf_counter() - start)
        start = time.perf_counter()
        plain = plain_loop(model, sampler.initial_noise(seeds), labels, fractions, args.steps, args.guidance)
        sampler.decode(plain)
        timings["plain diffusers loop"].append(time.perf_counter() - start)
    max_diff = float((ours - plain).abs().max())
    print(f"machine: {machine()}")
    print(f"steps {args.steps}, batch {args.batch}, guidance {args.guidance}, DDIM; "
          f"max |latent difference| between the two = {max_diff:.2e}; peak RSS {peak_rss_mib():.0f} MiB")
    print("| sampler | best wall (s) | tiles/s |")
    print("|---|---|---|")
    rates = {}
    for name, values in timings.items():
        best = min(values)
        rates[name] = args.batch / best
        print(f"| {name} | {best:.2f} | {rates[name]:.2f} |")
    print(f"speed-up: {rates['histosynth'] / rates['plain diffusers loop']:.2f}x")


if __name__ == "__main__":
    main()
