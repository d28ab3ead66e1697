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
from histosynth.models.denoiser import DenoiserConfig
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.training.tensors import mask_fractions

SamplerName = Literal["ddim", "dpm"]


def build_scheduler(model: LatentDiffusionModel | DenoiserConfig, name: SamplerName):
    """A diffusers scheduler matching the denoiser's (or a denoiser config's) training noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    config = model if isinstance(model, DenoiserConfig) else model.denoiser.config
    common = {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule,
              "prediction_type": config.prediction_type}
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    if name == "dpm":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing")
    raise InputError(f"unknown sampler {name!r}; choose ddim or dpm")


class GuidedDenoiser:
    """Classifier-free-guided model output, ``uncond + w * (cond - uncond)``, in one batched forward.

    The null condition is the null class with all-zero condition maps (mask fractions, or nothing
    for a model without spatial conditions).
    """

    def __init__(self, denoiser: torch.nn.Module, guidance: float) -> None:
        self.denoiser, self.guidance = denoiser, guidance
        self.null_label = denoiser.config.null_label

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        w = self.guidance
        if w == 1.0:
            return self.denoiser(x, t.expand(len(x)), labels, conditions)
        null_labels = torch.full_like(labels, self.null_label)
        if w == 0.0:
            return self.denoiser(x, t.expand(len(x)), null_labels, torch.zeros_like(conditions))
        out = self.denoiser(torch.cat([x, x]), t.expand(2 * len(x)), torch.cat([labels, null_labels]),
                            torch.cat([conditions, torch.zeros_like(conditions)]))
        cond, uncond = out.chunk(2)
        return uncond + w * (cond - uncond)


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
        scheduler = build_scheduler(self.model, self.settings.sampler)
        scheduler.set_timesteps(self.settings.steps, device=self.device)
        latents = latents.to(self.device) * scheduler.init_noise_sigma
        guided = GuidedDenoiser(self.model.denoiser, self.settings.guidance)
        labels, fractions = labels.to(self.device), fractions.to(self.device)
        for t in scheduler.timesteps:
            out = guided(scheduler.scale_model_input(latents, t), t, labels, fractions)
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
