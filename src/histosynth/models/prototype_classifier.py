"""A latent classifier ``C(prototype | z_t, t)`` on noisy latents, for classifier guidance.

Prototypes are clusters of tile embeddings (``histosynth prototypes``); the classifier sees the
denoiser's scaled latents noised to step ``t`` by the denoiser's own noise schedule, so the
gradient of its log-probability can steer sampling towards a prototype (Dhariwal & Nichol's
classifier guidance, as in prototype-guided diffusion). It is a small half-UNet: time-conditioned
residual blocks (diffusers' ``ResnetBlock2D``), two downsamplings, average pooling, a linear head.
GroupNorm and SiLU only, so outputs do not depend on the batch and gradients are smooth.

Its folder is its own model kind (``prototype-classifier``): ``classifier.safetensors`` and
``histosynth.json`` with the config and the prototype names (index = prototype id), which the model
carries as :attr:`PrototypeClassifier.prototypes` (``save`` writes them, ``load`` checks and restores them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from histosynth.errors import InputError, ModelFolderError
from histosynth.models.folder import FolderModel

if TYPE_CHECKING:
    from typing import Self

KIND = "prototype-classifier"
WEIGHTS_NAME = "classifier.safetensors"
_ONE_NAME_PER_CLASS = "one prototype name per class of the classifier is needed"


class PrototypeClassifierConfig(BaseModel):
    """Architecture of the latent prototype classifier and the noise schedule it was trained under."""

    latent_channels: int = 4
    latent_size: int = 28
    num_prototypes: int = Field(ge=2)
    #: Channels per level; the latent is halved in size between levels.
    widths: tuple[int, ...] = (32, 64, 128)
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: Literal["squaredcos_cap_v2", "scaled_linear", "linear"] = "squaredcos_cap_v2"


class PrototypeClassifier(FolderModel[PrototypeClassifierConfig], nn.Module):
    """``forward(noisy_latent (B,C,h,w), timestep (B,)) -> logits (B, num_prototypes)``.

    ``prototypes`` names its classes (index = prototype id); a model is saved only with one name per class.
    """

    kind = KIND
    weights_name = WEIGHTS_NAME
    config_type = PrototypeClassifierConfig

    def __init__(self, config: PrototypeClassifierConfig, prototypes: Sequence[str] = ()) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.resnet import ResnetBlock2D

        if prototypes and len(prototypes) != config.num_prototypes:
            raise ValueError(_ONE_NAME_PER_CLASS)
        self.config = config
        #: The prototype names, index = prototype id (empty until given or loaded).
        self.prototypes: list[str] = list(prototypes)
        widths, groups = config.widths, config.norm_num_groups
        temb = 4 * widths[0]
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        self.stem = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        channels = widths[0]
        for level, width in enumerate(widths):
            down = level < len(widths) - 1
            self.blocks.append(ResnetBlock2D(in_channels=channels, out_channels=width, temb_channels=temb,
                                             groups=min(groups, channels), groups_out=min(groups, width)))
            if down:
                self.blocks.append(ResnetBlock2D(in_channels=width, out_channels=width, temb_channels=temb,
                                                 groups=min(groups, width), down=True))
            channels = width
        self.head = nn.Sequential(nn.GroupNorm(min(groups, channels), channels), nn.SiLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, config.num_prototypes))

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        timestep = timestep.expand(len(latent)) if timestep.dim() == 0 else timestep
        emb = self.time_embedding(self.time_proj(timestep).to(latent.dtype))
        h = self.stem(latent)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h)

    def save(self, folder: str | Path, **extra: Any) -> None:
        """Write ``classifier.safetensors`` and ``histosynth.json`` (config, prototype names, ``extra`` facts)."""
        if len(self.prototypes) != self.config.num_prototypes:
            raise ValueError(_ONE_NAME_PER_CLASS)
        super().save(folder, prototypes=list(self.prototypes), **extra)

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """Load a classifier folder in eval mode with its prototype names; another kind fails with one line."""
        config = cls.read_config(folder)
        names = cls.read_manifest(folder).get("prototypes")
        if not isinstance(names, list) or len(names) != config.num_prototypes:
            raise ModelFolderError("histosynth.json lists no prototype name per class", folder)
        model = super().load(folder)
        model.prototypes = [str(n) for n in names]
        return model


def resolve_prototype(value: str | int, names: list[str], source: str | Path | None = None) -> int:
    """A prototype id from an id (``"3"``) or a name (``"ebhi/3"``); out of range -> one-line error."""
    text = str(value).strip()
    if text in names and not text.lstrip("-").isdigit():
        return names.index(text)
    try:
        index = int(text)
    except ValueError:
        raise InputError(f"unknown prototype {text!r}; the classifier knows ids 0..{len(names) - 1} "
                         f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})", source) from None
    if not 0 <= index < len(names):
        raise InputError(f"prototype id {index} is out of range: the classifier knows {len(names)} prototypes "
                         f"(0..{len(names) - 1})", source)
    return index
