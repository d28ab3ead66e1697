"""Copy a trained model folder into the package as shipped weights (float16 storage).

    .venv/bin/python scripts/ship_model.py runs/gpu/concat src/histosynth/weights/default

Training runs' ``runs/`` (checkpoints, metrics) stay behind; docs/models.md records them.
"""

from __future__ import annotations

import argparse

from histosynth.io import file_digest
from histosynth.models.folder import copy_model_half_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    args = parser.parse_args()
    for path in copy_model_half_precision(args.source, args.destination):
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  sha256 {file_digest(path)[:12]}")


if __name__ == "__main__":
    main()
