"""``histosynth data ...``: validate, summarise, subset and tile datasets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


app = typer.Typer(help="Tile datasets and slides: validate, summarise, tile.", no_args_is_help=True)

ClassesOption = typer.Option(
    None,
    "--classes",
    help="Class list JSON (or 'ebhi'). Default: classes.json beside the manifest, else inferred.",
)


@app.command()
def validate(
    manifest: Path = typer.Argument(..., help="Manifest CSV (id,image,mask,label,split) or dataset folder."),
    classes: Optional[str] = ClassesOption,
    require_splits: str = typer.Option(
        "train", help="Comma-separated splits that must hold at least one tile ('' for none)."
    ),
    jobs: int = typer.Option(2, min=1, help="Threads used to open files."),
) -> None:
    """Check every row and report all problems at once: exit 0 when clean, 2 with one line per problem."""
    from histosynth.cli.progress import progress_bar
    from histosynth.data.manifest import load_manifest
    from histosynth.data.validate import validate_manifest

    dataset = load_manifest(manifest, classes, check_ids=False)  # validate lists every id problem itself
    required = [s for s in require_splits.split(",") if s.strip()]
    with progress_bar("validating", len(dataset)) as advance:
        problems = validate_manifest(dataset, required_splits=required, jobs=jobs, on_row=advance)
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {len(dataset)} rows of {manifest}", err=True)
        raise typer.Exit(2)
    typer.echo(f"ok: {len(dataset)} rows, {len(dataset.classes.labels)} classes, splits {', '.join(dataset.splits) or '-'}")


@app.command()
def stats(
    manifest: Path = typer.Argument(..., help="Manifest CSV or dataset folder."),
    classes: Optional[str] = ClassesOption,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the statistics as JSON here."),
    jobs: int = typer.Option(2, min=1, help="Threads used to open files."),
) -> None:
    """Counts per class and split, mask foreground fraction, mean/std colour."""
    from histosynth.cli.progress import progress_bar
    from histosynth.data.manifest import load_manifest
    from histosynth.data.stats import compute_stats, format_stats
    from histosynth.io import prepare_output_file, write_json

    if json_out:
        prepare_output_file(json_out, option="--json")
    dataset = load_manifest(manifest, classes)
    with progress_bar("reading tiles", len(dataset)) as advance:
        result = compute_stats(dataset, jobs=jobs, on_row=advance)
    typer.echo(format_stats(result))
    if json_out:
        write_json(json_out, result.model_dump(mode="json"))


@app.command(name="classes")
def save_classes(
    manifest: Path = typer.Argument(..., help="Manifest CSV or dataset folder."),
    out: Path = typer.Option(..., "--out", help="Where to write classes.json (a file, or a folder to hold it)."),
    classes: Optional[str] = ClassesOption,
) -> None:
    """Write the class list (label -> id, mask value -> class) that a manifest resolves to."""
    from histosynth.data.classes import CLASS_FILE_NAME
    from histosynth.data.manifest import load_manifest
    from histosynth.io import prepare_output_file

    prepare_output_file(out / CLASS_FILE_NAME if os.path.isdir(out) else out)  # a folder gets classes.json
    dataset = load_manifest(manifest, classes)
    dataset.classes.save(out)
    for index, label in enumerate(dataset.classes.labels):
        typer.echo(f"{index}\t{label}")


@app.command()
def subset(
    manifest: Path = typer.Argument(..., help="Manifest CSV or dataset folder with a train split."),
    fraction: float = typer.Option(..., "--fraction", min=0, max=1, help="Fraction of the train split (whole cases, "
                                   "stratified by label): the draw of `evaluate downstream` for this fraction and seed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw (the grid's seed)."),
    task: str = typer.Option("classification", "--task", help="classification draws among labelled train tiles, "
                             "segmentation among those with masks (as the grid does)."),
    unlabel_rest: bool = typer.Option(False, "--unlabel-rest", help="Keep the other train tiles with label and mask "
                                      "removed (null condition), for a generator that saw only the subset's labels."),
    out: Path = typer.Option(..., "--out", help="Folder for manifest.csv, classes.json and subset.json."),
    classes: Optional[str] = ClassesOption,
) -> None:
    """Write one train subset as a manifest; with --unlabel-rest, fine-tune a leak-free generator on it:
    copy MODEL/autoencoder into NEW, then `histosynth train denoiser --init MODEL --data OUT --out NEW`."""
    from histosynth.data.subsets import SUBSET_FILE_NAME, write_subset
    from histosynth.errors import InputError
    from histosynth.io import prepare_output_dir

    if task not in ("classification", "segmentation"):
        raise InputError(f"unknown task {task!r}; choose classification or segmentation")
    if fraction <= 0:
        raise InputError(f"--fraction must be in (0, 1], got {fraction:g}")
    prepare_output_dir(out, kind="data subset", marker=SUBSET_FILE_NAME)
    summary = write_subset(manifest, out, fraction, seed, task, unlabel_rest, classes)  # type: ignore[arg-type]
    counts = ", ".join(f"{label} {n}" for label, n in summary["labels"].items())
    typer.echo(f"{summary['labelled']} labelled train tiles ({counts}); {summary['unlabelled']} unlabelled -> {out}")


from histosynth.cli.tile import tile  # noqa: E402  (own module, registered here)

app.command()(tile)
