"""``histosynth composition fit|evaluate|predict``: cell-type composition from H&E through embeddings."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import typer

app = typer.Typer(help="Predict per-spot cell-type composition from H&E: frozen embeddings + light regressors.",
                  no_args_is_help=True)

DATA = typer.Option(..., "--data", help="Spots: an AnnData .h5ad (obsm['spatial'] + abundances) or a CSV "
                    "manifest (spot_id, section, patient, pixel_x, pixel_y, tile or image, abundance columns).")
TARGETS = typer.Option(..., "--targets", help="Abundance columns: comma-separated names or globs, e.g. 'major:*'.")
ABUNDANCE_KEY = typer.Option(None, "--abundance-key", help="obsm key holding the abundances (e.g. "
                             "q05_cell_abundance_w_sf); default: obs columns.")
IMAGE = typer.Option(None, "--image", help="Slide image to cut spot tiles from (full resolution, the frame of the "
                     "coordinates); SECTION=PATH when there are several sections. Repeatable.")
DIAMETER = typer.Option(None, "--diameter", min=1.0, help="Tile side in slide pixels, centred on each spot "
                        "(default: the AnnData's spot_diameter_fullres).")
TILE_SIZE = typer.Option(224, "--tile-size", min=8, help="Cut tiles are resized to this many pixels.")
RAW = typer.Option(False, "--raw", help="Keep raw abundances (non-negative outputs) instead of per-spot proportions.")
ENCODER = typer.Option("histology", "--encoder", help="Embedding encoder from the registry (histosynth's own "
                       "'histology' by default).")
WEIGHTS = typer.Option(None, "--weights", help="Weights for the encoder, for registry encoders that take them.")
MODELS = typer.Option("all", "--models", help="Models: ridge, mlp, neighbourhood (comma-separated) or all.")
EPOCHS = typer.Option(60, "--epochs", min=1, help="MLP training epochs.")
SEED = typer.Option(0, "--seed", help="Seed of the MLP initialisation, dropout and batch order.")
CACHE = typer.Option(None, "--cache", help="Embedding cache folder (default $HISTOSYNTH_CACHE or ~/.cache/histosynth).")
DEVICE = typer.Option("cpu", "--device", help="torch device for the encoder (cpu, cuda, ...).")
ID_COL = typer.Option("spot_id", "--id-column", help="Spot id column (default: row number / obs_names).")
SECTION_COL = typer.Option("section", "--section-column", help="Section column (absent: one section).")
PATIENT_COL = typer.Option("patient", "--patient-column", help="Patient column (absent: patient = section).")
X_COL = typer.Option("pixel_x", "--x-column", help="CSV column of the spot centre's x (slide pixels).")
Y_COL = typer.Option("pixel_y", "--y-column", help="CSV column of the spot centre's y (slide pixels).")
TILE_COL = typer.Option("tile", "--tile-column", help="CSV column of pre-cut tile files (absent: cut from --image).")


def _columns(id_column: str, section_column: str, patient_column: str, x_column: str, y_column: str,
             tile_column: str = "tile") -> Any:
    from histosynth.composition.inputs import SpotColumns

    return SpotColumns(id=id_column, section=section_column, patient=patient_column, x=x_column, y=y_column,
                       tile=tile_column)


def _check_out(out: Path, device: str, cache: Optional[Path], **kinds: Any) -> Path:
    """One line, before any spot is read, for a bad device, an ``out`` that cannot be written (a folder:
    ``kind=...``, see :func:`histosynth.io.prepare_output_dir`; without ``kind``, a file) or a bad ``cache``;
    returns the embedding cache folder."""
    from histosynth.checks import check_device
    from histosynth.encoders.features import prepare_cache_dir
    from histosynth.io import prepare_output_dir, prepare_output_file

    check_device(device)
    if kinds:
        prepare_output_dir(out, **kinds)
    else:
        prepare_output_file(out)
    return prepare_cache_dir(cache)


def _encoder(name: str, device: str, weights: Optional[str]) -> Any:
    import inspect

    from histosynth.encoders.registry import get_encoder
    from histosynth.errors import InputError

    if weights is None:
        return get_encoder(name, device)
    if "weights" not in inspect.signature(get_encoder).parameters:
        raise InputError("this install's encoder registry takes no --weights")
    return get_encoder(name, device, weights=weights)  # type: ignore[call-arg]


def _load(data: Path, targets: Optional[str], abundance_key: Optional[str], image: Optional[list[str]], raw: bool,
          columns: Any, encoder_name: str, weights: Optional[str], device: str, cache: Path,
          diameter: Optional[float], tile_size: int, need_coords: Optional[str] = None,
          check_encoder: Optional[Callable[[Any], None]] = None) -> tuple[Any, Any, Any]:
    """Read spots and embed them (progress bar); returns (table, features, encoder).

    ``targets=None`` reads no abundances (prediction). ``need_coords`` names what needs spot coordinates
    and ``check_encoder`` vets the encoder, both before any embedding is computed.
    """
    from histosynth.cli.progress import progress_bar
    from histosynth.composition.embed import check_spot_tiles, embed_spots
    from histosynth.composition.inputs import load_spots

    table = load_spots(data, targets, abundance_key=abundance_key, columns=columns, images=image or (),
                       normalise=not raw)
    if need_coords:
        table.require_coords(need_coords)
    check_spot_tiles(table, diameter)
    encoder = _encoder(encoder_name, device, weights)
    if check_encoder is not None:
        check_encoder(encoder)
    with progress_bar(f"{encoder_name} embeddings", len(table)) as advance:
        features = embed_spots(table, encoder, cache, diameter=diameter, tile_size=tile_size, on_batch=advance)
    types = f"{len(table.target_names)} types, " if table.target_names else ""
    typer.echo(f"{len(table)} spots, {len(set(table.sections))} section(s), {types}"
               f"{features.shape[1]}-d {encoder.identity} embeddings")
    return table, features, encoder


def _settings(epochs: int, seed: int) -> Any:
    from histosynth.composition.models import RegressorSettings

    return RegressorSettings(epochs=epochs, seed=seed)


@app.command()
def fit(
    data: Path = DATA, targets: str = TARGETS, out: Path = typer.Option(..., "--out", help="Model folder to write."),
    abundance_key: Optional[str] = ABUNDANCE_KEY, image: Optional[list[str]] = IMAGE,
    diameter: Optional[float] = DIAMETER, tile_size: int = TILE_SIZE, raw: bool = RAW, encoder: str = ENCODER,
    weights: Optional[str] = WEIGHTS, models: str = MODELS, epochs: int = EPOCHS, seed: int = SEED,
    cache: Optional[Path] = CACHE, device: str = DEVICE, id_column: str = ID_COL, section_column: str = SECTION_COL,
    patient_column: str = PATIENT_COL, x_column: str = X_COL, y_column: str = Y_COL, tile_column: str = TILE_COL,
) -> None:
    """Embed every spot and fit the regressors on all of them; writes a model folder for `predict`."""
    from histosynth.composition.embed import tile_file_width
    from histosynth.composition.modelfolder import CompositionConfig, fit_composition, save_composition_model
    from histosynth.composition.models import parse_kinds

    kinds = parse_kinds(models)
    # the model folder is replaced as a whole: only an earlier model folder (histosynth.json) may be there
    cache = _check_out(out, device, cache, kind="composition fit", marker="histosynth.json")
    table, features, enc = _load(data, targets, abundance_key, image, raw,
                                 _columns(id_column, section_column, patient_column, x_column, y_column, tile_column),
                                 encoder, weights, device, cache, diameter, tile_size,
                                 "the neighbourhood model (fit without it: --models mlp,ridge)"
                                 if "neighbourhood" in kinds else None)
    settings = _settings(epochs, seed)
    fitted, seconds = fit_composition(features, table.targets, table.coords, table.sections, kinds, settings,
                                      table.normalised)
    width = tile_file_width(table)
    config = CompositionConfig(encoder=encoder, encoder_identity=enc.identity, encoder_weights=weights,
                               targets=table.target_names, normalised=table.normalised,
                               feature_dim=features.shape[1], models=kinds,
                               diameter=diameter or table.diameter or width,
                               tile_size=width if width is not None else tile_size, settings=settings)
    save_composition_model(out, config, fitted, n_spots=len(table), sections=sorted(set(table.sections.tolist())),
                           fit_seconds={k: round(v, 3) for k, v in seconds.items()})
    for kind in kinds:
        typer.echo(f"{kind}: fitted in {seconds[kind]:.2f} CPU s")
    typer.echo(f"wrote {out}")


@app.command()
def evaluate(
    data: Path = DATA, targets: str = TARGETS,
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, per_type.csv, predictions.csv, "
                             "maps/<type>.png; rerunning resumes finished folds."),
    cv: str = typer.Option("section", "--cv", help="Leave one 'section' or one 'patient' out."),
    maps: bool = typer.Option(True, "--maps/--no-maps", help="Draw true-vs-predicted maps per cell type."),
    abundance_key: Optional[str] = ABUNDANCE_KEY, image: Optional[list[str]] = IMAGE,
    diameter: Optional[float] = DIAMETER, tile_size: int = TILE_SIZE, raw: bool = RAW, encoder: str = ENCODER,
    weights: Optional[str] = WEIGHTS, models: str = MODELS, epochs: int = EPOCHS, seed: int = SEED,
    cache: Optional[Path] = CACHE, device: str = DEVICE, id_column: str = ID_COL, section_column: str = SECTION_COL,
    patient_column: str = PATIENT_COL, x_column: str = X_COL, y_column: str = Y_COL, tile_column: str = TILE_COL,
) -> None:
    """Leave-one-section-out (or patient-out) CV of every model: per-type Pearson r and Spearman rho per
    held-out section, their means, the share of types with r > 0.3, fit times, and spatial maps."""
    from histosynth.cli.progress import progress_bar
    from histosynth.composition.crossval import cross_validate, leave_one_group_out
    from histosynth.composition.models import parse_kinds
    from histosynth.composition.report import write_evaluation

    kinds = parse_kinds(models)
    cache = _check_out(out, device, cache, kind="composition evaluate")
    need = ("the neighbourhood model (leave it out: --models mlp,ridge)" if "neighbourhood" in kinds
            else "drawing maps (use --no-maps)" if maps else None)
    table, features, _ = _load(data, targets, abundance_key, image, raw,
                               _columns(id_column, section_column, patient_column, x_column, y_column, tile_column),
                               encoder, weights, device, cache, diameter, tile_size, need)
    groups = table.groups(cv)
    folds = leave_one_group_out(groups, cv)
    if maps:
        table.require_coords("drawing maps (use --no-maps)")
    with progress_bar(f"leave-one-{cv}-out", len(folds) * len(kinds)) as advance:
        result = cross_validate(features, table.targets, table.sections, groups, table.coords, kinds,
                                _settings(epochs, seed), table.normalised, table.target_names, cv, out,
                                on_fold=lambda kind, fold: advance(1))
    written = write_evaluation(out, table, result, maps, extra={"encoder": encoder, "data": data.name})
    _print_summary(result.summary(), f"leave-one-{cv}-out, {len(folds)} folds, {len(table.target_names)} types")
    typer.echo(f"wrote {written}")


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="Model folder from `composition fit`."),
    slide: Optional[Path] = typer.Option(None, "--slide", help="Slide image (JPEG/PNG or a whole-slide file), with "
                                         "--spots or --grid. Or give --data instead."),
    data: Optional[Path] = typer.Option(None, "--data", help="Instead of --slide: spots as `fit` and `evaluate` take "
                                        "them (CSV with tile files or slide images, or .h5ad; abundance columns "
                                        "are not needed); predictions go to a CSV."),
    spots: Optional[Path] = typer.Option(None, "--spots", help="Spot centres: .h5ad (obsm['spatial']) or CSV "
                                         "(--x-column/--y-column); the .h5ad is copied with predictions added."),
    grid: Optional[float] = typer.Option(None, "--grid", min=1.0, help="Instead of --spots: a grid every STEP "
                                         "slide pixels over the tissue."),
    out: Path = typer.Option(..., "--out", help="With --slide: output .h5ad, the CSV goes beside it (same name, "
                             ".csv). With --data: the output .csv (spot_id, x, y when known, one column per type)."),
    use: str = typer.Option("mlp", "--use", help="Which fitted model predicts: mlp, ridge or neighbourhood."),
    diameter: Optional[float] = typer.Option(None, "--diameter", min=1.0, help="Tile side in slide pixels "
                                             "(default: the model's)."),
    min_tissue: float = typer.Option(0.5, "--min-tissue", min=0.0, max=1.0,
                                     help="Grid squares need this tissue share."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Encoder weights (default: the model's)."),
    image: Optional[list[str]] = IMAGE, cache: Optional[Path] = CACHE, device: str = DEVICE,
    id_column: str = ID_COL, section_column: str = SECTION_COL, patient_column: str = PATIENT_COL,
    x_column: str = X_COL, y_column: str = Y_COL, tile_column: str = TILE_COL,
) -> None:
    """Predict compositions for spots or a tissue grid of a slide (an AnnData .h5ad and a CSV), or for the
    spots of a `fit`/`evaluate` --data file (a CSV)."""
    from histosynth.cli.progress import progress_bar
    from histosynth.composition.modelfolder import load_composition_model
    from histosynth.composition.predict import (
        check_encoder,
        grid_spots,
        predict_features,
        predict_spots,
        read_spot_file,
        write_prediction_csv,
        write_predictions,
    )
    from histosynth.composition.tiles import check_inside, image_size
    from histosynth.errors import InputError
    if (slide is None) == (data is None):
        raise InputError("give --slide IMAGE (with --spots or --grid) or --data FILE (spots as fit/evaluate take them)")
    if data is not None and (spots is not None or grid is not None):
        raise InputError("--spots and --grid go with --slide; a --data file lists its spots itself")
    if slide is not None and image:
        raise InputError("--image goes with --data; with --slide the slide is the image")
    if slide is not None and (spots is None) == (grid is None):
        raise InputError("give exactly one of --spots FILE or --grid STEP")
    suffix = ".csv" if data is not None else ".h5ad"
    if out.suffix.lower() != suffix:
        raise InputError(f"--out must end in {suffix}" + (" with --data" if data is not None
                                                         else " (the CSV is written beside it)"), out)
    cache = _check_out(out, device, cache)
    config, fitted = load_composition_model(model)
    if use not in fitted:
        raise InputError(f"the model folder has no {use!r} model (it has {', '.join(fitted)})", model)
    size = diameter or config.diameter
    columns = _columns(id_column, section_column, patient_column, x_column, y_column, tile_column)
    if data is not None:
        table, features, _ = _load(data, None, None, image, False, columns, config.encoder,
                                   weights or config.encoder_weights, device, cache, size, config.tile_size,
                                   "the neighbourhood model (use --use mlp or ridge)" if use == "neighbourhood"
                                   else None, lambda encoder: check_encoder(config, encoder, model))
        pred = predict_features(config, fitted, use, features, table.coords, table.sections)
        written = write_prediction_csv(out, table.ids, pred, config.targets, table.coords)
        typer.echo(f"{len(table)} spots predicted by {use} -> {written}")
        return
    assert slide is not None
    if size is None:
        raise InputError("the model records no tile diameter; give --diameter (slide pixels)", model)
    encoder = _encoder(config.encoder, device, weights or config.encoder_weights)
    check_encoder(config, encoder, model)
    if spots is not None:
        points = read_spot_file(spots, columns)
    else:
        assert grid is not None
        points = grid_spots(slide, grid, size, min_tissue)
    check_inside(*image_size(slide), points.coords, size, points.ids, slide)
    with progress_bar(f"{config.encoder} embeddings", len(points.ids)) as advance:
        pred = predict_spots(config, fitted, use, encoder, slide, points, size, cache,
                             on_batch=advance)
    h5ad, csv = write_predictions(out, points, pred, config.targets, slide, size, use)
    typer.echo(f"{len(points.ids)} spots predicted by {use} (tiles {size:g} px) -> {h5ad}, {csv}")


def _print_summary(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("model", "mean Pearson r", "mean Spearman rho", "types r > 0.3", "fit CPU s / fold"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(row["model"], f"{row['mean_pearson']:.3f}", f"{row['mean_spearman']:.3f}",
                      f"{row['frac_types_r_gt_0.3']:.0%}", f"{row['fit_seconds_mean']:.2f}")
    Console().print(table)
