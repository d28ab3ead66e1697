"""Inverting a clean latent to noise, so that sampling from the result gives the latent back.

- :func:`ddim_invert`: deterministic DDIM inversion (diffusers ``DDIMInverseScheduler``); sampling
  back with DDIM (eta 0) reproduces the latent up to the inversion's approximation error.
- :func:`edit_friendly_invert`: the edit-friendly DDPM inversion used by cross-image attention. Each
  noisy latent ``x_t`` is drawn independently from q(x_t | x_0); then for every step the noise map
  ``z_t`` is solved so that one stochastic DDIM step (eta 1) from ``x_t`` lands exactly on
  ``x_{t_prev}``. Sampling with those noise maps reproduces ``x_0`` exactly; changing the model's
  inputs (attention, AdaIN) while keeping them edits the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from histosynth.sampling.transfer.backbones import NoiseSchedule

#: (noisy latent, timestep) -> model output (eps or v, as the denoiser was trained)
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def ddim_invert(model: ModelFn, latent: torch.Tensor, config, steps: int) -> torch.Tensor:
    """Run DDIM backwards from the clean ``latent`` to noise at the first sampling timestep.

    ``config``: the noise schedule (a :class:`NoiseSchedule`, a denoiser config or a scheduler config).
    """
    inverse = NoiseSchedule.of(config).ddim_inverse()
    inverse.set_timesteps(steps)
    x = latent.clone()
    for t in inverse.timesteps:
        x = inverse.step(model(x, t), t, x).prev_sample
    return x


@dataclass
class EditFriendlyNoise:
    """Start latent and per-step noise maps from :func:`edit_friendly_invert`."""

    start: torch.Tensor
    noise_maps: list[torch.Tensor]  # one per sampling step
    #: added after the last step, whose DDIM variance is zero (it lands on the clean latent), so that
    #: the replay ends exactly on the inverted latent
    final_residual: torch.Tensor | None = None


@torch.inference_mode()
def edit_friendly_invert(model: ModelFn, latent: torch.Tensor, config, steps: int,
                         generator: torch.Generator | None = None) -> EditFriendlyNoise:
    """Noise maps that make stochastic DDIM sampling (eta 1, same steps) return exactly ``latent``."""
    scheduler = NoiseSchedule.of(config).ddim()
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    alphas = scheduler.alphas_cumprod
    noisy = []
    for t in timesteps:
        a = alphas[int(t)]
        # drawn on the CPU generator, so a seed gives the same maps on any device
        noise = torch.randn(latent.shape, generator=generator, dtype=latent.dtype).to(latent.device)
        noisy.append(a.sqrt() * latent + (1 - a).sqrt() * noise)
    noisy.append(latent)  # the target after the last step
    maps, residual = [], torch.zeros_like(latent)
    for index, t in enumerate(timesteps):
        x_t, x_prev = noisy[index], noisy[index + 1]
        zeros = torch.zeros_like(x_t)
        mean = scheduler.step(model(x_t, t), t, x_t, eta=1.0, variance_noise=zeros).prev_sample
        sigma = _ddim_sigma(scheduler, t)
        if sigma > 0:
            maps.append((x_prev - mean) / sigma)
        else:
            maps.append(zeros)
            residual = residual + (x_prev - mean)
    return EditFriendlyNoise(noisy[0], maps, residual)


def _ddim_sigma(scheduler, t: torch.Tensor) -> float:
    prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t = scheduler.alphas_cumprod[int(t)]
    a_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
    return float(((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt())


@torch.inference_mode()
def sample_with_noise_maps(model: ModelFn, noise: EditFriendlyNoise, config, steps: int,
                           on_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Stochastic DDIM (eta 1) from ``noise.start`` with the stored noise maps; ``on_step(i, x)`` may
    replace the latent after step ``i`` (where AdaIN plugs in)."""
    scheduler = NoiseSchedule.of(config).ddim()
    scheduler.set_timesteps(steps)
    x = noise.start.clone()
    last = len(scheduler.timesteps) - 1
    for index, t in enumerate(scheduler.timesteps):
        x = scheduler.step(model(x, t), t, x, eta=1.0, variance_noise=noise.noise_maps[index]).prev_sample
        if index == last and noise.final_residual is not None:
            x = x + noise.final_residual
        if on_step is not None:
            x = on_step(index, x)
    return x
