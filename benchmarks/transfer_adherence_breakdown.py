"""D: mask adherence of the transferred tiles, by variant, by round and by where they were made.

    .venv/bin/python benchmarks/transfer_adherence_breakdown.py [--out bench_out/transfer]

Tiles whose ids appear in a sharded device run's folder (``OUT/dev*/*_s*/<variant>/manifest.csv``, the
folders ``bench_transfer.py --merge-from`` read) count as GPU-made, the rest as CPU-made. The segmenter is
``bench_transfer.py``'s: the reference U-Net trained on all real train tiles (cached).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cached_segmenter  # noqa: E402
from bench_quality import DEFAULT_DATA  # noqa: E402
from bench_transfer import adherence  # noqa: E402

from histosynth.data.manifest import TileManifest, load_manifest  # noqa: E402
from histosynth.evaluation.audit import load_synthetic  # noqa: E402
from histosynth.evaluation.segmentation import SegmentationTrainConfig  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/transfer")
    parser.add_argument("--variants", default="alternate,plain")
    parser.add_argument("--model", default="src/histosynth/weights/default")
    args = parser.parse_args()
    out = Path(args.out)
    model = LatentDiffusionModel.load(args.model)
    size = model.autoencoder_config.tile_size
    train = load_tile_tensors(load_manifest(DEFAULT_DATA, classes=model.classes).select_split("train"), size)
    known = train.mask_known
    segmenter = cached_segmenter(train.images[known], train.masks[known], SegmentationTrainConfig())
    result = {}
    for variant in args.variants.split(","):
        gpu = {row["id"] for path in out.glob(f"dev*/*_s*/{variant}/manifest.csv") for row in csv.DictReader(open(path))}
        synthetic = load_synthetic(out / variant)
        groups = {"CPU-made": lambda r: r.id not in gpu, "GPU-made": lambda r: r.id in gpu}
        groups.update({f"round {k}": (lambda r, k=k: r.id.endswith(f"__r{k}")) for k in range(1, 6)})
        groups["all"] = lambda r: True
        for name, keep in groups.items():
            records = [r for r in synthetic.records if keep(r)]
            if records:
                tiles = load_tile_tensors(TileManifest(synthetic.source, records, synthetic.classes), size)
                result[f"{variant} {name}"] = adherence(segmenter, tiles)
    (out / "adherence_breakdown.json").write_text(json.dumps(result, indent=1))
    for name, figures in result.items():
        print(f"{name:24s} n={figures['n']:5d}  Dice {figures['dice_mean']:.3f} +- {figures['dice_sd']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
