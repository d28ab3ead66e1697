"""Copy a trained model folder into the package as shipped weights (float16 storage).

    .venv/bin/python scripts/ship_model.py runs/gpu/concat src/histosynth/weights/default

Training runs' ``runs/`` (checkpoints, metrics) stay behind; docs/models.md records them. ``--keep-run-record``
keeps each run's ``run.json`` and ``metrics.jsonl`` (a committed research model, e.g. issue I's leak-free base,
whose run record says it never saw a label):

    .venv/bin/python scripts/ship_model.py runs/uncond_base models/issue_i_uncond_base --keep-run-record
"""

from __future__ import annotations

import argparse

from histosynth.io import file_digest
from histosynth.models.folder import copy_model_half_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--keep-run-record", action="store_true",
                        help="keep runs/<part>/run.json and metrics.jsonl (not the checkpoints)")
    args = parser.parse_args()
    for path in copy_model_half_precision(args.source, args.destination, args.keep_run_record):
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  sha256 {file_digest(path)[:12]}")


if __name__ == "__main__":
    main()
