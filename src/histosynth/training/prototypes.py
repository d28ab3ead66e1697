"""Training the latent prototype classifier on a prototype table (:mod:`histosynth.embeddings.prototypes`).

The classifier trains on the diffusion model's latents of the table's tiles, scaled as the denoiser
sees them and noised to a uniform random step by the denoiser's own schedule (cross-entropy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from histosynth.embeddings.prototypes import PrototypeTable
from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.models.prototype_classifier import PrototypeClassifier, PrototypeClassifierConfig
from histosynth.training.config import TrainConfig
from histosynth.training.recipes import RUNS_DIR, Progress, RecipeResult, run_settings
from histosynth.training.run import start_or_resume
from histosynth.training.tensors import TileTensors

CLASSIFIER_RUN = "prototype-classifier"


class PrototypeLossConfig(BaseModel):
    """Classifier training: which dihedral variants of each tile are encoded (8 = all; 1 = 8x cheaper)."""

    latent_variants: int = Field(8, ge=1, le=8)


@dataclass
class PrototypeClassifierObjective:
    """Cross-entropy of the prototype from a latent noised to a uniform random step."""

    latent_mean: torch.Tensor  # N,V,C,h,w
    latent_logvar: torch.Tensor
    targets: torch.Tensor  # N
    shift: torch.Tensor
    scale: float
    noise_scheduler: object  # diffusers DDPMScheduler

    def num_items(self) -> int:
        return len(self.targets)

    def loss(self, model, indices, generator, device):
        from histosynth.training.objectives import sample_scaled_latents

        n = len(indices)
        z, _ = sample_scaled_latents(self.latent_mean, self.latent_logvar, indices, self.shift, self.scale, generator)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (n,), generator=generator)
        noisy = self.noise_scheduler.add_noise(z, torch.randn(z.shape, generator=generator), t)
        logits = model(noisy.to(device), t.to(device))
        targets = self.targets[indices].to(device)
        loss = F.cross_entropy(logits.float(), targets)
        return loss, {"accuracy": float((logits.argmax(1) == targets).float().mean())}


def train_prototype_classifier(
    table: PrototypeTable,
    tiles: TileTensors,
    out: str | Path,
    model: LatentDiffusionModel,
    classifier_config: PrototypeClassifierConfig,
    train_config: TrainConfig,
    loss_config: PrototypeLossConfig,
    on_step: Progress | None = None,
    on_encode: Callable[[int], None] | None = None,
) -> RecipeResult:
    """Train the latent classifier on ``table``'s tiles (``tiles``, same order) and write it to ``out``."""
    from diffusers import DDPMScheduler

    from histosynth.io import file_digest
    from histosynth.training.like import cached_training_inputs
    from histosynth.training.loop import train
    from histosynth.training.recipes import provenance

    out = Path(out)
    if len(tiles) != len(table.ids):
        raise ValueError("tiles must be the table's tiles, in its order")
    den, ae = model.denoiser.config, model.autoencoder_config
    expected = {"latent_channels": den.latent_channels, "latent_size": den.latent_size,
                "num_prototypes": table.num_prototypes, "num_train_timesteps": den.num_train_timesteps,
                "beta_schedule": den.beta_schedule}
    wrong = [k for k, v in expected.items() if getattr(classifier_config, k) != v]
    if wrong:
        raise InputError(f"classifier config {wrong[0]} must match the model and prototypes ({expected[wrong[0]]})")
    run_dir = out / RUNS_DIR / CLASSIFIER_RUN
    settings = run_settings(train_config, classifier_config, loss_config, tiles, model=model.identity,
                             prototypes=file_digest(table.source)[:12])
    start_or_resume(run_dir, settings)
    inputs = cached_training_inputs(run_dir, model.autoencoder, tiles.images, loss_config.latent_variants,
                                    on_encode=on_encode)
    scheduler = DDPMScheduler(num_train_timesteps=den.num_train_timesteps, beta_schedule=den.beta_schedule,
                              prediction_type=den.prediction_type)
    objective = PrototypeClassifierObjective(inputs["mean"], inputs["logvar"], torch.from_numpy(table.ids).long(),
                                             torch.tensor(ae.latent_shift), ae.scaling_factor, scheduler)
    torch.manual_seed(train_config.seed)
    result = train(PrototypeClassifier(classifier_config, table.names), objective, train_config, run_dir, on_step)
    if not result.is_main_process:  # other ranks of a multi-process run: the main one writes the folder
        return RecipeResult(out, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)
    from histosynth.data.manifest import TileManifest

    facts = provenance(TileManifest(table.source, [], model.classes), len(tiles), train_config, result.seconds,
                        result.items_per_second)
    result.ema.eval().cpu().save(
        out, diffusion_model=model.identity,
        latent_scaling={"scaling_factor": ae.scaling_factor, "latent_shift": list(ae.latent_shift)},
        prototypes_source={"file": table.source.name, "sha256": file_digest(table.source)[:12]},
        embedding_encoder=table.encoder, **facts)
    return RecipeResult(out, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)


def load_table_tiles(table: PrototypeTable, model: LatentDiffusionModel,
                     on_item: Callable[[int], None] | None = None) -> TileTensors:
    """The table's tiles in memory at the model's tile size (missing or corrupt files: one-line errors)."""
    from histosynth.data.manifest import TileManifest, TileRecord
    from histosynth.training.tensors import load_tile_tensors

    records = [TileRecord(id=str(i), image=p) for i, p in enumerate(table.tiles)]
    manifest = TileManifest(table.source, records, model.classes)
    return load_tile_tensors(manifest, model.autoencoder_config.tile_size, on_item=on_item)
