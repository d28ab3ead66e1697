"""Autoencoder reconstruction quality on the EBHI-Seg test split: PSNR and SSIM at 224 px.

    .venv/bin/python benchmarks/bench_autoencoder.py --model src/histosynth/weights/default/autoencoder

Uses the posterior mean (no sampling), as the diffusion pipeline's decoder sees clean latents.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mib  # noqa: E402

from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.models.pixel import psnr, ssim  # noqa: E402
from histosynth.models.autoencoder import Autoencoder  # noqa: E402
from histosynth.training.tensors import load_tile_tensors, to_unit_range  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ebhi-seg" / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default/autoencoder")
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    if not Path(args.data).exists():
        sys.exit(f"skipped: {args.data} not found (shared EBHI-Seg data)")
    model = Autoencoder.load(args.model)
    config = model.autoencoder_config
    tiles = load_tile_tensors(load_manifest(args.data).select_split(args.split), config.tile_size)
    psnrs, ssims = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tiles), 32):
            x = to_unit_range(tiles.images[i:i + 32])
            recon = model.decode(model.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            psnrs.append(psnr(recon, x))
            ssims.append(ssim(recon, x))
    seconds = time.perf_counter() - start
    p, s = torch.cat(psnrs), torch.cat(ssims)
    print(f"machine: {machine()}")
    print(f"| split | tiles | PSNR (dB) mean +- sd | SSIM mean +- sd | encode+decode tiles/s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.split} | {len(tiles)} | {p.mean():.2f} +- {p.std():.2f} | {s.mean():.4f} +- {s.std():.4f} | "
          f"{len(tiles) / seconds:.1f} | {peak_rss_mib():.0f} |")


if __name__ == "__main__":
    main()
