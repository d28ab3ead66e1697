"""H probe: does a global colour calibration of generated tiles (CIELAB mean/sd matched to train) move FID?

    .venv/bin/python benchmarks/probe_colour_calibration.py --fit bench_out/sweep_v2b/dpm_20_1.5 \\
        --eval bench_out/sweep_v2b/ddim_50_1.5 --cache bench_out/cache --threads 1

Fits one affine map per CIELAB channel that moves the pooled statistics of the ``--fit`` folder's tiles onto
those of the train tiles (6 numbers), applies it to each ``--eval`` folder's tiles, and scores raw and
calibrated tiles against all train tiles in Inception features (the issue-H protocol; no test tile is read).
Fit on one generated set and evaluate on another (same model), so the calibration is not fitted to the tiles it
is scored on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from skimage.color import lab2rgb, rgb2lab

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402
from bench_quality import DEFAULT_DATA, cache_key, cached_features  # noqa: E402

from histosynth.data.images import read_rgb  # noqa: E402
from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.evaluation.fidelity import fidelity_metrics  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402

TILE_SIZE = 224


def load_folder(folder: Path) -> np.ndarray:
    return np.stack([read_rgb(path) for path in sorted((folder / "images").glob("*.png"))])


def lab_moments(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled per-channel CIELAB mean and sd (every second tile: plenty for 6 numbers)."""
    lab = rgb2lab(tiles[::2].reshape(-1, 1, 3) / 255.0).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def calibrate(tiles: np.ndarray, source: tuple[np.ndarray, np.ndarray],
              target: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    out = np.empty_like(tiles)
    for i, tile in enumerate(tiles):
        lab = (rgb2lab(tile / 255.0) - source[0]) / source[1] * target[1] + target[0]
        out[i] = np.clip(lab2rgb(lab) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=Path, required=True, help="generated folder the calibration is fitted on")
    parser.add_argument("--eval", type=Path, nargs="+", required=True, help="generated folders scored")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--cache", type=Path, default=Path("bench_out/cache"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    train = load_tile_tensors(load_manifest(args.data).select_split("train"), TILE_SIZE)
    train_pixels = train.images.permute(0, 2, 3, 1).numpy()  # uint8 N x H x W x 3
    train_f = cached_features(args.cache, "train", cache_key(str(Path(args.data).resolve()), TILE_SIZE, train.ids),
                              (x.permute(1, 2, 0).numpy() for x in train.images), len(train), "cpu")
    target, source = lab_moments(train_pixels), lab_moments(load_folder(args.fit))
    rows = []
    for folder in args.eval:
        raw = load_folder(folder)
        for name, tiles in (("raw", raw), ("calibrated", calibrate(raw, source, target))):
            key = cache_key(hashlib.sha256(tiles.tobytes()).hexdigest())  # the pixels, so a changed folder re-encodes
            metrics = fidelity_metrics(train_f, cached_features(args.cache, "colour-probe", key, iter(tiles),
                                                                len(tiles), "cpu"))
            rows.append({"folder": str(folder), "tiles": name, **{k: round(float(v), 4) for k, v in metrics.items()}})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"command": " ".join(sys.argv), "machine": machine(), "train_lab": [t.tolist() for t in target],
                      "fit_lab": [s.tolist() for s in source], "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
