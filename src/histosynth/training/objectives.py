"""Losses for the autoencoder and the conditional latent denoiser."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from histosynth.models.conditioning import dihedral
from histosynth.models.pixel import ssim
from histosynth.training.tensors import to_unit_range


class AutoencoderLossConfig(BaseModel):
    """Autoencoder training: random crops (the AE is fully convolutional), L1 + SSIM + small KL."""

    crop: int = Field(96, ge=16)
    ssim_weight: float = Field(0.5, ge=0)
    kl_weight: float = Field(1e-6, ge=0)


class DenoiserLossConfig(BaseModel):
    """Denoiser training: probability of dropping the condition to null (classifier-free guidance)."""

    condition_dropout: float = Field(0.1, ge=0, le=1)
    #: Min-SNR-gamma loss weighting (Hang et al. 2023; diffusers' ``compute_snr``); None = plain MSE.
    snr_gamma: float | None = Field(None, gt=0)
    #: Times each labelled tile enters an epoch (unlabelled ones: once). Semi-supervised fine-tunes, where
    #: ~90% of the tiles are unlabelled, use it so the few labelled tiles teach the class conditioning.
    labelled_repeats: int = Field(1, ge=1)


class EmbeddingDenoiserLossConfig(DenoiserLossConfig):
    """Embedding denoiser (``--like``) training: the embedding is dropped to the learned null embedding
    independently of the class + mask condition."""

    embedding_dropout: float = Field(0.1, ge=0, le=1)
    #: Dihedral variants of each tile to encode (8 = all symmetries; 1 = 8x cheaper encoding on a CPU).
    latent_variants: int = Field(8, ge=1, le=8)


def _random_dihedral(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    return torch.stack([dihedral(item, int(k)) for item, k in zip(x, ks)])


def random_crops(images: torch.Tensor, indices: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``crop`` px square of each indexed uint8 tile under a random dihedral transform, in [-1, 1]."""
    crop = min(crop, images.shape[-1])
    limit = images.shape[-1] - crop + 1
    corners = torch.randint(0, limit, (len(indices), 2), generator=generator)
    ks = torch.randint(0, 8, (len(indices),), generator=generator)
    crops = torch.stack([images[i, :, y:y + crop, x:x + crop] for i, (y, x) in zip(indices.tolist(), corners.tolist())])
    return to_unit_range(_random_dihedral(crops, ks))


@dataclass
class AutoencoderObjective:
    """Reconstruct random dihedral-augmented crops of in-memory tiles."""

    images: torch.Tensor  # N,3,H,W uint8
    settings: AutoencoderLossConfig

    def num_items(self) -> int:
        return len(self.images)

    def loss(self, model, indices, generator, device):
        x = random_crops(self.images, indices, self.settings.crop, generator).to(device)
        posterior = model.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
        z = posterior.mean + posterior.std * noise
        recon = model.decode(z).sample
        l1 = (recon - x).abs().mean()
        structural = 1 - ssim(recon.float(), x.float()).mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = l1 + self.settings.ssim_weight * structural + self.settings.kl_weight * kl
        return loss, {"l1": l1.item(), "ssim": 1 - structural.item(), "kl": kl.item()}


def sample_scaled_latents(latent_mean: torch.Tensor, latent_logvar: torch.Tensor, indices: torch.Tensor,
                          shift: torch.Tensor, scale: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each index, one cached symmetry variant ``k`` and a latent drawn from its posterior, shifted
    and scaled; returns ``(latents, ks)``. Posterior tensors are N x V x C x h x w."""
    ks = torch.randint(0, latent_mean.shape[1], (len(indices),), generator=generator)
    mean = latent_mean[indices, ks].float()
    std = torch.exp(0.5 * latent_logvar[indices, ks].float())
    z = mean + std * torch.randn(mean.shape, generator=generator)
    return (z - shift.view(1, -1, 1, 1)) * scale, ks


@dataclass
class DenoiserObjective:
    """Noise-prediction loss on cached latents, with condition dropout for classifier-free guidance.

    ``latent_mean``/``latent_logvar`` hold the autoencoder posterior of each tile under each of the
    8 dihedral transforms (N,8,C,h,w) (or the first V of them, (N,V,C,h,w)); one variant is drawn
    per sample and per step, and the mask fractions are transformed the same way. ``embeddings``
    (N,V,D), only for an embedding denoiser, are the tile embeddings of the same variants; they are
    dropped to the null embedding with ``settings.embedding_dropout``. With ``settings.labelled_repeats`` k > 1
    an epoch holds every labelled tile k times (item ``N + j`` is the j-th labelled tile again).
    """

    latent_mean: torch.Tensor
    latent_logvar: torch.Tensor
    fractions: torch.Tensor  # N,K,h,w (zeros where the mask is unknown)
    labels: torch.Tensor  # N (null id where unlabelled)
    shift: torch.Tensor  # C
    scale: float
    null_label: int
    noise_scheduler: object  # diffusers DDPMScheduler
    settings: DenoiserLossConfig
    embeddings: torch.Tensor | None = None

    def __post_init__(self) -> None:
        labelled = torch.nonzero(self.labels != self.null_label).flatten()
        extra = labelled.repeat(self.settings.labelled_repeats - 1)
        self._items = torch.cat([torch.arange(len(self.labels)), extra])  # epoch item -> tile

    def num_items(self) -> int:
        return len(self._items)

    def loss(self, model, indices, generator, device):
        indices = self._items[indices]
        n = len(indices)
        z, ks = sample_scaled_latents(self.latent_mean, self.latent_logvar, indices, self.shift, self.scale, generator)
        fractions = _random_dihedral(self.fractions[indices], ks)
        labels = self.labels[indices].clone()
        drop = torch.rand(n, generator=generator) < self.settings.condition_dropout
        labels[drop] = self.null_label
        fractions[drop] = 0
        noise = torch.randn(z.shape, generator=generator)
        steps = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (n,), generator=generator)
        noisy = self.noise_scheduler.add_noise(z, noise, t)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(z, noise, t)
        else:
            target = noise
        extra, metrics = {}, {"dropped": float(drop.float().mean())}
        if self.embeddings is not None:  # drawn last: runs without embeddings draw exactly what they did before
            drop_embedding = torch.rand(n, generator=generator) < self.settings.embedding_dropout
            extra = {"embeddings": self.embeddings[indices, ks].float().to(device),
                     "drop_embedding": drop_embedding.to(device)}
            metrics["embedding_dropped"] = float(drop_embedding.float().mean())
        prediction = model(noisy.to(device), t.to(device), labels.to(device), fractions.to(device), **extra)
        if self.settings.snr_gamma is None:
            return F.mse_loss(prediction.float(), target.to(device)), metrics
        per_sample = F.mse_loss(prediction.float(), target.to(device), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * min_snr_weights(self.noise_scheduler, t, self.settings.snr_gamma).to(device)).mean(), metrics


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample Min-SNR-gamma weights for the scheduler's prediction type: ``min(SNR, gamma) / SNR`` for
    epsilon, ``min(SNR, gamma) / (SNR + 1)`` for v-prediction (both equal the x0-loss weight min(SNR, gamma))."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps).float()
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr.clamp_min(1e-8)
