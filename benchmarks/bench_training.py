"""Training throughput: histosynth's loop (accelerate, EMA, schedule, logging, checkpoints) vs a bare
PyTorch loop, same denoiser, same objective, same batches.

    .venv/bin/python benchmarks/bench_training.py --steps 40 --batch 32

Latents are random tensors of the shipped model's shape (this measures the loop, not data loading:
histosynth trains from in-memory tensors, so there is no loader to compare).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402

from histosynth.models.denoiser import ConditionalDenoiser, DenoiserConfig  # noqa: E402
from histosynth.training.config import TrainConfig  # noqa: E402
from histosynth.training.loop import batch_indices, step_generator, train  # noqa: E402
from histosynth.training.objectives import DenoiserLossConfig, DenoiserObjective  # noqa: E402


def make_objective(config: DenoiserConfig, n: int) -> DenoiserObjective:
    g = torch.Generator().manual_seed(0)
    shape = (n, 8, config.latent_channels, config.latent_size, config.latent_size)
    fractions = torch.rand((n, config.num_mask_classes, config.latent_size, config.latent_size), generator=g)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=config.beta_schedule,
                              prediction_type=config.prediction_type)
    return DenoiserObjective(torch.randn(shape, generator=g).half(), torch.full(shape, -4.0).half(), fractions,
                             torch.randint(0, config.num_labels, (n,), generator=g), torch.zeros(config.latent_channels),
                             1.0, config.null_label, scheduler, DenoiserLossConfig())


def bare_loop(model, objective, steps: int, batch: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    start = time.perf_counter()
    for step in range(steps):
        indices = torch.from_numpy(batch_indices(step, objective.num_items(), batch, 0))
        loss, _ = objective.loss(model, indices, step_generator(0, step), torch.device("cpu"))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--config", default="configs/ebhi_denoiser.yaml")
    args = parser.parse_args()
    from histosynth.training.recipe_config import load_recipe

    config = load_recipe(args.config, DenoiserConfig, DenoiserLossConfig,
                         model_defaults={"num_labels": 6, "num_mask_classes": 2}).model
    objective = make_objective(config, 512)
    params = sum(p.numel() for p in ConditionalDenoiser(config).parameters())

    results = {}
    for name in ("bare PyTorch loop", "histosynth train()", "bare PyTorch loop (repeat)", "histosynth train() (repeat)"):
        torch.manual_seed(0)
        model = ConditionalDenoiser(config)
        if name.startswith("bare"):
            bare_loop(model, objective, 3, args.batch)  # warm-up
            rate = bare_loop(model, objective, args.steps, args.batch)
        else:
            with tempfile.TemporaryDirectory() as run_dir:
                cfg = TrainConfig(steps=args.steps + 3, batch_size=args.batch, checkpoint_every=20, log_every=10)
                began = {}

                def mark(step: int, _: dict) -> None:
                    if step == 3:
                        began["t"] = time.perf_counter()

                train(model, objective, cfg, run_dir, on_step=mark)
                rate = args.steps * args.batch / (time.perf_counter() - began["t"])
        results[name] = rate
    print(f"machine: {machine()}")
    print(f"denoiser {params / 1e6:.2f}M params, batch {args.batch}, {args.steps} timed steps "
          f"(histosynth includes EMA, logging, 2 checkpoints); peak RSS {peak_rss_mib():.0f} MiB")
    print("| loop | latents/s |")
    print("|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.1f} |")
    ours = max(results["histosynth train()"], results["histosynth train() (repeat)"])
    bare = max(results["bare PyTorch loop"], results["bare PyTorch loop (repeat)"])
    print(f"ratio histosynth / bare (best of two each): {ours / bare:.3f}")


if __name__ == "__main__":
    main()
