"""``histosynth synthesize-balanced`` and the ``--like`` / ``--prototype`` modes of ``histosynth sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histosynth.sampling.settings import CLASSIFIER_GUIDANCE_DEFAULTS, SamplingSettings


def _check_out(out: Path, device: str, seed: int, count: int) -> None:
    """One line, before the model loads, for a bad device or seed, or an ``out`` that cannot be written
    or holds someone else's files (anything but a guided set: a manifest with a prototype column)."""
    from histosynth.checks import check_device, check_seed
    from histosynth.sampling.guidance import GUIDED_COLUMNS, GUIDED_KIND
    from histosynth.sampling.writer import check_folder

    check_seed(seed, count)
    check_device(device)
    check_folder(out, GUIDED_COLUMNS, GUIDED_KIND)


def guided_sample(
    *, model: Optional[Path], n: int, labels: list[str], masks: str, foreground: float, steps: int, guidance: float,
    sampler: str, seed: int, batch_size: int, device: str, out: Path, like: Optional[Path], like_weight: float,
    prototype: Optional[str], prototype_classifier: Optional[Path], prototype_guidance: float, given: set[str],
    precision: str = "float32", feature_reuse: int = 1,
) -> None:
    """``histosynth sample --like IMG`` / ``--prototype P``: ``n`` tiles; the class and mask are conditions
    only when ``--label`` / ``--masks`` were given on the command line (named in ``given``; else null class,
    no mask)."""
    from histosynth.cli.progress import progress_bar
    from histosynth.errors import InputError
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.guidance import (
        check_guided_output,
        embed_reference,
        generate_guided,
        guided_condition,
        like_tiles,
        load_guidance_classifier,
        prototype_tiles,
    )
    from histosynth.weights import default_model_dir

    if like is not None and prototype is not None:
        raise InputError("--like and --prototype are separate modes; give one")
    if "label" in given and len(labels) != 1:
        raise InputError("--like / --prototype take at most one --label")
    settings = SamplingSettings(steps=steps, guidance=guidance, sampler=sampler, batch_size=batch_size,
                                like_weight=like_weight, precision=precision, feature_reuse=feature_reuse,
                                prototype_guidance=prototype_guidance if prototype is not None else 0.0)
    _check_out(out, device, seed, n)
    loaded = LatentDiffusionModel.load(model or default_model_dir())
    label_id, pick = guided_condition(loaded, labels[0] if "label" in given else None,
                                      masks if "masks" in given else None, foreground, seed)
    classifier = None
    if like is not None:
        embedding, reference = embed_reference(loaded, like, device)
        tiles = like_tiles(n, embedding, reference, label_id, pick, seed, like_weight)
    else:
        if prototype_classifier is None:
            raise InputError("--prototype needs --prototype-classifier FOLDER "
                             "(`histosynth train prototype-classifier`)")
        from histosynth.models.prototype_classifier import resolve_prototype

        classifier, names, identity = load_guidance_classifier(prototype_classifier, loaded)
        proto = resolve_prototype(prototype, names, prototype_classifier)
        tiles = prototype_tiles([proto], names, n, label_id, pick, seed, prototype_guidance, identity)
    check_guided_output(loaded, out, tiles, settings, device)  # a rerun with other settings: one line, first
    with progress_bar("sampling", len(tiles)) as advance:
        result = generate_guided(loaded, out, tiles, settings, classifier, device, on_tile=advance)
    typer.echo(f"{result.written} tiles written, {result.skipped_existing} already there -> {result.folder}")


def synthesize_balanced(
    per_prototype: int = typer.Option(..., "--per-prototype", min=1, help="Tiles per prototype."),
    prototype_classifier: Path = typer.Option(..., "--prototype-classifier", help="Latent prototype classifier "
                                              "folder (`histosynth train prototype-classifier`)."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, manifest.csv with a prototype column "
                             "(rerun resumes)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder (default: the shipped EBHI model)."),
    prototype: Optional[list[str]] = typer.Option(None, "--prototype", help="Only these prototypes (id or name; "
                                                  "repeat). Default: every prototype the classifier knows."),
    prototype_guidance: float = typer.Option(3.0, "--prototype-guidance", min=0.0,
                                             help="Classifier guidance weight w (0 = unguided)."),
    label: Optional[str] = typer.Option(None, "--label", help="Also condition on this class (default: none)."),
    masks: Optional[str] = typer.Option(None, "--masks", help="Also condition on masks: 'model' (the model "
                                        "folder's mask_model/), 'procedural' or a folder of PNG masks (default: none; "
                                        "tiles are written without masks)."),
    foreground: float = typer.Option(0.6, min=0.0, max=1.0, help="Foreground fraction of procedural masks."),
    steps: int = typer.Option(CLASSIFIER_GUIDANCE_DEFAULTS["steps"], min=1, help="Sampling steps (DDIM)."),
    guidance: float = typer.Option(2.0, min=0.0, help="Classifier-free guidance weight of --label/--masks."),
    seed: int = typer.Option(0, help="Base seed: tile j of the set uses seed + j."),
    batch_size: int = typer.Option(16, min=1, help="Tiles per batch."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Generate a prototype-balanced synthetic set: PER_PROTOTYPE tiles guided towards each prototype by the
    latent classifier (classifier guidance in DDIM). Resumes an interrupted run."""
    from histosynth.cli.progress import progress_bar
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.models.prototype_classifier import resolve_prototype
    from histosynth.sampling.guidance import (
        check_guided_output,
        generate_guided,
        guided_condition,
        load_guidance_classifier,
        prototype_tiles,
    )
    from histosynth.weights import default_model_dir

    settings = SamplingSettings(steps=steps, guidance=guidance, batch_size=batch_size,
                                prototype_guidance=prototype_guidance,
                                sampler=CLASSIFIER_GUIDANCE_DEFAULTS["sampler"],
                                precision=CLASSIFIER_GUIDANCE_DEFAULTS["precision"])
    _check_out(out, device, seed, per_prototype)
    loaded = LatentDiffusionModel.load(model or default_model_dir())
    classifier, names, identity = load_guidance_classifier(prototype_classifier, loaded)
    chosen = [resolve_prototype(p, names, prototype_classifier) for p in prototype] if prototype else \
        list(range(len(names)))
    label_id, pick = guided_condition(loaded, label, masks, foreground, seed)
    tiles = prototype_tiles(list(dict.fromkeys(chosen)), names, per_prototype, label_id, pick, seed,
                            prototype_guidance, identity)
    check_guided_output(loaded, out, tiles, settings, device)  # a rerun with other settings: one line, first
    with progress_bar("sampling", len(tiles)) as advance:
        result = generate_guided(loaded, out, tiles, settings, classifier, device, on_tile=advance)
    typer.echo(f"{result.written} tiles written, {result.skipped_existing} already there, "
               f"{len(set(chosen))} prototypes -> {result.folder}")
