"""Adversarial + perceptual fine-tuning of the autoencoder's decoder, with its encoder frozen.

A frozen encoder keeps the latent space (and its measured shift and scale) exactly as it was, so
every denoiser and mask model trained on it stays valid: only what latents decode to changes.
The decoder learns L1 + a perceptual distance (EfficientNet-Lite0 stages) + a hinge-GAN term from
a patch discriminator, weighted adaptively as in taming-transformers (the ratio of the two losses'
gradient norms at the decoder's last layer), after a warm-up in which only the discriminator learns.

The training loop has one optimiser over one module, so the decoder and the discriminator are one
``DecoderTuner`` and the losses are summed: the discriminator's parameters are excluded from the
generator term's graph, and the decoder's output is detached in the discriminator's term, so each
part receives only its own gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, Field
from torch import nn

from histosynth.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig, hinge_discriminator_loss
from histosynth.training.objectives import random_crops
from histosynth.training.perceptual import PerceptualDistance


class DecoderGanLossConfig(BaseModel):
    """Objective of the decoder fine-tune."""

    #: Crop side in px (a multiple of the autoencoder's downsampling factor).
    crop: int = Field(128, ge=16)
    l1_weight: float = Field(1.0, ge=0)
    perceptual_weight: float = Field(1.0, ge=0)
    #: EfficientNet-Lite0 stages in the perceptual distance (1-7; 4 reaches stride 16).
    perceptual_stages: int = Field(4, ge=1, le=7)
    adversarial_weight: float = Field(0.5, ge=0)
    #: Scale the adversarial term by the ratio of gradient norms at the decoder's last layer.
    adaptive_weight: bool = True
    #: Steps in which only the discriminator learns (the decoder sees no adversarial gradient yet).
    adversarial_start: int = Field(100, ge=0)
    discriminator: PatchDiscriminatorConfig = PatchDiscriminatorConfig()


class DecoderTuner(nn.Module):
    """An ``AutoencoderKL`` with its encoder side frozen, a patch discriminator, and a step counter
    (a buffer, so it is checkpointed and a resumed run knows when the adversarial term starts)."""

    def __init__(self, autoencoder: nn.Module, discriminator: PatchDiscriminatorConfig) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        for part in (autoencoder.encoder, autoencoder.quant_conv):
            part.requires_grad_(False)
        self.discriminator = PatchDiscriminator(discriminator)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def decoder_state(self) -> dict[str, torch.Tensor]:
        """The trained part of the autoencoder's weights (``decoder.*``, ``post_quant_conv.*``)."""
        return {k: v for k, v in self.autoencoder.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}


def _adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0, 1e4).detach()


@dataclass
class DecoderGanObjective:
    """Reconstruct random dihedral-augmented crops through the frozen encoder and the tuned decoder."""

    images: torch.Tensor  # N,3,H,W uint8
    settings: DecoderGanLossConfig
    perceptual: PerceptualDistance | None = field(default=None, repr=False)

    def num_items(self) -> int:
        return len(self.images)

    def loss(self, model: DecoderTuner, indices, generator, device):
        if self.perceptual is None:
            self.perceptual = PerceptualDistance(self.settings.perceptual_stages, device)
        self.perceptual.to(device)
        s = self.settings
        autoencoder, critic = model.autoencoder, model.discriminator
        step = int(model.steps_seen)
        if model.training:
            model.steps_seen += 1
        x = random_crops(self.images, indices, s.crop, generator).to(device)
        with torch.no_grad():
            posterior = autoencoder.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(device)
        recon = autoencoder.decode(z).sample
        l1 = (recon - x).abs().mean()
        perceptual = self.perceptual(recon, x).mean()
        reconstruction = s.l1_weight * l1 + s.perceptual_weight * perceptual
        metrics = {"l1": l1.item(), "perceptual": perceptual.item()}
        total = reconstruction
        if step >= s.adversarial_start and s.adversarial_weight > 0:
            critic.requires_grad_(False)
            generator_term = -critic(recon).mean()
            critic.requires_grad_(True)
            weight = torch.tensor(s.adversarial_weight, device=device)
            if s.adaptive_weight and model.training:
                weight = weight * _adaptive_weight(reconstruction, generator_term, autoencoder.decoder.conv_out.weight)
            total = total + weight * generator_term
            metrics.update(generator=generator_term.item(), adversarial_weight=float(weight))
        real_logits, fake_logits = critic(x), critic(recon.detach())
        discriminator_term = hinge_discriminator_loss(real_logits, fake_logits)
        metrics.update(discriminator=discriminator_term.item(), logit_real=real_logits.mean().item(),
                       logit_fake=fake_logits.mean().item())
        return total + discriminator_term, metrics
