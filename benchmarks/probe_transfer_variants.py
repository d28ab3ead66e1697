"""D probe: mask adherence of the AdaIN variants on the same first N round-1 tiles of one 10% subset.

    .venv/bin/python benchmarks/probe_transfer_variants.py --tiles 48

Makes the "all classes every step" tiles with ``bench_transfer.py``'s plan (seed 0's 10% subset, round
1) into ``--out``/all, then scores those tile ids in every variant folder that holds them (the
"alternate" and "plain" folders come from ``bench_transfer.py``) with the cached reference U-Net.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cached_segmenter  # noqa: E402
from bench_quality import DEFAULT_DATA  # noqa: E402
from bench_transfer import adherence, generate, plan  # noqa: E402

from histosynth.data.manifest import TileManifest, load_manifest  # noqa: E402
from histosynth.data.splits import subsample_by_case  # noqa: E402
from histosynth.evaluation.audit import load_synthetic  # noqa: E402
from histosynth.evaluation.segmentation import SegmentationTrainConfig  # noqa: E402
from histosynth.io import write_json  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--tiles", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="bench_out/transfer")
    args = parser.parse_args(argv)
    out = Path(args.out)
    model = LatentDiffusionModel.load(args.model)
    size = model.autoencoder_config.tile_size
    train_m = load_manifest(args.data, classes=model.classes).select_split("train")
    train = load_tile_tensors(train_m, size)
    items = plan(train, [[r.id for r in subsample_by_case(train_m.records, 0.1, 0)]], 1)[:args.tiles]
    result: dict = {"tiles": len(items), "generation_all": generate(model, train, items, "all", args.steps, out / "all")}
    known = train.mask_known
    segmenter = cached_segmenter(train.images[known], train.masks[known], SegmentationTrainConfig())
    ids = {item[0] for item in items}
    for variant in ("alternate", "all", "plain"):
        if not (out / variant / "manifest.csv").is_file():
            continue
        synth = load_synthetic(out / variant)
        chosen = TileManifest(synth.source, [r for r in synth.records if r.id in ids], synth.classes)
        result[variant] = adherence(segmenter, load_tile_tensors(chosen, size))
    write_json(out / "variants_probe.json", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
