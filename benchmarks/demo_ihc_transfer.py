"""D demonstration: zero-shot appearance transfer of an IHC image (scikit-image's ``ihc.png``) onto new masks.

    .venv/bin/python benchmarks/demo_ihc_transfer.py --out docs/ihc_transfer.jpg

Classes come from colour deconvolution (``skimage.color.rgb2hed``): DAB-positive (Otsu on the DAB
channel), hematoxylin (Otsu on H, where not DAB), background (the rest). The appearance is the
top-left 224 px crop with its mask; the targets are the masks of other crops of the same image,
flipped or rotated, so their layouts differ from the appearance. The shipped H&E model never saw
IHC: this is the zero-shot setting, with the null mask condition (the classes are not its own).
Rows: target mask | class-masked AdaIN, alternating | all classes every step | unmasked AdaIN.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

TILE = 224
PALETTE = np.array([[245, 245, 245], [70, 90, 200], [150, 80, 20]], np.uint8)  # background, hematoxylin, DAB


def ihc_classes(image: np.ndarray) -> np.ndarray:
    """0 background, 1 hematoxylin, 2 DAB-positive, by colour deconvolution and Otsu thresholds."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    hed = rgb2hed(image)
    dab, hema = hed[..., 2], hed[..., 0]
    classes = np.zeros(image.shape[:2], np.uint8)
    classes[hema > threshold_otsu(hema)] = 1
    classes[dab > threshold_otsu(dab)] = 2
    return classes


def main(argv: list[str] | None = None) -> int:
    from histosynth.data.images import read_rgb
    from histosynth.data.samples import ihc_sample_path
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.models.conditioning import dihedral_mask
    from histosynth.sampling.transfer.appearance import AppearanceTransfer, TransferSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default="docs/ihc_transfer.jpg", help=".jpg (quality 85) or .png")
    args = parser.parse_args(argv)

    image = read_rgb(ihc_sample_path())
    classes = ihc_classes(image)
    appearance, appearance_mask = image[:TILE, :TILE], classes[:TILE, :TILE]
    corners = [(TILE, TILE, 1), (0, 288, 4), (288, 0, 6)]  # (y, x, symmetry) of the target crops
    targets = [dihedral_mask(classes[y:y + TILE, x:x + TILE], k) for y, x, k in corners]
    model = LatentDiffusionModel.load(args.model)
    modes = ("alternate", "all", "plain")
    columns = [[appearance, PALETTE[appearance_mask]] + [np.full_like(appearance, 255)] * 2]
    for index, target in enumerate(targets):
        column = [PALETTE[target]]
        for mode in modes:
            start = time.perf_counter()
            runner = AppearanceTransfer(model, TransferSettings(steps=args.steps, adain=mode))
            column.append(runner.transfer(appearance, appearance_mask, target, seed=index))
            print(f"target {index} {mode}: {time.perf_counter() - start:.1f} s", flush=True)
        columns.append(column)
    sheet = np.concatenate([np.concatenate(column, axis=0) for column in columns], axis=1)
    from PIL import Image

    from histosynth.io import atomic_path, save_png

    if args.out.lower().endswith((".jpg", ".jpeg")):
        with atomic_path(args.out) as tmp:
            Image.fromarray(sheet).save(tmp, format="JPEG", quality=85)
    else:
        save_png(args.out, sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}); {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
