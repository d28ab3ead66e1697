"""Fine-tune a class + mask denoiser into an embedding-conditioned one (``histosynth sample --like``).

The new denoiser is the base denoiser plus a zero-initialised embedding projection (see
:mod:`histosynth.models.denoiser`), so training starts from exactly the base model. It trains on
the base model's latents of ``tiles`` with the tile embeddings of a registry encoder, dropping the
embedding (to the learned null embedding) and the class + mask (to the null class) independently.
The output folder is a complete model folder: the base autoencoder (and mask model) copied, the
new ``denoiser/`` and ``classes.json``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from histosynth.data.manifest import TileManifest
from histosynth.errors import InputError
from histosynth.io import atomic_dir, atomic_path
from histosynth.models.conditioning import dihedral, mask_fractions
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.pipeline import AUTOENCODER_DIR, DENOISER_DIR, MASK_MODEL_DIR, LatentDiffusionModel
from histosynth.training.config import TrainConfig
from histosynth.training.latents import encode_dihedral, training_device
from histosynth.training.loop import train
from histosynth.training.objectives import DenoiserObjective, EmbeddingDenoiserLossConfig
from histosynth.training.recipes import RUNS_DIR, Progress, RecipeResult, provenance, run_settings
from histosynth.training.run import start_or_resume
from histosynth.training.tensors import TileTensors

LIKE_RUN = "like"
INPUTS_FILE = "inputs.safetensors"


class LikeModelConfig(BaseModel):
    """What a like-model adds to its base denoiser (the ``model:`` section of its YAML)."""

    model_config = ConfigDict(extra="forbid")

    #: Registry encoder whose tile features condition the denoiser.
    encoder: str = "histology"
    embedding_hidden: int = Field(256, ge=1)


def cached_training_inputs(
    run_dir: Path, autoencoder: torch.nn.Module, images: torch.Tensor, variants: int, encoder=None,
    on_encode: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Latent posteriors (N,V,C,h,w) of the first ``variants`` dihedral transforms and, with an ``encoder``,
    their embeddings (N,V,D); kept in ``run_dir`` so a resumed run does not encode again.

    The run's settings (checked by ``start_or_resume``) pin the data, autoencoder and encoder.
    """
    from safetensors.torch import load_file, save_file

    path = run_dir / INPUTS_FILE
    if path.is_file():
        cached = load_file(str(path))
        if len(cached["mean"]) == len(images) and cached["mean"].shape[1] == variants \
                and (encoder is None or "embeddings" in cached):
            return cached
    device = training_device()
    mean, logvar = encode_dihedral(autoencoder.to(device), images, on_batch=on_encode, variants=variants)
    inputs = {"mean": mean, "logvar": logvar}
    if encoder is not None:
        per_variant = []
        for k in range(variants):
            tiles = dihedral(images, k).permute(0, 2, 3, 1).numpy()
            per_variant.append(torch.from_numpy(encoder.encode(list(tiles))).float())
        inputs["embeddings"] = torch.stack(per_variant, 1)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp))
    return inputs


def init_from_base(model: ConditionalDenoiser, base: ConditionalDenoiser) -> None:
    """Load the base denoiser's weights; only the new embedding parameters may be left as initialised."""
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    stray = [k for k in missing if not k.startswith("embedding_")] + list(unexpected)
    if stray:
        raise ValueError(f"base denoiser does not fit the embedding denoiser ({stray[0]})")


def _copy_part(source: Path, destination: Path) -> None:
    if source.resolve() == destination.resolve():
        return
    with atomic_dir(destination) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)


def train_like_model(
    manifest: TileManifest,
    tiles: TileTensors,
    model_dir: str | Path,
    init_dir: str | Path,
    encoder_name: str,
    train_config: TrainConfig,
    loss_config: EmbeddingDenoiserLossConfig,
    embedding_hidden: int = 256,
    on_step: Progress | None = None,
    on_encode: Callable[[int], None] | None = None,
) -> RecipeResult:
    """Fine-tune ``init_dir``'s denoiser on ``tiles`` with ``encoder_name`` embeddings; writes a model folder."""
    from diffusers import DDPMScheduler

    from histosynth.encoders.registry import get_encoder

    model_dir, init_dir = Path(model_dir), Path(init_dir)
    if model_dir.resolve() == init_dir.resolve():
        raise InputError("--out must be another folder than the base model (which is copied, not changed)", model_dir)
    base = LatentDiffusionModel.load(init_dir)
    classes = manifest.classes
    if (classes.labels, classes.mask_classes) != (base.classes.labels, base.classes.mask_classes):
        raise InputError("the manifest's classes differ from the base model's classes.json", manifest.source)
    if base.denoiser.config.embedding_dim:
        raise InputError("the base denoiser is already embedding-conditioned; fine-tune from a class + mask one",
                         init_dir)
    encoder = get_encoder(encoder_name, training_device())
    config = base.denoiser.config.model_copy(update={
        "embedding_dim": encoder.dim, "embedding_encoder": encoder_name, "embedding_hidden": embedding_hidden})
    run_dir = model_dir / RUNS_DIR / LIKE_RUN
    settings = run_settings(train_config, config, loss_config, tiles, init=base.identity, encoder=encoder.identity)
    start_or_resume(run_dir, settings)
    inputs = cached_training_inputs(run_dir, base.autoencoder, tiles.images, loss_config.latent_variants, encoder,
                                    on_encode)
    ae = base.autoencoder_config
    objective = DenoiserObjective(
        latent_mean=inputs["mean"], latent_logvar=inputs["logvar"],
        fractions=mask_fractions(tiles.masks, tiles.mask_known, config.num_mask_classes, ae.downsample),
        labels=tiles.labels, shift=torch.tensor(ae.latent_shift), scale=ae.scaling_factor,
        null_label=config.null_label, settings=loss_config, embeddings=inputs["embeddings"],
        noise_scheduler=DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                                      beta_schedule=config.beta_schedule, prediction_type=config.prediction_type),
    )
    torch.manual_seed(train_config.seed)
    model = ConditionalDenoiser(config)
    init_from_base(model, base.denoiser)
    result = train(model, objective, train_config, run_dir, on_step)
    if not result.is_main_process:  # other ranks of a multi-process run: the main one writes the folder
        return RecipeResult(model_dir, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)
    _copy_part(init_dir / AUTOENCODER_DIR, model_dir / AUTOENCODER_DIR)
    if (init_dir / MASK_MODEL_DIR).is_dir():
        _copy_part(init_dir / MASK_MODEL_DIR, model_dir / MASK_MODEL_DIR)
    facts = provenance(manifest, len(tiles), train_config, result.seconds, result.items_per_second)
    folder = model_dir / DENOISER_DIR
    with atomic_dir(folder) as tmp:
        result.ema.eval().cpu().save(tmp, labels=classes.labels, embedding_encoder_identity=encoder.identity,
                      fine_tuned_from=base.identity, **facts)
    classes.save(model_dir / "classes.json")
    return RecipeResult(folder, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)
