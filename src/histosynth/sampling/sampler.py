"""Class- and mask-conditioned tile sampling with classifier-free guidance.

Guidance follows diffusers' convention: ``out = uncond + w * (cond - uncond)``, so ``w = 0`` is
the unconditional model and ``w = 1`` the conditional one; both branches run in one batched
forward. Every tile draws its initial noise from its own generator seeded by its own seed, so a
tile's pixels do not depend on the batch it was sampled in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.training.tensors import mask_fractions

SamplerName = Literal["ddim", "dpm"]


def build_scheduler(model: LatentDiffusionModel, name: SamplerName):
    """A diffusers scheduler matching the denoiser's training noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    config = model.denoiser.config
    common = {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule,
              "prediction_type": config.prediction_type}
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    if name == "dpm":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing")
    raise InputError(f"unknown sampler {name!r}; choose ddim or dpm")


@dataclass
class SamplingSettings:
    steps: int = 50
    guidance: float = 2.0
    sampler: SamplerName = "ddim"
    batch_size: int = 16


class TileSampler:
    """Generate tiles for given labels, masks and seeds from a :class:`LatentDiffusionModel`."""

    def __init__(self, model: LatentDiffusionModel, settings: SamplingSettings, device: str | torch.device = "cpu"):
        self.model = model.to(device)
        self.settings = settings
        self.device = torch.device(device)
        self.tile_size = model.autoencoder_config.tile_size

    def check_mask(self, mask: np.ndarray, source: str = "mask") -> None:
        """A mask must be tile-sized and hold valid class ids."""
        if mask.shape != (self.tile_size, self.tile_size):
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the model makes "
                             f"{self.tile_size}x{self.tile_size} tiles", source)
        if mask.max(initial=0) >= self.model.classes.num_mask_classes:
            raise InputError(f"mask holds class id {int(mask.max())} but the model knows "
                             f"{self.model.classes.num_mask_classes} mask classes", source)

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        config = self.model.denoiser.config
        shape = (config.latent_channels, config.latent_size, config.latent_size)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    @torch.inference_mode()
    def denoise(self, latents: torch.Tensor, labels: torch.Tensor, fractions: torch.Tensor,
                on_step: Callable[[], None] | None = None) -> torch.Tensor:
        """Run the reverse process from ``latents`` (already noise) with batched CFG."""
        guidance, denoiser = self.settings.guidance, self.model.denoiser
        scheduler = build_scheduler(self.model, self.settings.sampler)
        scheduler.set_timesteps(self.settings.steps, device=self.device)
        latents = latents.to(self.device) * scheduler.init_noise_sigma
        null_labels = torch.full_like(labels, denoiser.config.null_label)
        if guidance == 1.0:
            branch_labels, branch_masks = labels, fractions
        elif guidance == 0.0:
            branch_labels, branch_masks = null_labels, torch.zeros_like(fractions)
        else:
            branch_labels = torch.cat([labels, null_labels])
            branch_masks = torch.cat([fractions, torch.zeros_like(fractions)])
        branch_labels, branch_masks = branch_labels.to(self.device), branch_masks.to(self.device)
        for t in scheduler.timesteps:
            doubled = guidance not in (0.0, 1.0)
            model_in = torch.cat([latents, latents]) if doubled else latents
            model_in = scheduler.scale_model_input(model_in, t)
            out = denoiser(model_in, t.expand(len(model_in)), branch_labels, branch_masks)
            if doubled:
                cond, uncond = out.chunk(2)
                out = uncond + guidance * (cond - uncond)
            latents = scheduler.step(out, t, latents).prev_sample
            if on_step is not None:
                on_step()
        return latents

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (scaled, shifted) -> uint8 images N x H x W x 3."""
        config = self.model.autoencoder_config
        shift = torch.tensor(config.latent_shift, device=self.device).view(1, -1, 1, 1)
        z = latents / config.scaling_factor + shift
        images = self.model.autoencoder.decode(z).sample
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def sample(self, labels: Sequence[int], masks: Sequence[np.ndarray], seeds: Sequence[int],
               on_step: Callable[[], None] | None = None) -> np.ndarray:
        """Generate one tile per (label, mask, seed); returns uint8 N x H x W x 3."""
        if not len(labels) == len(masks) == len(seeds):
            raise ValueError("labels, masks and seeds must have the same length")
        for label in labels:
            if not 0 <= label <= self.model.denoiser.config.null_label:
                raise InputError(f"unknown class id {label}")
        mask_tensor = torch.from_numpy(np.stack(masks)).to(torch.uint8)
        fractions = mask_fractions(mask_tensor, torch.ones(len(masks), dtype=torch.bool),
                                   self.model.classes.num_mask_classes, self.model.autoencoder_config.downsample)
        latents = self.denoise(self.initial_noise(seeds), torch.tensor(list(labels)), fractions, on_step)
        return self.decode(latents)
