"""``histosynth train autoencoder|denoiser``: resumable training from a tile manifest."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Train the autoencoder, then the latent denoiser, into one model folder.", no_args_is_help=True)

DATA = typer.Option(..., "--data", help="Manifest CSV (id,image,mask,label,split) or dataset folder.")
OUT = typer.Option(..., "--out", help="Model folder; rerunning the same command resumes from its last checkpoint.")
CONFIG = typer.Option(None, "--config", help="YAML with optional sections train:, model:, objective:.")
SPLIT = typer.Option("train", help="Split(s) to train on, comma-separated.")
STEPS = typer.Option(None, "--steps", min=1, help="Override train.steps.")
BATCH = typer.Option(None, "--batch-size", min=1, help="Override train.batch_size.")
CLASSES = typer.Option(None, "--classes", help="Class list JSON or 'ebhi' (default: beside the manifest, or inferred).")
THREADS = typer.Option(None, "--threads", min=1, help="Torch CPU threads (default: torch's choice).")


def _check_out(out: Path, recipe: str) -> None:
    """One line, before any tile is read, when ``out`` cannot take this recipe's output (see
    :func:`histosynth.training.destination.check_training_out`)."""
    from histosynth.training.destination import check_training_out

    check_training_out(out, recipe)


def _recipe_configs(config: Optional[Path], steps: Optional[int], batch_size: Optional[int], threads: Optional[int],
                    model_cls, loss_cls, model_values: dict | None = None):
    """Train, model and objective configs of a recipe (see :func:`histosynth.training.recipe_config.load_recipe`:
    ``model_values`` under the YAML, ``--steps``/``--batch-size`` over it), and torch threads."""
    import torch

    from histosynth.training.recipe_config import load_recipe

    if threads:
        torch.set_num_threads(threads)
    train = {key: value for key, value in (("steps", steps), ("batch_size", batch_size)) if value is not None}
    return load_recipe(config, model_cls, loss_cls, model_defaults=model_values, train_overrides=train)


def _load_tiles(data: Path, split: str, classes: Optional[str], size: int, unlabelled: Optional[Path] = None):
    from histosynth.cli.progress import progress_bar
    from histosynth.data.manifest import TileManifest, load_manifest
    from histosynth.training.tensors import load_tile_tensors

    manifest = load_manifest(data, classes).select_split(*[s.strip() for s in split.split(",") if s.strip()])
    if unlabelled is not None:
        extra = load_manifest(unlabelled, manifest.classes)
        records = manifest.records + [replace(r, mask=None, label=None) for r in extra.records]
        manifest = TileManifest(manifest.source, records, manifest.classes)
    with progress_bar("loading tiles", len(manifest)) as advance:
        tiles = load_tile_tensors(manifest, size, on_item=advance)
    return manifest, tiles


def _step_reporter(handle, total: int):
    handle.set_total(total)

    def report(step: int, metrics: dict[str, float]) -> None:
        handle.set_completed(step)
        handle.set_status(f"loss {metrics['loss']:.4f}")

    return report


@app.command()
def autoencoder(
    data: Path = DATA, out: Path = OUT, config: Optional[Path] = CONFIG, split: str = SPLIT,
    steps: Optional[int] = STEPS, batch_size: Optional[int] = BATCH, classes: Optional[str] = CLASSES,
    threads: Optional[int] = THREADS,
) -> None:
    """Train the KL autoencoder (224 px -> 28x28x4 latents) on random crops; writes OUT/autoencoder."""
    from histosynth.cli.progress import progress_bar
    from histosynth.models.autoencoder import AutoencoderConfig
    from histosynth.training.objectives import AutoencoderLossConfig
    from histosynth.training.recipes import train_autoencoder

    _check_out(out, "autoencoder")
    train_config, model_config, loss_config = _recipe_configs(config, steps, batch_size, threads, AutoencoderConfig,
                                                              AutoencoderLossConfig)
    manifest, tiles = _load_tiles(data, split, classes, model_config.tile_size)
    with progress_bar("training autoencoder", train_config.steps) as handle:
        result = train_autoencoder(manifest, tiles, out, model_config, train_config, loss_config,
                                   on_step=_step_reporter(handle, train_config.steps))
    typer.echo(f"autoencoder: {result.steps} steps ({result.items_per_second:.1f} crops/s) -> {result.folder}")


@app.command()
def denoiser(
    data: Path = DATA, out: Path = OUT, config: Optional[Path] = CONFIG, split: str = SPLIT,
    steps: Optional[int] = STEPS, batch_size: Optional[int] = BATCH, classes: Optional[str] = CLASSES,
    threads: Optional[int] = THREADS,
    autoencoder_dir: Optional[Path] = typer.Option(None, "--autoencoder", help="Autoencoder folder (default OUT/autoencoder)."),
    unlabelled: Optional[Path] = typer.Option(
        None, "--unlabelled", help="Extra tiles with no label or mask: they train the null condition only."),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Model or denoiser folder to continue training from (a further leg: its architecture, "
        "fresh steps, learning rate and seed from --config)."),
) -> None:
    """Train the class- and mask-conditioned latent denoiser; writes OUT/denoiser and OUT/classes.json."""
    from histosynth.cli.progress import progress_bar
    from histosynth.models.autoencoder import Autoencoder
    from histosynth.models.denoiser import ConditionalDenoiser, DenoiserConfig
    from histosynth.training.objectives import DenoiserLossConfig
    from histosynth.training.recipes import AUTOENCODER_DIR, train_denoiser

    _check_out(out, "denoiser")
    ae_dir = autoencoder_dir or out / AUTOENCODER_DIR
    ae_config = Autoencoder.read_config(ae_dir)
    manifest, tiles = _load_tiles(data, split, classes, ae_config.tile_size, unlabelled)
    model_values = {"latent_channels": ae_config.latent_channels, "latent_size": ae_config.latent_size,
                    "num_labels": len(manifest.classes.labels), "num_mask_classes": manifest.classes.num_mask_classes}
    if init is not None:  # the leg keeps the architecture it continues
        init_dir = init / "denoiser" if (init / "denoiser").is_dir() else init
        model_values = {**ConditionalDenoiser.read_config(init_dir).model_dump(), **model_values}
    train_config, model_config, loss_config = _recipe_configs(config, steps, batch_size, threads, DenoiserConfig,
                                                              DenoiserLossConfig, model_values)
    with progress_bar("encoding latents (8 symmetries)", len(tiles)) as handle:
        encode_progress = handle
        with progress_bar("training denoiser", train_config.steps) as train_handle:
            result = train_denoiser(manifest, tiles, out, ae_dir, model_config, train_config, loss_config,
                                    on_step=_step_reporter(train_handle, train_config.steps),
                                    on_encode=encode_progress, init_dir=init)
    typer.echo(f"denoiser: {result.steps} steps ({result.items_per_second:.1f} latents/s) -> {result.folder}")


@app.command()
def decoder(
    data: Path = DATA, out: Path = OUT, config: Optional[Path] = CONFIG, split: str = SPLIT,
    steps: Optional[int] = STEPS, batch_size: Optional[int] = BATCH, classes: Optional[str] = CLASSES,
    threads: Optional[int] = THREADS,
    base: Optional[Path] = typer.Option(
        None, "--base", help="Model folder (or autoencoder folder) whose decoder to fine-tune (default: the shipped "
        "model). Its encoder and latent statistics are kept, so its denoiser stays valid."),
) -> None:
    """Fine-tune the autoencoder's decoder with L1 + perceptual + patch-GAN losses, encoder frozen; writes
    OUT/autoencoder and copies the base's denoiser, mask model and classes.json into OUT where missing."""
    from histosynth.cli.progress import progress_bar
    from histosynth.models.autoencoder import Autoencoder, AutoencoderConfig
    from histosynth.training.decoder_gan import DecoderGanLossConfig
    from histosynth.training.recipes import AUTOENCODER_DIR, finetune_decoder
    from histosynth.weights import default_model_dir

    _check_out(out, "decoder")
    base = base or default_model_dir()
    base_ae = base / AUTOENCODER_DIR if (base / AUTOENCODER_DIR).is_dir() else base
    ae_config = Autoencoder.read_config(base_ae)
    train_config, _, loss_config = _recipe_configs(config, steps, batch_size, threads, AutoencoderConfig,
                                                   DecoderGanLossConfig)
    manifest, tiles = _load_tiles(data, split, classes, ae_config.tile_size)
    with progress_bar("fine-tuning decoder", train_config.steps) as handle:
        result = finetune_decoder(manifest, tiles, out, base, train_config, loss_config,
                                  on_step=_step_reporter(handle, train_config.steps))
    typer.echo(f"decoder: {result.steps} steps ({result.items_per_second:.1f} crops/s) -> {result.folder}")


@app.command("mask-model")
def mask_model(
    data: Path = DATA, out: Path = OUT, config: Optional[Path] = CONFIG, split: str = SPLIT,
    steps: Optional[int] = STEPS, batch_size: Optional[int] = BATCH, classes: Optional[str] = CLASSES,
    threads: Optional[int] = THREADS,
    tile_size: int = typer.Option(224, "--tile-size", min=16, help="Masks are read at this size (the image model's)."),
    factor: int = typer.Option(16, "--factor", min=1, help="Mask pixels per generated cell (a multiple of the "
                               "autoencoder's 8 px keeps cells on the latent grid)."),
) -> None:
    """Train the class-conditioned mask generation model (diffusion over per-class fractions of
    FACTOR px cells, for `histosynth large`); writes OUT/mask_model."""
    from histosynth.cli.progress import progress_bar
    from histosynth.models.denoiser import DenoiserConfig
    from histosynth.training.objectives import DenoiserLossConfig
    from histosynth.training.recipes import train_mask_model

    _check_out(out, "mask-model")
    if tile_size % factor:
        from histosynth.errors import InputError

        raise InputError(f"--tile-size {tile_size} is not a multiple of --factor {factor}")
    manifest, tiles = _load_tiles(data, split, classes, tile_size)
    n_classes = manifest.classes.num_mask_classes
    model_values = {"latent_channels": n_classes, "latent_size": tile_size // factor, "num_mask_classes": n_classes,
                    "num_labels": len(manifest.classes.labels), "mask_conditioning": "none"}
    train_config, model_config, loss_config = _recipe_configs(config, steps, batch_size, threads, DenoiserConfig,
                                                              DenoiserLossConfig, model_values)
    with progress_bar("training mask model", train_config.steps) as handle:
        result = train_mask_model(manifest, tiles, out, model_config, train_config, loss_config, factor,
                                  on_step=_step_reporter(handle, train_config.steps))
    typer.echo(f"mask model: {result.steps} steps ({result.items_per_second:.1f} masks/s) -> {result.folder}")


@app.command()
def encoder(
    data: Path = DATA, out: Path = OUT, config: Optional[Path] = CONFIG, split: str = SPLIT,
    steps: Optional[int] = STEPS, batch_size: Optional[int] = BATCH, classes: Optional[str] = CLASSES,
    threads: Optional[int] = THREADS,
    unlabelled: Optional[Path] = typer.Option(None, "--unlabelled", help="Extra tiles (no labels needed) to train on."),
    tile_size: int = typer.Option(224, "--tile-size", min=16, help="Tiles are held in memory at this size."),
) -> None:
    """Train the histology feature encoder by self-supervision (SimCLR); writes OUT/encoder."""
    from histosynth.cli.progress import progress_bar
    from histosynth.models.histology_encoder import HistologyEncoderConfig
    from histosynth.training.contrastive import ContrastiveLossConfig
    from histosynth.training.recipes import train_histology_encoder

    _check_out(out, "encoder")
    train_config, model_config, loss_config = _recipe_configs(config, steps, batch_size, threads,
                                                              HistologyEncoderConfig, ContrastiveLossConfig)
    manifest, tiles = _load_tiles(data, split, classes, tile_size, unlabelled)
    with progress_bar("training encoder", train_config.steps) as handle:
        result = train_histology_encoder(manifest, tiles, out, model_config, train_config, loss_config,
                                         on_step=_step_reporter(handle, train_config.steps))
    typer.echo(f"encoder: {result.steps} steps ({result.items_per_second:.1f} tiles/s) -> {result.folder}")


@app.command("like-model")
def like_model(
    data: Path = DATA, out: Path = OUT, config: Optional[Path] = CONFIG, split: str = SPLIT,
    steps: Optional[int] = STEPS, batch_size: Optional[int] = BATCH, classes: Optional[str] = CLASSES,
    threads: Optional[int] = THREADS,
    init: Optional[Path] = typer.Option(None, "--init", help="Base model folder to fine-tune (default: the shipped "
                                        "EBHI model); its autoencoder is copied into OUT."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Registry encoder of the conditioning embedding "
                                          "(default: model.encoder in the config, else histology)."),
) -> None:
    """Fine-tune a class + mask denoiser into one also conditioned on a tile embedding (for `sample --like`);
    writes a complete model folder OUT."""
    from histosynth.cli.progress import progress_bar
    from histosynth.training.like import LikeModelConfig, train_like_model
    from histosynth.training.objectives import EmbeddingDenoiserLossConfig
    from histosynth.weights import default_model_dir

    _check_out(out, "like-model")
    base = init or default_model_dir()
    train_config, like_config, loss_config = _recipe_configs(config, steps, batch_size, threads, LikeModelConfig,
                                                             EmbeddingDenoiserLossConfig)
    if encoder is not None:
        like_config = like_config.model_copy(update={"encoder": encoder})
    from histosynth.models.autoencoder import Autoencoder

    tile_size = Autoencoder.read_config(base / "autoencoder").tile_size
    manifest, tiles = _load_tiles(data, split, classes or str(base / "classes.json"), tile_size)
    with progress_bar("encoding latents + embeddings", len(tiles)) as encode_handle:
        with progress_bar("fine-tuning like-model", train_config.steps) as handle:
            result = train_like_model(manifest, tiles, out, base, like_config.encoder, train_config, loss_config,
                                      like_config.embedding_hidden, on_step=_step_reporter(handle, train_config.steps),
                                      on_encode=encode_handle)
    typer.echo(f"like-model: {result.steps} steps ({result.items_per_second:.1f} latents/s) -> {out}")


@app.command("prototype-classifier")
def prototype_classifier(
    prototypes: Path = typer.Option(..., "--prototypes", help="Prototype table .h5ad (from `histosynth prototypes`): "
                                    "obs tile, prototype, prototype_id; uns prototype_centroids."),
    out: Path = OUT, config: Optional[Path] = CONFIG, steps: Optional[int] = STEPS,
    batch_size: Optional[int] = BATCH, threads: Optional[int] = THREADS,
    model: Optional[Path] = typer.Option(None, "--model", help="Diffusion model folder whose latents and noise "
                                         "schedule the classifier learns (default: the shipped EBHI model)."),
) -> None:
    """Train the latent prototype classifier C(prototype | z_t, t) for classifier guidance
    (`sample --prototype`, `synthesize-balanced`); writes the classifier folder OUT."""
    from histosynth.cli.progress import progress_bar
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.models.prototype_classifier import PrototypeClassifierConfig
    from histosynth.embeddings.prototypes import read_prototype_table
    from histosynth.training.prototypes import PrototypeLossConfig, load_table_tiles, train_prototype_classifier
    from histosynth.weights import default_model_dir

    _check_out(out, "prototype-classifier")
    table = read_prototype_table(prototypes)
    loaded = LatentDiffusionModel.load(model or default_model_dir())
    den = loaded.denoiser.config
    model_values = {"latent_channels": den.latent_channels, "latent_size": den.latent_size,
                    "num_prototypes": table.num_prototypes, "num_train_timesteps": den.num_train_timesteps,
                    "beta_schedule": den.beta_schedule}
    train_config, classifier_config, loss_config = _recipe_configs(
        config, steps, batch_size, threads, PrototypeClassifierConfig, PrototypeLossConfig, model_values)
    with progress_bar("loading tiles", len(table.tiles)) as advance:
        tiles = load_table_tiles(table, loaded, on_item=advance)
    with progress_bar("encoding latents", len(tiles)) as encode_handle:
        with progress_bar("training prototype classifier", train_config.steps) as handle:
            result = train_prototype_classifier(table, tiles, out, loaded, classifier_config, train_config,
                                                loss_config, on_step=_step_reporter(handle, train_config.steps),
                                                on_encode=encode_handle)
    typer.echo(f"prototype classifier: {result.steps} steps ({result.items_per_second:.1f} latents/s), "
               f"{table.num_prototypes} prototypes -> {result.folder}")
