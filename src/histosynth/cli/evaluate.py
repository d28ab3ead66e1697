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


def _checked_out(kind: str, synthetic: Path, encoder_name: str, device: str, out: Optional[Path],
                 cache: Optional[Path]) -> tuple[Path, Path]:
    """The result file (default SYNTHETIC/audit/<kind>_<encoder>.json) and the feature cache folder, checked with
    the device before any work."""
    from histosynth.checks import check_device
    from histosynth.encoders.features import prepare_cache_dir
    from histosynth.io import prepare_output_file

    check_device(device)
    return prepare_output_file(out or synthetic / "audit" / f"{kind}_{encoder_name}.json"), prepare_cache_dir(cache)


def fid_warning(n_synthetic: int, n_real: int) -> str | None:
    """One line when a set is too small for FID to mean much on its own (None otherwise)."""
    n = min(n_synthetic, n_real)
    if n >= FID_MIN_TILES:
        return None
    return (f"warning: FID with n={n} is strongly biased (fewer tiles than the {FID_MIN_TILES} Inception features); "
            f"compare FIDs only at equal n, and use >= {DOCS_FID_TILES} tiles for the figures in docs")


def _run(kind: str, synthetic: Path, encoder_name: str, device: str, cache: Path, out: Path,
         total: int, compute) -> dict:
    from histosynth.cli.progress import progress_bar
    from histosynth.encoders.registry import get_encoder
    from histosynth.io import write_json

    encoder = get_encoder(encoder_name, device)
    with progress_bar(f"{kind}: {encoder_name} features", total) as advance:
        result = compute(encoder, cache, advance).to_dict()
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

    out, cache = _checked_out("fidelity", synthetic, encoder, device, out, cache)
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

    out, cache = _checked_out("privacy", synthetic, encoder, device, out, cache)
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
    synthetic: Optional[str] = typer.Option(
        None, "--synthetic", help="Synthetic dataset folder; may hold {fraction} and {seed} (e.g. gen/f{fraction}_s{seed}"
        "/synthetic) so that each subset takes tiles from its own, leak-free generator. Needed by the synthetic arm."),
    task: str = typer.Option("segmentation", "--task", help="segmentation (Dice) or classification (balanced accuracy)."),
    fractions: str = typer.Option("1.0,0.25,0.1", "--fractions", help="Fractions of the real train split (whole cases)."),
    rounds: str = typer.Option("0,1,2,4", "--rounds", help="Synthetic (or extra real) tiles added per real tile in "
                               "rounds mode; 0 is the real-only run."),
    arms: str = typer.Option("real,synthetic", "--arms", help="Comma-separated: real (subset only, augmented), "
                             "real-noaug (subset only, no flips/rotations/jitter), synthetic, pseudo-label (train tiles "
                             "from outside the subset with the real-only model's labels or masks, the most confident "
                             "first: the semi-supervised baseline), extra-real (real train tiles from outside the "
                             "subset, as many as the synthetic arm adds: the upper bound)."),
    modes: str = typer.Option("rounds", "--modes", help="How synthetic, pseudo-label and extra-real arms add tiles: rounds (k per "
                              "real tile), balanced (every class up to the subset's largest class), filtered (balanced counts, each class "
                              "taking the synthetic tiles the seed's real-only model agrees with most), comma-separated."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds 0..N-1; a seed draws the subset and the training seed."),
    steps: int = typer.Option(400, "--steps", min=1, help="Training steps per run (equal for every run)."),
    size: int = typer.Option(96, "--size", min=16, help="Side in px the small models train at (a multiple of 8)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last: the weights after the last step (no pick on "
                                   "the val split); val: the best val score every 100 steps."),
    pairing: str = typer.Option("auto", "--pairing", help="paired: each run takes the synthetic tiles made from "
                                "its own real subset's masks (mask_source train:<id>); pool: a random draw from "
                                "the folder; auto: paired when every tile names its train source."),
    device: str = typer.Option("cpu", "--device", help="torch device the small models train on (cpu, cuda, ...)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny grid for smoke tests: fractions 1.0, rounds 0,1, "
                               "1 seed, 20 steps, 32 px."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON summary (default SYNTHETIC/audit/downstream_<task>"
                                       ".json); the runs go to the same name with .runs.jsonl."),
) -> None:
    """Train small models on fractions of the real train split, alone and with synthetic or extra real tiles,
    and report test mean +- sd over seeds with paired gains (each seed against its own real-only run).
    Resumes: finished runs are kept."""
    from pydantic import ValidationError

    from histosynth.checks import check_device
    from histosynth.cli.progress import progress_bar
    from histosynth.errors import InputError
    from histosynth.evaluation.downstream import DownstreamConfig, conditions, run_downstream, summarise
    from histosynth.evaluation.downstream_summary import cell_name
    from histosynth.io import prepare_output_file, write_json

    check_device(device)
    choices = {"task": (task, ("segmentation", "classification")), "pairing": (pairing, ("auto", "paired", "pool")),
               "checkpoint": (checkpoint, ("last", "val"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise InputError(f"unknown {name} {value!r}; choose {', '.join(allowed)}")
    values = {"task": task, "fractions": _floats(fractions), "rounds": _ints(rounds, "--rounds"),
              "arms": _words(arms), "modes": _words(modes), "seeds": seeds, "steps": steps, "size": size,
              "checkpoint": checkpoint, "pairing": pairing}
    if quick:
        values.update(fractions=[1.0], rounds=[0, 1], seeds=1, steps=20, size=32, select_every=10)
    try:
        config = DownstreamConfig(**values)
    except ValidationError as error:
        problem = error.errors()[0]
        raise InputError(f"--{problem['loc'][0]}: {problem['msg']}") from None
    if out is None and (synthetic is None or "{" in synthetic):
        raise InputError("give --out (there is no single synthetic folder to write the summary into)")
    out = prepare_output_file(out or Path(synthetic) / "audit" / f"downstream_{task}.json")
    runs_path = out.with_suffix(".runs.jsonl")
    total = sum(len(conditions(config, f)) for f in config.fractions) * config.seeds
    with progress_bar(f"downstream {task}", total) as advance:
        runs = run_downstream(real, synthetic, config, runs_path, on_run=lambda run: advance(1), device=device)
    rows = summarise(runs)
    write_json(out, {"config": config.model_dump(mode="json"), "summary": rows, "runs_file": str(runs_path)})
    for row in rows:
        gain = "" if row["gain_mean"] is None else (f", paired gain {row['gain_mean']:+.3f} +- {row['gain_sd']:.3f} "
                                                    f"({row['seeds_gained']}/{row['gain_seeds']} seeds gained)")
        typer.echo(f"fraction {row['fraction']:g} {cell_name(row)} ({row['n_real']} real + {row['n_synthetic']} "
                   f"synthetic + {row['n_extra']} extra real): test {row['test_mean']:.3f} +- {row['test_sd']:.3f} "
                   f"over {row['seeds']} seed(s){gain}")
    typer.echo(f"wrote {out}")


def _words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _ints(text: str, option: str) -> list[int]:
    from histosynth.errors import InputError

    try:
        return [int(v) for v in _words(text)]
    except ValueError:
        raise InputError(f"{option} must be comma-separated whole numbers, got {text!r}") from None


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
