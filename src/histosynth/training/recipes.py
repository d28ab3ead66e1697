"""Training recipes: manifest -> trained model folder, for the autoencoder and the denoiser."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from histosynth.data.manifest import TileManifest
from histosynth.io import atomic_dir, atomic_path
from histosynth.models.autoencoder import Autoencoder, AutoencoderConfig
from histosynth.models.conditioning import dihedral, mask_fractions
from histosynth.models.denoiser import ConditionalDenoiser, DenoiserConfig
from histosynth.models.pipeline import AUTOENCODER_DIR, DENOISER_DIR, MASK_MODEL_DIR
from histosynth.training.config import TrainConfig
from histosynth.training.latents import (
    encode_dihedral_cached,
    measure_latent_statistics,
    training_device,
)
from histosynth.training.loop import train
from histosynth.training.objectives import (
    AutoencoderLossConfig,
    AutoencoderObjective,
    DenoiserLossConfig,
    DenoiserObjective,
)
from histosynth.training.run import start_or_resume
from histosynth.training.tensors import TileTensors

Progress = Callable[[int, dict[str, float]], None]
RUNS_DIR = "runs"
LATENT_CACHE = "latents.safetensors"  # in the denoiser's run folder: a resumed run skips encoding


@dataclass
class RecipeResult:
    folder: Path
    steps: int
    resumed_from: int
    seconds: float
    items_per_second: float


def _rank_result(folder: Path, result) -> RecipeResult:
    return RecipeResult(folder, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)


def run_settings(train_config, model_config, loss_config, tiles: TileTensors, **data: object) -> dict:
    """What a resumed run must share with the run it continues (checked by ``start_or_resume``)."""
    return {"train": train_config.model_dump(mode="json"), "model": model_config.model_dump(mode="json"),
            "objective": loss_config.model_dump(mode="json"),
            "data": {"ids": len(tiles), "first": tiles.ids[:3], **data}}


def provenance(manifest: TileManifest, n: int, train_config: TrainConfig, seconds: float, speed: float) -> dict:
    """The facts about the data and the run that a model folder records (``trained_on``, ``training``)."""
    mpp = manifest.mpp  # the tiles' shared microns per pixel: `histosynth large` writes it into its OME-TIFF
    return {
        "trained_on": {"manifest": str(manifest.source), "tiles": n, **({"mpp": mpp} if mpp else {})},
        "training": {"steps": train_config.steps, "wall_seconds": round(seconds, 1),
                     "items_per_second": round(speed, 2), "machine": f"{platform.machine()} {platform.node()}",
                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
    }


def train_autoencoder(
    manifest: TileManifest,
    tiles: TileTensors,
    model_dir: str | Path,
    model_config: AutoencoderConfig,
    train_config: TrainConfig,
    loss_config: AutoencoderLossConfig,
    on_step: Progress | None = None,
) -> RecipeResult:
    """Train the autoencoder on ``tiles`` and write ``model_dir/autoencoder`` (EMA weights)."""
    model_dir = Path(model_dir)
    run_dir = model_dir / RUNS_DIR / AUTOENCODER_DIR
    settings = run_settings(train_config, model_config, loss_config, tiles)
    start_or_resume(run_dir, settings)
    torch.manual_seed(train_config.seed)
    model = Autoencoder(model_config)
    result = train(model, AutoencoderObjective(tiles.images, loss_config), train_config, run_dir, on_step)
    if not result.is_main_process:  # other ranks of a multi-process run: the main one writes the folder
        return _rank_result(model_dir / AUTOENCODER_DIR, result)
    ema = result.ema.eval()
    shift, scale = measure_latent_statistics(ema, tiles.images)
    ema.autoencoder_config = model_config.model_copy(update={"scaling_factor": scale, "latent_shift": tuple(shift)})
    folder = model_dir / AUTOENCODER_DIR
    facts = provenance(manifest, len(tiles), train_config, result.seconds, result.items_per_second)
    with atomic_dir(folder) as tmp:
        ema.cpu().save(tmp, **facts)
    return RecipeResult(folder, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)


DECODER_RUN = "decoder"


def finetune_decoder(
    manifest: TileManifest,
    tiles: TileTensors,
    model_dir: str | Path,
    base_dir: str | Path,
    train_config: TrainConfig,
    loss_config,
    on_step: Progress | None = None,
) -> RecipeResult:
    """Fine-tune the decoder of ``base_dir``'s autoencoder (L1 + perceptual + patch GAN, encoder frozen)
    and write ``model_dir/autoencoder`` with the base's encoder and latent statistics unchanged.

    ``base_dir`` is a model folder (``autoencoder/`` inside) or an autoencoder folder. When it is a
    model folder, its other parts (denoiser, mask model, classes) are copied into ``model_dir`` where
    missing, so the result is a complete model folder that samples with the new decoder.
    """
    from histosynth.io import file_digest
    from histosynth.models.autoencoder import WEIGHTS_NAME
    from histosynth.training.decoder_gan import DecoderGanObjective, DecoderTuner

    model_dir, base_dir = Path(model_dir), Path(base_dir)
    base_ae = base_dir / AUTOENCODER_DIR if (base_dir / AUTOENCODER_DIR).is_dir() else base_dir
    autoencoder = Autoencoder.load(base_ae)
    ae_config = autoencoder.autoencoder_config
    run_dir = model_dir / RUNS_DIR / DECODER_RUN
    base_digest = file_digest(base_ae / WEIGHTS_NAME)
    settings = run_settings(train_config, ae_config, loss_config, tiles, base=base_digest)
    start_or_resume(run_dir, settings)
    torch.manual_seed(train_config.seed)
    tuner = DecoderTuner(autoencoder, loss_config.discriminator)
    result = train(tuner, DecoderGanObjective(tiles.images, loss_config), train_config, run_dir, on_step)
    if not result.is_main_process:
        return _rank_result(model_dir / AUTOENCODER_DIR, result)
    tuned = Autoencoder.load(base_ae)  # the base's encoder and latent statistics bit for bit, the EMA decoder
    tuned.load_state_dict({**tuned.state_dict(), **result.ema.decoder_state()})
    folder = model_dir / AUTOENCODER_DIR
    facts = provenance(manifest, len(tiles), train_config, result.seconds, result.items_per_second)
    facts["decoder_finetune"] = {"base": str(base_ae), "base_weights_sha256": base_digest,
                                 "objective": loss_config.model_dump(mode="json")}
    with atomic_dir(folder) as tmp:
        tuned.cpu().save(tmp, **facts)
    if base_ae != base_dir:
        copy_missing_parts(base_dir, model_dir)
    return RecipeResult(folder, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)


def copy_missing_parts(base_dir: Path, model_dir: Path) -> None:
    """Complete ``model_dir`` with the denoiser, mask model and class list of ``base_dir`` it lacks (each
    copied atomically), so a folder whose decoder was replaced is a whole model folder."""
    import shutil

    for part in (DENOISER_DIR, MASK_MODEL_DIR, "classes.json"):
        source, target = Path(base_dir) / part, Path(model_dir) / part
        if source.is_dir() and not target.exists():
            with atomic_dir(target) as tmp:
                shutil.copytree(source, tmp, dirs_exist_ok=True)
        elif source.is_file() and not target.exists():
            with atomic_path(target) as tmp:
                shutil.copy2(source, tmp)


def train_denoiser(
    manifest: TileManifest,
    tiles: TileTensors,
    model_dir: str | Path,
    autoencoder_dir: str | Path,
    model_config: DenoiserConfig,
    train_config: TrainConfig,
    loss_config: DenoiserLossConfig,
    on_step: Progress | None = None,
    on_encode: Callable[[int], None] | None = None,
    init_dir: str | Path | None = None,
) -> RecipeResult:
    """Encode ``tiles`` with the autoencoder, train the denoiser, write ``model_dir/denoiser``.

    With ``init_dir`` (a denoiser folder of the same architecture) training continues from its weights:
    a further leg of a run, with its own steps, learning rate and seed.
    """
    from diffusers import DDPMScheduler

    model_dir = Path(model_dir)
    run_dir = model_dir / RUNS_DIR / DENOISER_DIR
    autoencoder = Autoencoder.load(autoencoder_dir)
    ae_config = autoencoder.autoencoder_config
    init = _load_init_denoiser(init_dir, model_config) if init_dir is not None else None
    settings = run_settings(train_config, model_config, loss_config, tiles,
                             autoencoder=ae_config.model_dump(mode="json"),
                             **({"init": init[1]} if init else {}))
    start_or_resume(run_dir, settings)
    from histosynth.io import file_digest
    from histosynth.models.autoencoder import WEIGHTS_NAME as AE_WEIGHTS

    mean, logvar = encode_dihedral_cached(run_dir / LATENT_CACHE, autoencoder.to(training_device()), tiles.images,
                                          file_digest(Path(autoencoder_dir) / AE_WEIGHTS), on_batch=on_encode)
    fractions = mask_fractions(tiles.masks, tiles.mask_known, model_config.num_mask_classes, ae_config.downsample)
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=model_config.num_train_timesteps,
        beta_schedule=model_config.beta_schedule,
        prediction_type=model_config.prediction_type,
    )
    objective = DenoiserObjective(
        latent_mean=mean, latent_logvar=logvar, fractions=fractions, labels=tiles.labels,
        shift=torch.tensor(ae_config.latent_shift), scale=ae_config.scaling_factor,
        null_label=model_config.null_label, noise_scheduler=noise_scheduler, settings=loss_config,
    )
    torch.manual_seed(train_config.seed)
    model = init[0].train() if init else ConditionalDenoiser(model_config)
    result = train(model, objective, train_config, run_dir, on_step)
    if not result.is_main_process:  # other ranks of a multi-process run: the main one writes the folder
        return _rank_result(model_dir / DENOISER_DIR, result)
    folder = model_dir / DENOISER_DIR
    facts = provenance(manifest, len(tiles), train_config, result.seconds, result.items_per_second)
    if init:
        facts["continued_from"] = {"folder": str(init_dir), "weights_sha256": init[1]}
    with atomic_dir(folder) as tmp:
        result.ema.eval().cpu().save(tmp, labels=manifest.classes.labels, **facts)
    manifest.classes.save(model_dir / "classes.json")
    return RecipeResult(folder, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)


def _load_init_denoiser(init_dir: str | Path, model_config: DenoiserConfig) -> tuple[ConditionalDenoiser, str]:
    """The denoiser a further leg starts from, and its weights' digest; one line if its architecture differs."""
    from histosynth.errors import InputError
    from histosynth.io import file_digest
    from histosynth.models.denoiser import WEIGHTS_NAME

    init_dir = Path(init_dir)
    init_dir = init_dir / DENOISER_DIR if (init_dir / DENOISER_DIR).is_dir() else init_dir
    model = ConditionalDenoiser.load(init_dir)
    if model.config != model_config:
        differ = sorted(k for k, v in model_config.model_dump().items() if model.config.model_dump().get(k) != v)
        raise InputError(f"its denoiser differs from the configured one ({', '.join(differ)}); "
                         "drop the model: section or match it", init_dir)
    return model, file_digest(init_dir / WEIGHTS_NAME)


def mask_field(fractions: torch.Tensor) -> torch.Tensor:
    """Mask fractions in [0, 1] -> the mask model's "latent" in [-1, 1] (and back with ``(x + 1) / 2``)."""
    return fractions * 2 - 1


def train_mask_model(
    manifest: TileManifest,
    tiles: TileTensors,
    model_dir: str | Path,
    model_config: DenoiserConfig,
    train_config: TrainConfig,
    loss_config: DenoiserLossConfig,
    factor: int = 8,
    on_step: Progress | None = None,
) -> RecipeResult:
    """Train the class-conditioned mask generation model; writes ``model_dir/mask_model``.

    The same denoiser, objective and loop as the image model, with ``mask_conditioning='none'``: its
    data are the known masks as per-class fractions of ``factor`` px cells (the image denoiser's
    condition grid), under the 8 dihedral symmetries, with no posterior noise.
    """
    from diffusers import DDPMScheduler

    if model_config.mask_conditioning != "none" or model_config.latent_channels != manifest.classes.num_mask_classes:
        raise ValueError("a mask model needs mask_conditioning='none' and one channel per mask class")
    known = tiles.mask_known
    if not bool(known.any()):
        from histosynth.errors import InputError

        raise InputError("no tile has a mask to train the mask model on", manifest.source)
    model_dir = Path(model_dir)
    run_dir = model_dir / RUNS_DIR / MASK_MODEL_DIR
    settings = run_settings(train_config, model_config, loss_config, tiles, factor=factor, masks=int(known.sum()))
    start_or_resume(run_dir, settings)
    fractions = mask_fractions(tiles.masks[known], torch.ones(int(known.sum()), dtype=torch.bool),
                               model_config.latent_channels, factor)
    mean = torch.stack([mask_field(dihedral(fractions, k)) for k in range(8)], 1).half()
    objective = DenoiserObjective(
        latent_mean=mean, latent_logvar=torch.full_like(mean, -30.0), fractions=fractions[:, :0],
        labels=tiles.labels[known], shift=torch.zeros(model_config.latent_channels), scale=1.0,
        null_label=model_config.null_label,
        noise_scheduler=DDPMScheduler(num_train_timesteps=model_config.num_train_timesteps,
                                      beta_schedule=model_config.beta_schedule,
                                      prediction_type=model_config.prediction_type),
        settings=loss_config,
    )
    torch.manual_seed(train_config.seed)
    model = ConditionalDenoiser(model_config)
    result = train(model, objective, train_config, run_dir, on_step)
    if not result.is_main_process:  # other ranks of a multi-process run: the main one writes the folder
        return _rank_result(model_dir / MASK_MODEL_DIR, result)
    folder = model_dir / MASK_MODEL_DIR
    facts = provenance(manifest, int(known.sum()), train_config, result.seconds, result.items_per_second)
    with atomic_dir(folder) as tmp:
        result.ema.eval().cpu().save(tmp, labels=manifest.classes.labels, role="mask", factor=factor, **facts)
    return RecipeResult(folder, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)


ENCODER_DIR = "encoder"


def train_histology_encoder(
    manifest: TileManifest,
    tiles: TileTensors,
    model_dir: str | Path,
    model_config,
    train_config: TrainConfig,
    loss_config,
    on_step: Progress | None = None,
) -> RecipeResult:
    """Self-supervised (SimCLR) training of the histology encoder; writes ``model_dir/encoder``."""
    from histosynth.models.histology_encoder import ContrastiveModel
    from histosynth.training.contrastive import ContrastiveObjective

    model_dir = Path(model_dir)
    run_dir = model_dir / RUNS_DIR / ENCODER_DIR
    settings = run_settings(train_config, model_config, loss_config, tiles)
    start_or_resume(run_dir, settings)
    torch.manual_seed(train_config.seed)
    model = ContrastiveModel(model_config)
    objective = ContrastiveObjective(tiles.images, model_config.input_size, loss_config)
    result = train(model, objective, train_config, run_dir, on_step)
    if not result.is_main_process:  # other ranks of a multi-process run: the main one writes the folder
        return _rank_result(model_dir / ENCODER_DIR, result)
    folder = model_dir / ENCODER_DIR
    facts = provenance(manifest, len(tiles), train_config, result.seconds, result.items_per_second)
    with atomic_dir(folder) as tmp:
        result.ema.backbone.eval().cpu().save(tmp, **facts)
    return RecipeResult(folder, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)
