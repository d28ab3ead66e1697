"""``histosynth sample``: generate image + mask pairs into a synthetic dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histosynth.sampling.settings import MAX_FEATURE_REUSE, SamplingSettings

DEFAULTS = SamplingSettings()
DEFAULTS_INTERVAL = ",".join(f"{v:g}" for v in DEFAULTS.guidance_interval)


def parse_interval(text: str) -> tuple[float, float]:
    """``"low,high"`` -> (low, high); one clear line when it is not two numbers."""
    from histosynth.errors import InputError

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--guidance-interval must be two numbers LOW,HIGH, got {text!r}") from None
    return low, high


def _given(ctx: typer.Context, parameter: str) -> bool:
    """Whether ``parameter`` was given on the command line (not left at its default)."""
    return getattr(ctx.get_parameter_source(parameter), "name", "") == "COMMANDLINE"


def sample(
    ctx: typer.Context,
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder (default: the shipped EBHI model)."),
    n: int = typer.Option(8, "--n", min=1, help="Tiles per class."),
    label: list[str] = typer.Option(
        ["all"], "--label", help="Class name or id; repeat for several; 'all' for every class."),
    masks: Optional[str] = typer.Option(
        None, "--masks", metavar="model|procedural|FOLDER", show_default=False,
        help="Where the masks come from: 'model' (gland layouts generated per class and seed by the model "
        "folder's mask_model/), 'procedural' (random blobs, --foreground of the tile), or a folder of PNG masks "
        "(class values). Default: model when the model folder has a mask_model/ (the shipped one does), "
        "else procedural."),
    foreground: float = typer.Option(0.6, min=0.0, max=1.0, help="Foreground fraction of procedural masks."),
    mask_steps: int = typer.Option(20, "--mask-steps", min=1, help="DDIM levels of mask-model masks."),
    steps: int = typer.Option(DEFAULTS.steps, min=1, help="Sampling steps (--prototype: 50 unless given)."),
    guidance: float = typer.Option(DEFAULTS.guidance, min=0.0, help="Classifier-free guidance weight (0 = "
                                   "unconditional, 1 = conditional)."),
    guidance_interval: str = typer.Option(
        DEFAULTS_INTERVAL, "--guidance-interval", metavar="LOW,HIGH",
        help="Noise levels (fractions of the schedule, 1 = pure noise) where guidance applies; elsewhere the plain "
        "conditional model runs (one forward instead of two). 0,1 guides every step."),
    sampler: str = typer.Option(
        DEFAULTS.sampler, help="unipc (UniPC multistep), ddim, dpm (DPM-Solver++ 2M) or dpm-sde (its stochastic "
        "variant); --prototype: ddim unless given."),
    precision: str = typer.Option(
        DEFAULTS.precision, help="Arithmetic of the denoiser and decoder: float32, bfloat16, or auto (bfloat16 "
        "where the CPU/GPU computes it natively; ~1.7x faster on such CPUs; --prototype: float32 unless given)."),
    feature_reuse: int = typer.Option(
        DEFAULTS.feature_reuse, "--feature-reuse", min=1, max=MAX_FEATURE_REUSE, metavar="N",
        help="DeepCache-style reuse of the denoiser's deep features: the full denoiser runs at the first step and "
        "every N steps, the steps between recompute only its shallow path (faster, approximate; the manifest's "
        "sampler column records +reuseN). 1 = off, exact."),
    seed: int = typer.Option(0, help="Base seed: tile i of a class uses seed + i."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, min=1, help="Tiles per batch."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, masks/, manifest.csv (rerun resumes)."),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="ADDRESS", help="Sample on a Ray cluster: 'local' (start one here), 'auto' (the "
        "running one) or host:port. Same files as without --ray; needs pip install 'histosynth\\[ray]'."),
    ray_workers: int = typer.Option(0, "--ray-workers", min=0, help="Ray actors (0: one per GPU with a cuda "
                                    "--device, else one per CPU of the cluster)."),
    like: Optional[Path] = typer.Option(
        None, "--like", metavar="IMG", help="Generate N tiles like this reference tile (a model from `histosynth "
        "train like-model`); class and mask are conditions only if --label/--masks are given."),
    like_weight: float = typer.Option(2.0, "--like-weight", min=0.0, help="Guidance weight of the --like "
                                      "embedding (0 ignores it, 1 = plain conditional)."),
    prototype: Optional[str] = typer.Option(
        None, "--prototype", help="Generate N tiles steered towards this prototype (id or name) by classifier "
        "guidance; class and mask are conditions only if --label/--masks are given."),
    prototype_classifier: Optional[Path] = typer.Option(
        None, "--prototype-classifier", help="Latent prototype classifier folder (`histosynth train "
        "prototype-classifier`), for --prototype."),
    prototype_guidance: float = typer.Option(3.0, "--prototype-guidance", min=0.0, help="Classifier guidance "
                                             "weight w of --prototype (0 = unguided)."),
    from_manifest: Optional[Path] = typer.Option(
        None, "--from-manifest", metavar="MANIFEST", help="Make --per-tile synthetic tiles from each labelled tile "
        "of this manifest's --split (its class and mask; ids <tile id>__r<k>, mask_source <split>:<tile id>), e.g. "
        "to grow a scarce labelled set. Tiles must be the model's tile size; tiles without a mask are skipped."),
    split: str = typer.Option("train", "--split", help="Split of --from-manifest whose tiles are the sources."),
    per_tile: int = typer.Option(1, "--per-tile", min=1, help="Synthetic tiles per source tile (--from-manifest)."),
    strength: float = typer.Option(
        DEFAULTS.strength, "--strength", min=0.0, max=1.0, help="SDEdit, with --from-manifest: below 1 each tile "
        "starts from its source tile noised to where the last STRENGTH of the schedule begins (lower keeps more of "
        "the source; the sampler column records +sdeditS). 1 starts from pure noise."),
) -> None:
    """Generate class- and mask-conditioned tiles with their masks (resumes an interrupted run)."""
    from histosynth.checks import check_device
    from histosynth.cli.progress import progress_bar
    from histosynth.errors import InputError
    from histosynth.sampling.generate import check_request
    from histosynth.sampling.settings import check_sampler

    check_sampler(sampler)
    if from_manifest is None and (strength < 1 or _given(ctx, "per_tile") or _given(ctx, "split")):
        raise InputError("--strength, --per-tile and --split make tiles from source tiles: give --from-manifest")
    if from_manifest is not None:
        others = [f"--{p.replace('_', '-')}" for p in ("label", "masks", "like", "prototype", "ray", "n")
                  if _given(ctx, p)]
        if others:
            raise InputError(f"--from-manifest takes class and mask from each source tile: drop {', '.join(others)}")
        from histosynth.cli.variations import sample_variations

        settings = SamplingSettings(steps=steps, guidance=guidance, sampler=sampler, batch_size=batch_size,
                                    guidance_interval=parse_interval(guidance_interval), precision=precision,
                                    feature_reuse=feature_reuse, strength=strength)
        return sample_variations(model, from_manifest, split, per_tile, settings, seed, device, out)
    check_request(n, seed)
    check_device(device)
    if (like is not None or prototype is not None) and guidance_interval != DEFAULTS_INTERVAL:
        raise InputError("--guidance-interval does not apply to --like or --prototype yet")
    if like is not None or prototype is not None:
        if ray is not None:
            raise InputError("--ray does not take --like or --prototype yet")
        from histosynth.cli.synthesize import guided_sample

        if prototype is not None:  # classifier guidance steps through DDIM: its defaults unless told otherwise
            from histosynth.sampling.settings import CLASSIFIER_GUIDANCE_DEFAULTS as chosen

            sampler = sampler if _given(ctx, "sampler") else chosen["sampler"]
            steps = steps if _given(ctx, "steps") else chosen["steps"]
            precision = precision if _given(ctx, "precision") else chosen["precision"]

        return guided_sample(
            model=model, n=n, labels=label, masks=masks or "procedural", foreground=foreground, steps=steps,
            guidance=guidance, sampler=sampler, seed=seed, batch_size=batch_size, device=device, out=out, like=like,
            like_weight=like_weight, prototype=prototype, prototype_classifier=prototype_classifier,
            prototype_guidance=prototype_guidance, precision=precision, feature_reuse=feature_reuse,
            given={p for p in ("label", "masks") if _given(ctx, p)})
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.generate import check_output, choose_mask_source, generate_dataset
    from histosynth.sampling.writer import check_folder
    from histosynth.weights import default_model_dir

    check_folder(out)  # unwritable, a file, or someone else's files: one line before the model loads
    if ray is not None:
        from histosynth.distributed.ray_generate import check_ray_address

        check_ray_address(ray)  # Ray missing or cluster unreachable: one line, before loading anything
    loaded = LatentDiffusionModel.load(model or default_model_dir())
    classes = loaded.classes
    ids = list(range(len(classes.labels))) if label == ["all"] else [classes.resolve_label(x) for x in label]
    source, note = choose_mask_source(loaded, masks, foreground, mask_steps)
    if note:
        typer.echo(note)
    settings = SamplingSettings(steps=steps, guidance=guidance, sampler=sampler, batch_size=batch_size,
                                guidance_interval=parse_interval(guidance_interval), precision=precision,
                                feature_reuse=feature_reuse)
    check_output(loaded, out, n, ids, source, settings, seed, device)  # every one-line refusal before the bar
    with progress_bar("sampling", n * len(ids)) as advance:
        if ray is not None:
            from histosynth.distributed.ray_generate import generate_dataset_ray

            result = generate_dataset_ray(loaded, out, n, ids, source, settings, seed=seed, device=device,
                                          address=ray, workers=ray_workers, on_tile=advance)
        else:
            result = generate_dataset(loaded, out, n, ids, source, settings, seed=seed, device=device,
                                      on_tile=advance)
    typer.echo(f"{result.written} tiles written, {result.skipped_existing} already there -> {result.folder}")
