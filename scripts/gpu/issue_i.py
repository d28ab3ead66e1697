"""Helpers of issue I's prepared GPU run (scripts/gpu/issue_i_generators.sh, scripts/gpu/README.md): shipping the
base and the per-subset fine-tunes as float16 on the device, its summary, and receiving them here as the model
folders scripts/issue_i_leakfree.py skips to its downstream grid.

    python scripts/gpu/issue_i.py ship --work /tmp/issue_i --bundle /tmp/issue_i/bundle/issue_i
    python scripts/gpu/issue_i.py summary --work /tmp/issue_i --bundle /tmp/issue_i/bundle/issue_i --t0 T0 --budget 480
    python scripts/gpu/issue_i.py receive FILES_AT --dest bench_out/issue_i/leakfree_gpu

Bundling and the digests are issue_h.py's (``bundle --max-parts 7``, ``unpack_bundle``); the model folders are
assembled by the driver's own ``assemble``, after the subset each fine-tune saw is checked against the draw
bench_downstream makes here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "scripts"))
import issue_h  # noqa: E402
import issue_i_leakfree as driver  # noqa: E402

BASE = "base"
LEAKFREE = "leakfree"


def _cells(work: Path) -> list[Path]:
    """The fine-tune folders the driver made on the device (finished, finalised or not)."""
    root = work / LEAKFREE / "train"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _copy_if(source: Path, target: Path) -> None:
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def ship(args: argparse.Namespace) -> None:
    """Into the bundle: ship/base and ship/<cell> (float16 denoiser + classes.json), runs/<name>/ (run.json,
    metrics.jsonl; a cell's subset.json), the two configs, and the tail of each cell's log."""
    from histosynth.models.folder import copy_model_half_precision  # records the float32 digest (float16_of)

    work, bundle = Path(args.work), Path(args.bundle)
    base = work / BASE
    if (base / "denoiser" / "histosynth.json").is_file():
        copy_model_half_precision(base, bundle / "ship" / BASE)
    for name in ("run.json", "metrics.jsonl"):
        _copy_if(base / "runs" / "denoiser" / name, bundle / "runs" / BASE / name)
    for config in ("base.yaml", "finetune.yaml"):
        _copy_if(work / config, bundle / "runs" / config)
    shipped = []
    for cell in _cells(work):
        if (cell / "denoiser" / "histosynth.json").is_file():
            copy_model_half_precision(cell, bundle / "ship" / cell.name)
            shipped.append(cell.name)
        for name in ("run.json", "metrics.jsonl"):
            _copy_if(cell / "runs" / "denoiser" / name, bundle / "runs" / cell.name / name)
        _copy_if(work / LEAKFREE / "subsets" / cell.name / "subset.json", bundle / "runs" / cell.name / "subset.json")
        log = work / LEAKFREE / "logs" / f"{cell.name}.log"
        if log.is_file():
            (bundle / "logs").mkdir(parents=True, exist_ok=True)
            (bundle / "logs" / log.name).write_bytes(log.read_bytes()[-50_000:])
    print(f"{bundle}: base {'shipped' if (bundle / 'ship' / BASE).is_dir() else 'MISSING'}, "
          f"{len(shipped)} fine-tune(s) shipped: {', '.join(shipped) or '-'}")


def _metrics(run: Path) -> dict[str, Any]:
    path = run / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not lines:
        return {}
    rates = [line["items_per_s"] for line in lines[1:]] or [lines[0]["items_per_s"]]
    return {"logged_steps": lines[-1]["step"], "last_loss": round(lines[-1]["loss"], 4),
            "items_per_s_mean": round(sum(rates) / len(rates), 1)}


def _model_facts(folder: Path) -> dict[str, Any]:
    path = folder / "denoiser" / "histosynth.json"
    if not path.is_file():
        return {"model": None}
    facts = json.loads(path.read_text())
    return {"steps": facts.get("training", {}).get("steps"), "stopped_early": facts.get("stopped_early"),
            "wall_seconds": facts.get("training", {}).get("wall_seconds")}


def summary(args: argparse.Namespace) -> None:
    """summary.json of the run (into the bundle, and printed): the base and every cell, planned and done."""
    import time
    import zipfile

    work, bundle = Path(args.work), Path(args.bundle)
    result: dict[str, Any] = {"dry_run": args.dry == "1", "budget_s": args.budget,
                              "elapsed_s_at_summary": round(time.time() - args.t0)}
    pack = REPO / ".gpu" / "ebhi_train.zip"
    if pack.is_file():
        with zipfile.ZipFile(pack) as archive:
            info = json.loads(archive.read("pack.json"))
        result["data"] = {k: info[k] for k in ("rows", "codec", "quality", "psnr_vs_source_mean")}
    base = work / BASE
    run = base / "runs" / "denoiser"
    entry: dict[str, Any] = {}
    if (work / "base.rc").is_file():
        rc, secs = (work / "base.rc").read_text().split()
        entry = {"exit": int(rc), "wall_s": int(secs), "stopped_by_budget": rc in ("124", "137")}
    if (run / "run.json").is_file():
        settings = json.loads((run / "run.json").read_text())
        entry.update(planned_steps=settings["train"]["steps"], batch_size=settings["train"]["batch_size"],
                     condition_dropout=settings["objective"]["condition_dropout"])
    result["base"] = {**entry, **_metrics(run), **_model_facts(base)}
    if (work / "finetunes.rc").is_file():
        rc, secs = (work / "finetunes.rc").read_text().split()
        result["finetunes"] = {"exit": int(rc), "wall_s": int(secs), "stopped_by_budget": rc in ("124", "137")}
    cells = {}
    for cell in _cells(work):
        subset = work / LEAKFREE / "subsets" / cell.name / "subset.json"
        counts = json.loads(subset.read_text()) if subset.is_file() else {}
        settings_path = cell / "runs" / "denoiser" / "run.json"
        planned = json.loads(settings_path.read_text())["train"]["steps"] if settings_path.is_file() else None
        cells[cell.name] = {"labelled": counts.get("labelled"), "unlabelled": counts.get("unlabelled"),
                            "planned_steps": planned, **_metrics(cell / "runs" / "denoiser"), **_model_facts(cell),
                            "shipped": (bundle / "ship" / cell.name).is_dir()}
    result["cells"] = cells
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "summary.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def receive(args: argparse.Namespace) -> None:
    """Here: check and unpack what came back into DEST/bundle, then lay it out as the driver's OUT: DEST/base (the
    float16 base, with its run record), and for every shipped cell DEST/subsets/<cell> (the subset drawn here,
    which must hold the ids the device's did), DEST/train/<cell> and the complete DEST/models/<cell>."""
    from histosynth.data.subsets import write_subset
    from histosynth.io import atomic_dir

    dest = Path(args.dest)
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest}: exists and is not empty")
    bundle = issue_h.unpack_bundle(Path(args.files), dest / "bundle")
    base = dest / BASE
    shipped_base = bundle / "ship" / BASE
    if not (shipped_base / "denoiser" / "histosynth.json").is_file():
        raise SystemExit(f"{bundle}: no base denoiser came back")
    with atomic_dir(base) as tmp:
        shutil.copytree(shipped_base, tmp, dirs_exist_ok=True)
        for name in ("run.json", "metrics.jsonl"):
            _copy_if(bundle / "runs" / BASE / name, tmp / "runs" / "denoiser" / name)
    resolved = driver.resolve_base(base, Path(args.parts), allow_leaky=False)
    config = dest / "finetune.yaml"
    _copy_if(bundle / "runs" / "finetune.yaml", config)
    made = []
    for shipped in sorted(p for p in (bundle / "ship").iterdir() if p.is_dir() and p.name != BASE):
        device_subset = json.loads((bundle / "runs" / shipped.name / "subset.json").read_text())
        cell = driver.Cell(float(device_subset["fraction"]), int(device_subset["seed"]), dest)
        if cell.name != shipped.name:
            raise SystemExit(f"{shipped}: its subset.json names fraction {cell.fraction}, seed {cell.seed}")
        local = write_subset(args.data, cell.subset, cell.fraction, cell.seed, driver.DEFAULT_TASK, True,
                             str(base / "classes.json"))
        if sorted(local["ids"]) != sorted(device_subset["ids"]):
            raise SystemExit(f"{shipped.name}: the device drew another subset than {args.data} gives here")
        driver.check_subset(cell, Path(args.data))  # and it is bench_downstream's draw
        shutil.copytree(shipped, cell.train)
        for name in ("run.json", "metrics.jsonl"):
            _copy_if(bundle / "runs" / shipped.name / name, cell.train / "runs" / "denoiser" / name)
        made.append(driver.assemble(cell, resolved, local, config))
        facts = json.loads((cell.model / "denoiser" / "histosynth.json").read_text())
        stopped = facts.get("stopped_early")
        print(f"{cell.model}: {local['labelled']} labelled tiles, {facts['training']['steps']} steps"
              + (f" (STOPPED EARLY, planned {stopped['planned_steps']})" if stopped else ""))
    if (bundle / "summary.json").is_file():
        print((bundle / "summary.json").read_text())
    print(f"{len(made)} model folder(s) in {dest / 'models'}; the grid (cells without a model are fine-tuned here):\n"
          f"  .venv/bin/python scripts/issue_i_leakfree.py --base {base} --out {dest} --finetune-config {config} "
          f"--fractions FRACTIONS --seeds SEEDS")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ship", help=ship.__doc__)
    p.add_argument("--work", required=True)
    p.add_argument("--bundle", required=True)
    p.set_defaults(func=ship)
    p = sub.add_parser("summary", help=summary.__doc__)
    p.add_argument("--work", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--t0", type=int, required=True)
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--dry", default="0")
    p.set_defaults(func=summary)
    p = sub.add_parser("receive", help=receive.__doc__)
    p.add_argument("files", help="the folder the device tool put the files in (files_at)")
    p.add_argument("--dest", required=True)
    p.add_argument("--data", default=str(driver.DEFAULT_DATA), help="the full manifest (train, val, test)")
    p.add_argument("--parts", default=str(driver.DEFAULT_PARTS), help="autoencoder and mask model of the folders")
    p.set_defaults(func=receive)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
