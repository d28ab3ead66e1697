"""Mask conditioning: concatenated fractions vs cross-attention to mask tokens, at an equal budget.

Train both here (CPU-sized) and evaluate:

    .venv/bin/python benchmarks/bench_conditioning.py --autoencoder src/histosynth/weights/default/autoencoder \
        --steps 800 --out bench_out/conditioning

or evaluate two model folders trained elsewhere with the same recipe apart from the mechanism
(e.g. on a GPU with configs/ebhi_denoiser_gpu.yaml and configs/ebhi_denoiser_gpu_xattn.yaml):

    .venv/bin/python benchmarks/bench_conditioning.py --models concat=DIR_A,cross_attention=DIR_B

Both denoisers share the shipped denoiser's size settings and train the same number of steps on the
EBHI train split. Measured on the val split (never test): the v-prediction loss with the true masks,
the loss with masks shuffled between tiles (the gap says how much the model uses the mask), and the
Dice between a segmenter's prediction on sampled tiles and the masks they were conditioned on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).parent))
from _common import cached_segmenter, machine  # noqa: E402

from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.evaluation.segmentation import (  # noqa: E402
    SegmentationTrainConfig,
    dice_per_image,
    predict_masks,
)
from histosynth.models.autoencoder import Autoencoder  # noqa: E402
from histosynth.models.denoiser import ConditionalDenoiser, DenoiserConfig  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.sampler import SamplingSettings, TileSampler  # noqa: E402
from histosynth.training.latents import encode_dihedral  # noqa: E402
from histosynth.training.loop import train  # noqa: E402
from histosynth.training.objectives import DenoiserLossConfig, DenoiserObjective  # noqa: E402
from histosynth.training.recipe_config import load_recipe  # noqa: E402
from histosynth.models.conditioning import mask_fractions  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ebhi-seg" / "manifest.csv"


@torch.no_grad()
def val_loss(model, objective: DenoiserObjective, shuffle_masks: bool, repeats: int = 4) -> float:
    """Mean loss over val tiles and fixed timesteps; optionally with masks of other tiles."""
    losses = []
    n = objective.num_items()
    original = objective.fractions
    if shuffle_masks:
        objective.fractions = original[torch.roll(torch.arange(n), 1)]
    for r in range(repeats):
        for start in range(0, n, 64):
            idx = torch.arange(start, min(start + 64, n))
            losses.append(float(objective.loss(model, idx, torch.Generator().manual_seed(1000 + r), "cpu")[0]) * len(idx))
    objective.fractions = original
    return sum(losses) / (n * repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autoencoder", default="src/histosynth/weights/default/autoencoder")
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--config", default="configs/ebhi_denoiser.yaml")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--out", default="bench_out/conditioning")
    parser.add_argument("--models", default=None,
                        help="name=MODEL_DIR,... : evaluate these trained folders instead of training")
    args = parser.parse_args()
    if not Path(args.data).exists():
        sys.exit(f"skipped: {args.data} not found (shared EBHI-Seg data)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(args.data)
    autoencoder = Autoencoder.load(args.autoencoder)
    ae_config = autoencoder.autoencoder_config
    train_tiles = load_tile_tensors(manifest.select_split("train"), ae_config.tile_size)
    val_tiles = load_tile_tensors(manifest.select_split("val"), ae_config.tile_size)
    results = {"command": " ".join(sys.argv), "machine": machine(), "steps": args.steps, "variants": {}}
    known = train_tiles.mask_known
    segmenter = cached_segmenter(train_tiles.images[known], train_tiles.masks[known], SegmentationTrainConfig())

    def objective_for(tiles, config: DenoiserConfig, autoencoder, ae_config) -> DenoiserObjective:
        mean, logvar = encode_dihedral(autoencoder, tiles.images)
        scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                                  prediction_type=config.prediction_type)
        return DenoiserObjective(mean, logvar, mask_fractions(tiles.masks, tiles.mask_known, 2, ae_config.downsample),
                                 tiles.labels, torch.tensor(ae_config.latent_shift), ae_config.scaling_factor,
                                 config.null_label, scheduler, DenoiserLossConfig(condition_dropout=0.0))

    def train_variant(mechanism: str) -> tuple[Path, dict]:
        train_config, config, loss_config = load_recipe(
            args.config, DenoiserConfig, DenoiserLossConfig,
            model_defaults={"latent_channels": ae_config.latent_channels, "latent_size": ae_config.latent_size,
                            "num_labels": len(manifest.classes.labels), "num_mask_classes": 2},
            model_overrides={"mask_conditioning": mechanism},
            train_overrides={"steps": args.steps, "checkpoint_every": args.steps})
        train_objective = objective_for(train_tiles, config, autoencoder, ae_config)
        train_objective.settings = loss_config
        torch.manual_seed(0)
        model = ConditionalDenoiser(config)
        started = time.perf_counter()
        result = train(model, train_objective, train_config, out / mechanism / "run")
        folder = out / mechanism / "model"
        result.ema.eval().save(folder / "denoiser", labels=manifest.classes.labels)
        if not (folder / "autoencoder").exists():
            (folder / "autoencoder").symlink_to(Path(args.autoencoder).resolve())
        manifest.classes.save(folder / "classes.json")
        return folder, {"train_seconds": round(time.perf_counter() - started, 1),
                        "latents_per_s": round(result.items_per_second, 1)}

    if args.models:
        variants = {name: (Path(path), {}) for name, path in (item.split("=", 1) for item in args.models.split(","))}
    else:
        variants = {mechanism: train_variant(mechanism) for mechanism in ("concat", "cross_attention")}
    for name, (folder, facts) in variants.items():
        model = LatentDiffusionModel.load(folder)
        ema = model.denoiser
        val_objective = objective_for(val_tiles, ema.config, model.autoencoder, model.autoencoder_config)
        sampler = TileSampler(model, SamplingSettings(steps=50, guidance=2.0))
        pick = np.linspace(0, len(val_tiles) - 1, args.samples).astype(int)
        masks = [val_tiles.masks[i].numpy() for i in pick]
        images = sampler.sample([int(val_tiles.labels[i]) for i in pick], masks, [int(i) for i in pick])
        predicted = predict_masks(segmenter, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), 112)
        dice = dice_per_image(predicted, np.stack(masks))
        results["variants"][name] = {
            "folder": str(folder), "mechanism": ema.config.mask_conditioning,
            "parameters": sum(p.numel() for p in ema.parameters()), **facts,
            "val_loss_true_masks": val_loss(ema, val_objective, False),
            "val_loss_shuffled_masks": val_loss(ema, val_objective, True),
            "dice_sampled_vs_condition": float(dice.mean()), "dice_sd": float(dice.std()),
        }
        print(name, results["variants"][name], flush=True)
    (out / "conditioning.json").write_text(json.dumps(results, indent=2))
    print("| mechanism | params | val loss (true masks) | val loss (shuffled) | Dice sampled vs mask |")
    print("|---|---|---|---|---|")
    for name, v in results["variants"].items():
        print(f"| {name} | {v['parameters'] / 1e6:.2f}M | {v['val_loss_true_masks']:.4f} | "
              f"{v['val_loss_shuffled_masks']:.4f} | {v['dice_sampled_vs_condition']:.3f} +- {v['dice_sd']:.3f} |")


if __name__ == "__main__":
    main()
