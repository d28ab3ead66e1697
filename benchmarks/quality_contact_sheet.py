"""Contact sheet for docs: real train tiles beside generated ones of the same class, per class.

    .venv/bin/python benchmarks/quality_contact_sheet.py --synthetic bench_out/quality_h_v1/synthetic \\
        --synthetic bench_out/quality_h_v2/synthetic --names "v1 (shipped)" "v2 (decoder fine-tune)" \\
        --out docs/quality_contact_sheet.png

Each class gets one row of real train tiles (seeded draw) and one row per synthetic folder (``bench_quality.py``
output). Folders made from the same plan (same seeds, labels and masks) show the same tiles by id, so two
models that share a denoiser show the same latents decoded by each model's decoder.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import DEFAULT_DATA  # noqa: E402

from histosynth.data.images import read_mask, read_raw_mask, read_rgb  # noqa: E402
from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.report.contact_sheet import write_contact_sheet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--synthetic", action="append", required=True, help="bench_quality synthetic folder(s)")
    parser.add_argument("--names", nargs="*", help="one row title per --synthetic")
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/quality_contact_sheet.png")
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        print(f"skipped: no data at {args.data}")
        return 0
    names = args.names or [Path(folder).parent.name for folder in args.synthetic]
    manifest = load_manifest(args.data).select_split("train")
    rng = np.random.default_rng(args.seed)
    with open(Path(args.synthetic[0]) / "manifest.csv", newline="") as handle:
        first = list(csv.DictReader(handle))
    rows = []
    for label in manifest.classes.labels:
        real = [r for r in manifest.records if r.label == label]
        picks = rng.choice(len(real), min(args.per_class, len(real)), replace=False)
        rows.append((f"real {label}"[:24], [read_rgb(real[i].image) for i in picks],
                     [read_mask(real[i].mask, manifest.classes) for i in picks]))
        ids = [r["id"] for r in first if r["label"] == label][:args.per_class]
        for name, folder in zip(names, args.synthetic):
            folder = Path(folder)
            rows.append((f"{name}"[:24], [read_rgb(folder / "images" / f"{i}.png") for i in ids],
                         [read_raw_mask(folder / "masks" / f"{i}.png") for i in ids]))
    print(f"wrote {write_contact_sheet(args.out, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
