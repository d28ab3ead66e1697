"""D benchmark: appearance transfer on EBHI-Seg gland segmentation (seed 002, section 4.1), mask
adherence and speed.

    .venv/bin/python benchmarks/bench_transfer.py --fractions 0.1 --rounds 1 --seeds 3 --variants alternate,plain

For every (fraction, seed) subset of the train split (whole cases, stratified by class, as
``bench_downstream.py``), each real tile X of the subset gets, per round k, one transferred tile: the
structure is X's mask under the k-th square symmetry, the appearance is the k-th tile of the *same
subset* (same class where possible, not X, showing every class X's mask holds) closest to X in gland
fraction. Variants: class-masked AdaIN alternating classes by step ("alternate", seed 002), every class
every step ("all"), the original unmasked AdaIN ("plain"). Tiles carry ``mask_source = train:X``, so the
downstream grid (B's runner, "paired") adds exactly the first k transferred tiles of each of its own real
tiles. Everything resumes.

Mask adherence: the reference U-Net trained on all real train tiles (cached, as in
``bench_quality.py``) segments the transferred tiles; Dice against the target masks, beside the same
U-Net on real test tiles and on the shipped model's sampled tiles (``bench_downstream.py``'s folder).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import cached_segmenter, machine, peak_rss_mib  # noqa: E402
from bench_quality import DEFAULT_DATA, progress  # noqa: E402

from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.data.splits import subsample_by_case  # noqa: E402
from histosynth.evaluation.downstream import DownstreamConfig, run_downstream, summarise  # noqa: E402
from histosynth.io import write_json  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.models.conditioning import dihedral_mask  # noqa: E402
from histosynth.sampling.transfer.appearance import AppearanceTransfer, TransferSettings  # noqa: E402
from histosynth.sampling.writer import SyntheticDatasetWriter, SyntheticRow, read_finished, write_dataset  # noqa: E402
from histosynth.training.tensors import TileTensors, load_tile_tensors  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--fractions", default="0.1")
    parser.add_argument("--rounds", default="1", help="transfer rounds to run the grid with (0 is always added)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", default="alternate,plain")
    parser.add_argument("--steps", type=int, default=20, help="inversion and sampling steps")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--reuse-round0", default="bench_out/downstream/segmentation.runs.jsonl",
                        help="runs file of bench_downstream.py whose round-0 runs (same subsets, seeds and training "
                             "steps) are copied instead of retrained; '' to retrain them")
    parser.add_argument("--out", default="bench_out/transfer")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--device", default="cpu", help="torch device of the transfer (e.g. cuda)")
    parser.add_argument("--only-ids", default="",
                        help="file of tile ids (one per line): make only these, and read only the images they use "
                             "(no adherence figures then: the other train images are not read)")
    parser.add_argument("--shard", default="0/1", help="I/N: this process makes every N-th tile from the I-th")
    parser.add_argument("--skip-adherence", action="store_true", help="no mask-adherence figures (grid still runs)")
    parser.add_argument("--merge-from", default="",
                        help="comma-separated output folders of sharded runs: copy their tiles into --out and stop")
    return parser.parse_args(argv)


def gland_fraction(mask: torch.Tensor) -> float:
    return float((mask == 1).float().mean())


def plan(train: TileTensors, subsets: list[list[str]], rounds: int) -> list[tuple[str, int, int, int]]:
    """(tile id, structure index, appearance index, round) for every subset tile and round 1..rounds."""
    index_of = {tile_id: i for i, tile_id in enumerate(train.ids)}
    items, seen = [], set()
    for subset in subsets:
        members = [index_of[t] for t in subset if bool(train.mask_known[index_of[t]])]
        fraction = {i: gland_fraction(train.masks[i]) for i in members}
        holds = {i: set(torch.unique(train.masks[i]).tolist()) for i in members}
        for x in members:
            if train.ids[x] in seen:
                continue  # a tile in two subsets keeps the first subset's appearances
            seen.add(train.ids[x])
            # an appearance must show every class the target holds (transfer refuses otherwise)
            covering = [i for i in members if i != x and holds[x] <= holds[i]]
            same = [i for i in covering if int(train.labels[i]) == int(train.labels[x])]
            pool = same or covering
            if not pool:
                continue  # no tile of the subset can lend every class X holds
            pool.sort(key=lambda i: (abs(fraction[i] - fraction[x]), train.ids[i]))
            for k in range(1, rounds + 1):
                items.append((f"{train.ids[x]}__r{k}", x, pool[(k - 1) % len(pool)], k))
    return items


def load_train(manifest, size: int, image_ids: set[str] | None = None) -> TileTensors:
    """The train split's tensors; with ``image_ids``, only those images are read (others stay zero)."""
    from histosynth.data.images import read_mask
    from histosynth.data.manifest import TileManifest

    if image_ids is None:
        return load_tile_tensors(manifest, size)
    chosen = TileManifest(manifest.source, [r for r in manifest.records if r.id in image_ids], manifest.classes)
    part = load_tile_tensors(chosen, size) if chosen.records else None
    n = len(manifest.records)
    images = torch.zeros((n, 3, size, size), dtype=torch.uint8)
    masks = torch.zeros((n, size, size), dtype=torch.uint8)
    known = torch.zeros(n, dtype=torch.bool)
    where = {tile_id: i for i, tile_id in enumerate(part.ids)} if part is not None else {}
    for i, record in enumerate(manifest.records):
        if record.id in where:
            images[i], masks[i], known[i] = part.images[where[record.id]], part.masks[where[record.id]], True
        elif record.mask is not None:
            masks[i], known[i] = torch.from_numpy(read_mask(record.mask, manifest.classes)), True
    return TileTensors(images, masks, known, torch.tensor(manifest.label_ids(), dtype=torch.long),
                       [r.id for r in manifest.records])


def merge_shards(sources: list[Path], folder: Path, order: list[str]) -> int:
    """Copy the finished tiles of sharded runs' folders into ``folder``; manifest in plan ``order``."""
    import shutil

    writer = SyntheticDatasetWriter(folder)
    for source in sources:
        for tile_id, row in read_finished(source).items():
            for name in (row.image, row.mask):
                shutil.copyfile(source / name, folder / name)
            writer.rows[tile_id] = row
    writer.flush(order)
    return len(writer.rows)


def generate(model: LatentDiffusionModel, train: TileTensors, items, variant: str, steps: int, folder: Path,
             device: str = "cpu") -> dict:
    transfer = AppearanceTransfer(model, TransferSettings(steps=steps, adain=variant), device=device)
    labels, planned = model.classes.labels, []
    for tile_id, x, y, k in items:
        row = SyntheticRow.of(tile_id, label=labels[int(train.labels[x])], seed=1000 * x + k,
                              model=transfer.backbone.identity, sampler=f"transfer-{variant}", steps=steps,
                              guidance=transfer.settings.swap_guidance, mask_source=f"train:{train.ids[x]}")
        planned.append((row, (x, y, dihedral_mask(train.masks[x].numpy().astype(np.uint8), k))))

    def make(batch: list[tuple[SyntheticRow, tuple[int, int, np.ndarray]]]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(transfer.transfer(train.images[y].permute(1, 2, 0).numpy(), train.masks[y].numpy().astype(np.uint8),
                                   target, label=int(train.labels[x]), seed=row.seed, source=row.id), target)
                for row, (x, y, target) in batch]

    start = time.perf_counter()
    result = write_dataset(folder, planned, make, tile_size=model.tile_size, batch_size=1, classes=model.classes,
                           on_tile=progress(variant, len(planned), every=10))
    elapsed = time.perf_counter() - start
    return {"made": result.written, "seconds": round(elapsed, 1),
            "seconds_per_tile": round(elapsed / result.written, 2) if result.written else None}


def adherence(segmenter, tiles: TileTensors) -> dict:
    from histosynth.evaluation.segmentation import dice_per_image, predict_masks

    known = tiles.mask_known
    dice = dice_per_image(predict_masks(segmenter, tiles.images[known], 112), tiles.masks[known])
    return {"n": int(known.sum()), "dice_mean": round(float(dice.mean()), 4), "dice_sd": round(float(dice.std()), 4)}


def run(args: argparse.Namespace, command: str) -> dict:
    from histosynth.evaluation.audit import load_synthetic
    from histosynth.evaluation.segmentation import SegmentationTrainConfig

    out = Path(args.out)
    fractions = [float(v) for v in args.fractions.split(",")]
    rounds = [int(v) for v in args.rounds.split(",") if int(v) > 0]
    variants = args.variants.split(",")
    model = LatentDiffusionModel.load(args.model)
    manifest = load_manifest(args.data, classes=model.classes)
    train_m = manifest.select_split("train")
    only = set(Path(args.only_ids).read_text().split()) if args.only_ids else None
    train = load_train(train_m, model.autoencoder_config.tile_size, None if only is None else set())
    subsets = [[r.id for r in subsample_by_case(train_m.records, f, s)] for f in fractions for s in range(args.seeds)]
    items = plan(train, subsets, max(rounds))
    if args.merge_from:
        for variant in variants:
            sources = [Path(folder) / variant for folder in args.merge_from.split(",")]
            print(f"{variant}: {merge_shards(sources, out / variant, [i[0] for i in items])} tiles", flush=True)
        return {}
    if only is not None:  # a device run: make the listed tiles, reading only the images they use
        items = [item for item in items if item[0] in only]
        needed = {train.ids[y] for _, _, y, _ in items}  # targets need only their masks
        train = load_train(train_m, model.autoencoder_config.tile_size, needed)
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    make = items[shard::n_shards]
    result: dict = {"command": command, "machine": machine(), "steps": args.steps, "n_synthetic": len(items),
                    "generation": {}, "adherence": {}, "grid": {}}
    for variant in variants:
        result["generation"][variant] = generate(model, train, make, variant, args.steps, out / variant, args.device)
    if not args.skip_adherence and only is None:  # with --only-ids most train images are blank
        known = train.mask_known
        segmenter = cached_segmenter(train.images[known], train.masks[known], SegmentationTrainConfig())
        test = load_tile_tensors(manifest.select_split("test"), model.autoencoder_config.tile_size)
        result["adherence"]["real test"] = adherence(segmenter, test)
        sampled = Path("bench_out/downstream/synthetic")
        if (sampled / "manifest.csv").is_file():
            result["adherence"]["sampled (shipped model, bench_downstream)"] = adherence(
                segmenter, load_tile_tensors(load_synthetic(sampled), model.autoencoder_config.tile_size))
        for variant in variants:
            synth = load_tile_tensors(load_synthetic(out / variant), model.autoencoder_config.tile_size)
            result["adherence"][f"transfer-{variant}"] = adherence(segmenter, synth)
    if not args.generate_only:
        for variant in variants:
            runs_path = out / f"{variant}.runs.jsonl"
            if args.reuse_round0 and Path(args.reuse_round0).is_file() and not runs_path.exists():
                reused = [line for line in Path(args.reuse_round0).read_text().splitlines()
                          if json.loads(line)["rounds"] == 0 and json.loads(line)["fraction"] in fractions
                          and json.loads(line)["seed"] < args.seeds]
                runs_path.parent.mkdir(parents=True, exist_ok=True)
                runs_path.write_text("".join(line + "\n" for line in reused))
            config = DownstreamConfig(task="segmentation", fractions=tuple(fractions), rounds=(0, *rounds),
                                      seeds=args.seeds, steps=args.train_steps, pairing="paired")
            runs = run_downstream(args.data, out / variant, config, runs_path,
                                  on_run=lambda r, v=variant: print(
                                      f"{v} {r.fraction:g}/{r.rounds}/{r.seed}: {r.n_real} real + {r.n_synthetic} "
                                      f"transferred, test Dice {r.test_score:.3f} ({r.seconds:.0f} s)", flush=True))
            result["grid"][variant] = summarise(runs)
    result["peak_rss_mib"] = round(peak_rss_mib())
    write_json(out / "transfer.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    result = run(args, command)
    if not result:
        return 0
    print(json.dumps({k: result[k] for k in ("generation", "adherence", "grid")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
