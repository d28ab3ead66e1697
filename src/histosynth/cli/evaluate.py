"""``histosynth evaluate fidelity|privacy``: audit a synthetic dataset folder against real tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Audit a synthetic dataset: fidelity to real tiles, memorisation of training tiles.",
                  no_args_is_help=True)

SYNTHETIC = typer.Option(..., "--synthetic", help="Synthetic dataset folder (manifest.csv, or images/ [+ masks/]).")
ENCODER = typer.Option("inception", "--encoder", help="Feature encoder: inception, efficientnet-lite0, histology, pixels.")
CACHE = typer.Option(None, "--cache", help="Feature cache folder (default $HISTOSYNTH_CACHE or ~/.cache/histosynth).")
DEVICE = typer.Option("cpu", "--device", help="torch device for the encoder (cpu, cuda, ...).")
OUT = typer.Option(None, "--out", help="JSON result (default SYNTHETIC/audit/<metric>_<encoder>.json).")


#: Below this many tiles per set FID is strongly biased upwards (the 2048-d Inception covariance is rank-deficient).
FID_MIN_TILES = 2048
#: Tiles per set behind the FID figures in docs/benchmarks.md (the EBHI-Seg test split).
DOCS_FID_TILES = 412


def _checked_out(kind: str, synthetic: Path, encoder_name: str, device: str, out: Optional[Path]) -> Path:
    """The result file (default SYNTHETIC/audit/<kind>_<encoder>.json), checked with the device before any work."""
    from histosynth.checks import check_device
    from histosynth.io import prepare_output_file

    check_device(device)
    return prepare_output_file(out or synthetic / "audit" / f"{kind}_{encoder_name}.json")


def fid_warning(n_synthetic: int, n_real: int) -> str | None:
    """One line when a set is too small for FID to mean much on its own (None otherwise)."""
    n = min(n_synthetic, n_real)
    if n >= FID_MIN_TILES:
        return None
    return (f"warning: FID with n={n} is strongly biased (fewer tiles than the {FID_MIN_TILES} Inception features); "
            f"compare FIDs only at equal n, and use >= {DOCS_FID_TILES} tiles for the figures in docs")


def _run(kind: str, synthetic: Path, encoder_name: str, device: str, cache: Optional[Path], out: Path,
         total: int, compute) -> dict:
    from histosynth.cli.progress import progress_bar
    from histosynth.encoders.registry import get_encoder
    from histosynth.evaluation.features import default_cache_dir
    from histosynth.io import write_json

    encoder = get_encoder(encoder_name, device)
    with progress_bar(f"{kind}: {encoder_name} features", total) as advance:
        result = compute(encoder, cache or default_cache_dir(), advance).to_dict()
    write_json(out, result)
    typer.echo(f"wrote {out}")
    return result


def _count(*manifests) -> int:
    return sum(len(m.records) for m in manifests)


@app.command()
def fidelity(
    real: Path = typer.Option(..., "--real", help="Real manifest with train and held-out splits."),
    synthetic: Path = SYNTHETIC,
    split: str = typer.Option("test", "--split", help="Held-out real split to compare against."),
    train_split: str = typer.Option("train", "--train-split", help="Real split used for the floors."),
    encoder: str = ENCODER, k: int = typer.Option(3, "--k", min=1, help="k of the k-NN manifolds."),
    c2st: bool = typer.Option(True, "--c2st/--no-c2st", help="Classifier two-sample test: train a small CNN to "
                              "tell synthetic from held-out real tiles; held-out accuracy near 0.5 = indistinguishable."),
    c2st_steps: int = typer.Option(300, "--c2st-steps", min=1, help="C2ST training steps (batches of 32)."),
    c2st_size: int = typer.Option(64, "--c2st-size", min=16, max=512, help="C2ST tile size in px (tiles are downsized)."),
    c2st_max: int = typer.Option(1000, "--c2st-max", min=10, help="C2ST uses at most this many tiles per side "
                                 "(half train, half held-out)."),
    c2st_seed: int = typer.Option(0, "--c2st-seed", help="Seed of the C2ST subsample, split, weights and batches."),
    c2st_floor: bool = typer.Option(False, "--c2st-floor", help="Also run the C2ST on real train vs held-out tiles "
                                    "(how far apart the real splits are; doubles its time)."),
    cache: Optional[Path] = CACHE, device: str = DEVICE, out: Optional[Path] = OUT,
) -> None:
    """FID, KID, precision/recall, density/coverage of SYNTHETIC vs real held-out tiles, beside the
    same metrics for real train vs held-out (all train tiles, and a subset as large as SYNTHETIC),
    and a classifier two-sample test on the pixels (10-20 s on one CPU thread by default; on --device)."""
    from histosynth.data.manifest import load_manifest
    from histosynth.evaluation.audit import audit_fidelity, load_synthetic
    from histosynth.evaluation.verdict import fidelity_verdict

    out = _checked_out("fidelity", synthetic, encoder, device, out)
    config = None
    if c2st or c2st_floor:
        from histosynth.evaluation.c2st import C2STConfig

        config = C2STConfig(steps=c2st_steps, size=c2st_size, max_per_side=c2st_max, seed=c2st_seed)
    manifest = load_manifest(real)
    synthetic_set, heldout = load_synthetic(synthetic), manifest.select_split(split)
    total = _count(synthetic_set, heldout, manifest.select_split(train_split))
    warning = fid_warning(len(synthetic_set.records), len(heldout.records))
    if warning:
        typer.echo(warning, err=True)

    def compute(enc, cache_dir, advance):
        def on_step(step: int, steps: int) -> None:
            advance.set_status(f"C2ST step {step}/{steps}")

        return audit_fidelity(real, synthetic, enc, split, train_split, k, cache_dir, on_batch=advance, c2st=c2st,
                              c2st_config=config, c2st_floor=c2st_floor, on_c2st_step=on_step, device=device)

    result = _run("fidelity", synthetic, encoder, device, cache, out, total, compute)
    _table(f"fidelity ({result['encoder']})", ["synthetic vs held-out", "floor: train vs held-out",
                                                f"floor: {result['n_synthetic']} train vs held-out"],
           [result["synthetic_vs_heldout"], result["train_vs_heldout"], result["train_subset_vs_heldout"]])
    for name, figure in (("synthetic vs held-out", result["c2st"]), ("real train vs held-out", result["c2st_floor"])):
        if figure is not None:
            typer.echo(f"C2ST {name}: accuracy {figure['accuracy']:.3f} (95% CI {figure['ci_low']:.3f}-"
                       f"{figure['ci_high']:.3f}, n = {figure['n_heldout']} held-out, p = {figure['p_value']:.2g}; "
                       "0.5 = indistinguishable)")
    verdict = fidelity_verdict(result)
    typer.echo(f"verdict: {verdict.level}: {verdict.headline}")
    for reason in verdict.reasons:
        typer.echo(f"  - {reason}")


@app.command()
def privacy(
    train: Path = typer.Option(..., "--train", help="Real manifest holding the generator's training split."),
    synthetic: Path = SYNTHETIC,
    train_split: str = typer.Option("train", "--train-split", help="Split the generator was trained on."),
    heldout_split: str = typer.Option("test", "--heldout-split", help="Real split never seen in training."),
    quantile: float = typer.Option(0.01, "--quantile", help="Near-copy threshold: this quantile of held-out "
                                   "real tiles' distances to their nearest training tile."),
    cells: int = typer.Option(5, "--cells", min=2, help="k-means cells of the C_T test."),
    encoder: str = ENCODER, cache: Optional[Path] = CACHE, device: str = DEVICE, out: Optional[Path] = OUT,
) -> None:
    """Authenticity, the C_T data-copying statistic, near copies, and each synthetic tile's nearest
    training tiles in feature and pixel space (the gallery the report shows)."""
    from histosynth.data.manifest import load_manifest
    from histosynth.evaluation.audit import audit_privacy, load_synthetic

    out = _checked_out("privacy", synthetic, encoder, device, out)
    manifest = load_manifest(train)
    total = _count(load_synthetic(synthetic), manifest.select_split(train_split), manifest.select_split(heldout_split))
    result = _run("privacy", synthetic, encoder, device, cache, out, total,
                  lambda enc, cache_dir, advance: audit_privacy(train, synthetic, enc, train_split, heldout_split,
                                                                 quantile, cells, cache_dir=cache_dir, on_batch=advance))
    typer.echo(f"authenticity {result['authenticity']:.3f} (held-out real tiles: {result['authenticity_heldout']:.3f})"
               f"; C_T {result['ct_score']:.2f} over {result['ct_cells_used']}/{result['ct_cells']} cells"
               f"; near copies {result['near_copies']} of {result['n_synthetic']}"
               f" (threshold {result['near_copy_threshold']:.3f} = {quantile:g} quantile of held-out distances)")


@app.command()
def downstream(
    real: Path = typer.Option(..., "--real", help="Real manifest with train, val and test splits."),
    synthetic: Path = SYNTHETIC,
    task: str = typer.Option("segmentation", "--task", help="segmentation (Dice) or classification (balanced accuracy)."),
    fractions: str = typer.Option("1.0,0.25,0.1", "--fractions", help="Fractions of the real train split (whole cases)."),
    rounds: str = typer.Option("0,1,2,4", "--rounds", help="Synthetic tiles added per real tile."),
    seeds: int = typer.Option(3, "--seeds", min=1),
    steps: int = typer.Option(400, "--steps", min=1, help="Training steps per run (equal for every run)."),
    pairing: str = typer.Option("auto", "--pairing", help="paired: each run takes the synthetic tiles made from "
                                "its own real subset's masks (mask_source train:<id>); pool: a random draw from "
                                "the folder; auto: paired when every tile names its train source."),
    quick: bool = typer.Option(False, "--quick", help="Tiny grid for smoke tests: fractions 1.0, rounds 0,1, "
                               "1 seed, 20 steps, 32 px."),
    out: Optional[Path] = OUT,
) -> None:
    """Train small models on fractions of the real train split plus k rounds of synthetic tiles per
    real tile, select on val, report test mean +- sd over seeds. Resumes: finished runs are kept."""
    from histosynth.cli.progress import progress_bar
    from histosynth.evaluation.downstream import DownstreamConfig, run_downstream, summarise
    from histosynth.io import prepare_output_file, write_json

    if task not in ("segmentation", "classification"):
        from histosynth.errors import InputError

        raise InputError(f"unknown task {task!r}; choose segmentation or classification")
    if pairing not in ("auto", "paired", "pool"):
        from histosynth.errors import InputError

        raise InputError(f"unknown pairing {pairing!r}; choose auto, paired or pool")
    values = {"task": task, "fractions": _floats(fractions), "rounds": [int(v) for v in rounds.split(",")],
              "seeds": seeds, "steps": steps, "pairing": pairing}
    if quick:
        values.update(fractions=[1.0], rounds=[0, 1], seeds=1, steps=20, size=32, select_every=10)
    config = DownstreamConfig(**values)
    out = prepare_output_file(out or synthetic / "audit" / f"downstream_{task}.json")
    runs_path = out.with_suffix(".runs.jsonl")
    total = len(config.fractions) * len(config.rounds) * config.seeds
    with progress_bar(f"downstream {task}", total) as advance:
        runs = run_downstream(real, synthetic, config, runs_path, on_run=lambda run: advance(1))
    rows = summarise(runs)
    write_json(out, {"config": config.model_dump(mode="json"), "summary": rows, "runs_file": str(runs_path)})
    for row in rows:
        typer.echo(f"fraction {row['fraction']:g} + {row['rounds']} rounds ({row['n_real']} real + "
                   f"{row['n_synthetic']} synthetic): test {row['test_mean']:.3f} +- {row['test_sd']:.3f} "
                   f"over {row['seeds']} seed(s)")
    typer.echo(f"wrote {out}")


def _floats(text: str) -> list[float]:
    from histosynth.errors import InputError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--fractions must be comma-separated numbers, got {text!r}") from None


def _table(title: str, columns: list[str], rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    for column in columns:
        table.add_column(column, justify="right")
    for key in rows[0]:
        table.add_row(key, *[f"{row[key]:.4g}" for row in rows])
    Console().print(table)
