"""What appearance transfer needs from a latent diffusion model, for our model folders and for
local Stable Diffusion folders alike.

A :class:`TransferBackbone` encodes tiles to latents and back, predicts the denoiser's output for a
batch under per-sample conditions, names its UNet (where cross-image attention is installed) and
describes its noise schedule. :func:`load_backbone` picks the implementation from the folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from histosynth.data.classes import ClassList

#: Per-sample conditions of a batch: a tuple of tensors, each with the batch as its first axis.
Conditions = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule of a denoiser; builds the DDIM schedulers transfer samples with."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"

    @classmethod
    def of(cls, config) -> NoiseSchedule:
        """From a :class:`NoiseSchedule`, a denoiser config or a diffusers scheduler config."""
        if isinstance(config, NoiseSchedule):
            return config
        get = config.get if isinstance(config, dict) else lambda key, default: getattr(config, key, default)
        return cls(int(get("num_train_timesteps", 1000)), str(get("beta_schedule", "linear")),
                   float(get("beta_start", 0.0001)), float(get("beta_end", 0.02)),
                   str(get("prediction_type", "epsilon")))

    def _common(self) -> dict:
        return {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end, "prediction_type": self.prediction_type,
                "clip_sample": False, "set_alpha_to_one": True, "timestep_spacing": "trailing"}

    def ddim(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler(**self._common())

    def ddim_inverse(self):
        from diffusers import DDIMInverseScheduler

        return DDIMInverseScheduler(**self._common())


class TransferBackbone(ABC):
    """The parts of a latent diffusion model that appearance transfer uses."""

    unet: torch.nn.Module
    schedule: NoiseSchedule
    tile_size: int
    factor: int  # image pixels per latent pixel
    #: the mask classes the model is conditioned on (None: it takes no mask condition)
    classes: ClassList | None
    identity: str

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @property
    def latent_side(self) -> int:
        return self.tile_size // self.factor

    @abstractmethod
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """A uint8 H x W x 3 tile -> its scaled latent (1, C, h, w) on ``self.device``."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents (N, C, h, w) -> uint8 images N x H x W x 3."""

    @abstractmethod
    def conditions(self, label: int | None, masks: list[np.ndarray] | None) -> Conditions:
        """Conditions for one sample per mask (``masks`` in the model's mask classes, or None: no mask)."""

    @abstractmethod
    def predict(self, x: torch.Tensor, t: torch.Tensor, conditions: Conditions) -> torch.Tensor:
        """The denoiser's output (eps or v, per ``schedule.prediction_type``) for the batch ``x``."""

    def check_label(self, label: int | None) -> None:
        """Refuse a class label the model cannot take."""


def take(conditions: Conditions, rows: slice) -> Conditions:
    return tuple(c[rows] for c in conditions)


class HistosynthBackbone(TransferBackbone):
    """A histosynth model folder: class + mask conditioned denoiser over our autoencoder."""

    def __init__(self, model, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.model = model.to(self.device)
        self.unet = model.denoiser.unet
        self.schedule = NoiseSchedule.of(model.denoiser.config)
        self.tile_size = model.autoencoder_config.tile_size
        self.factor = model.autoencoder_config.downsample
        self.classes = model.classes
        self.identity = model.identity

    def encode(self, image: np.ndarray) -> torch.Tensor:
        return self.model.encode(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().to(self.device)
                                 / 127.5 - 1)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return self.model.decode(latents)

    def conditions(self, label: int | None, masks: list[np.ndarray] | None) -> Conditions:
        from histosynth.models.conditioning import mask_fractions

        config = self.model.denoiser.config
        label = config.null_label if label is None else label
        n = len(masks) if masks is not None else 3
        labels = torch.full((n,), label, device=self.device)
        side = self.latent_side
        if masks is None:
            fractions = torch.zeros(n, self.classes.num_mask_classes, side, side)
        else:
            stacked = torch.from_numpy(np.stack(masks)).to(torch.uint8)
            fractions = mask_fractions(stacked, torch.ones(n, dtype=torch.bool), self.classes.num_mask_classes,
                                       self.factor)
        return labels, fractions.to(self.device)

    def predict(self, x: torch.Tensor, t: torch.Tensor, conditions: Conditions) -> torch.Tensor:
        labels, fractions = conditions
        return self.model.denoiser(x, t.to(self.device).expand(len(x)), labels, fractions)

    def check_label(self, label: int | None) -> None:
        from histosynth.errors import InputError

        if label is not None and not 0 <= label <= self.model.denoiser.config.null_label:
            raise InputError(f"unknown class id {label}")
