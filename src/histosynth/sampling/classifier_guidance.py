"""Classifier guidance inside the sampler's loop: shift the model output by a latent classifier's gradient.

The sampler's part of ``--prototype`` generation (:mod:`histosynth.sampling.guidance` writes the
datasets); it imports nothing from the dataset side, so the sampler can use it without a loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from histosynth.models.prototype_classifier import PrototypeClassifier

__all__ = ["MIN_ALPHA_BAR", "ClassifierGuidance"]

#: Below this alpha_bar (the first step of a trailing schedule, alpha_bar ~ 2e-9: pure noise) no
#: classifier gradient is added: eps-form guidance is amplified by 1 / sqrt(alpha_bar) there.
MIN_ALPHA_BAR = 1e-4


class ClassifierGuidance:
    """Shift a model output (eps or v) by the gradient of ``log C(targets | z_t, t)``, weight ``weight``."""

    def __init__(self, classifier: PrototypeClassifier, weight: float, prediction_type: str,
                 alphas_cumprod: torch.Tensor) -> None:
        self.classifier, self.weight, self.prediction_type = classifier, weight, prediction_type
        self.alphas_cumprod = alphas_cumprod.detach().cpu()

    def gradient(self, latents: torch.Tensor, t: torch.Tensor | int, targets: torch.Tensor) -> torch.Tensor:
        """``d/dz sum_i log C(targets_i | z_i, t)``: each tile's gradient of its own log-probability."""
        with torch.inference_mode(False), torch.enable_grad():
            z = latents.detach().clone().float().requires_grad_(True)
            steps = torch.full((len(z),), int(t), device=z.device, dtype=torch.long)
            log_p = self.classifier(z, steps).float().log_softmax(-1)
            chosen = log_p.gather(1, targets.detach().clone().view(-1, 1).to(z.device)).sum()
            (grad,) = torch.autograd.grad(chosen, z)
        return grad

    def __call__(self, output: torch.Tensor, latents: torch.Tensor, t: torch.Tensor | int,
                 targets: torch.Tensor) -> torch.Tensor:
        alpha_bar = float(self.alphas_cumprod[int(t)])
        if self.weight == 0 or alpha_bar < MIN_ALPHA_BAR:
            return output
        d_eps = -self.weight * (1.0 - alpha_bar) ** 0.5 * self.gradient(latents, t, targets)
        if self.prediction_type == "v_prediction":
            d_eps = d_eps / alpha_bar ** 0.5
        return output + d_eps.to(output.dtype)
