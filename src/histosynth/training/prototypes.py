"""Prototype tables (from ``histosynth prototypes``) and training the latent prototype classifier.

A prototype table is an AnnData ``.h5ad``: ``obs`` has ``tile`` (image path; relative paths are
relative to the file's folder), ``prototype`` (``"<group>/<k>"``) and ``prototype_id`` (0..P-1);
``uns['prototype_centroids']`` is the P x D matrix of cluster centres in the embedding space that
was clustered (``X``, when present, holds the tiles' embeddings; ``uns['encoder']`` names the encoder).

The classifier trains on the diffusion model's latents of those tiles, scaled as the denoiser sees
them and noised to a uniform random step by the denoiser's own schedule (cross-entropy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.models.prototype_classifier import (
    PrototypeClassifier,
    PrototypeClassifierConfig,
    save_prototype_classifier,
)
from histosynth.training.config import TrainConfig
from histosynth.training.recipes import RUNS_DIR, Progress, RecipeResult, run_settings
from histosynth.training.run import start_or_resume
from histosynth.training.tensors import TileTensors

CLASSIFIER_RUN = "prototype-classifier"
CENTROIDS_KEY = "prototype_centroids"


@dataclass
class PrototypeTable:
    """Tiles with their prototype ids, the prototype names (index = id) and centroids (P, D)."""

    source: Path
    tiles: list[Path]
    ids: np.ndarray
    names: list[str]
    centroids: np.ndarray
    embeddings: np.ndarray | None = None
    encoder: str | None = None

    @property
    def num_prototypes(self) -> int:
        return len(self.centroids)


def read_prototype_table(path: str | Path) -> PrototypeTable:
    """Read and check a prototype ``.h5ad``; every problem is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("prototype file not found", path)
    try:
        import anndata

        data = anndata.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise InputError(f"not a readable .h5ad file ({type(error).__name__})", path) from None
    missing = [c for c in ("tile", "prototype", "prototype_id") if c not in data.obs.columns]
    if missing:
        raise InputError(f"obs lacks column(s) {', '.join(missing)} (write it with `histosynth prototypes`)", path)
    if CENTROIDS_KEY not in data.uns:
        raise InputError(f"uns has no {CENTROIDS_KEY!r}", path)
    centroids = np.asarray(data.uns[CENTROIDS_KEY], dtype=np.float64)
    if centroids.ndim != 2 or len(centroids) < 2:
        raise InputError(f"uns[{CENTROIDS_KEY!r}] must be a P x D matrix with P >= 2", path)
    try:
        ids = np.asarray(data.obs["prototype_id"], dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError("obs column prototype_id must hold integers", path) from None
    bad = ids[(ids < 0) | (ids >= len(centroids))]
    if len(bad):
        raise InputError(f"prototype_id {int(bad[0])} is out of range for {len(centroids)} centroids", path)
    names = [str(i) for i in range(len(centroids))]
    for pid, name in zip(ids.tolist(), data.obs["prototype"].astype(str).tolist()):
        if names[pid] not in (str(pid), name):
            raise InputError(f"prototype_id {pid} is named both {names[pid]!r} and {name!r}", path)
        names[pid] = name
    tiles = [Path(t) if Path(t).is_absolute() else path.parent / t for t in data.obs["tile"].astype(str)]
    embeddings = None
    if data.X is not None and data.X.shape == (len(ids), centroids.shape[1]):
        embeddings = np.asarray(data.X, dtype=np.float64)
    encoder = data.uns.get("encoder")
    encoder = encoder.get("identity") if isinstance(encoder, dict) else (str(encoder) if encoder else None)
    return PrototypeTable(path, tiles, ids, names, centroids, embeddings, encoder)


def write_prototype_table(path: str | Path, tiles: list[str], ids: np.ndarray, names: list[str],
                          centroids: np.ndarray, embeddings: np.ndarray | None = None,
                          encoder: str | None = None) -> None:
    """Write a prototype ``.h5ad`` in the layout :func:`read_prototype_table` reads (atomically)."""
    import anndata
    import pandas as pd

    from histosynth.io import atomic_path

    obs = pd.DataFrame({"tile": [str(t) for t in tiles], "prototype": [names[i] for i in ids],
                        "prototype_id": np.asarray(ids, dtype=np.int64)}, index=[str(i) for i in range(len(ids))])
    X = np.asarray(embeddings, np.float32) if embeddings is not None else np.zeros((len(ids), 0), np.float32)
    uns = {CENTROIDS_KEY: np.asarray(centroids, np.float64)}
    if encoder:
        uns["encoder"] = {"identity": encoder}
    with atomic_path(path) as tmp:
        anndata.AnnData(X=X, obs=obs, uns=uns).write_h5ad(tmp)


def nearest_prototype(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Id of the nearest centroid (Euclidean) of each embedding row."""
    d = (embeddings ** 2).sum(1)[:, None] - 2 * embeddings @ centroids.T + (centroids ** 2).sum(1)[None, :]
    return d.argmin(1)


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
    result = train(PrototypeClassifier(classifier_config), objective, train_config, run_dir, on_step)
    if not result.is_main_process:  # other ranks of a multi-process run: the main one writes the folder
        return RecipeResult(out, result.steps_done, result.resumed_from, result.seconds, result.items_per_second)
    from histosynth.data.manifest import TileManifest

    facts = provenance(TileManifest(table.source, [], model.classes), len(tiles), train_config, result.seconds,
                        result.items_per_second)
    save_prototype_classifier(
        result.ema.eval().cpu(), out, table.names, diffusion_model=model.identity,
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
