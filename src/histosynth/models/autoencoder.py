"""A small KL autoencoder (diffusers ``AutoencoderKL``) mapping 224 px tiles to 28x28 latents.

:class:`Autoencoder` *is* an ``AutoencoderKL`` (a thin subclass), built from the typed
:class:`AutoencoderConfig` it carries as ``autoencoder_config`` (``config`` is diffusers' own dict), and
a :class:`~histosynth.models.folder.FolderModel` like every other kind: ``model.save(folder, **facts)``,
``Autoencoder.load(folder)``. A subclass rather than a wrapper (codec) object, because everything that
uses the autoencoder (``encode``/``decode``, the training loop and its EMA copy, the decoder fine-tune,
diffusers' tiled decoding) keeps using the diffusers module and its state-dict keys unchanged.

Its folder is what diffusers writes plus ``histosynth.json``: ``save`` records the config's
``scaling_factor`` in diffusers' config and calls ``save_pretrained`` (``config.json``, naming
``AutoencoderKL`` so plain diffusers reads the folder too, and ``diffusion_pytorch_model.safetensors``),
so the files are byte-identical to those of a plain ``AutoencoderKL``. ``load`` does not use
``from_pretrained``: it builds the network from ``histosynth.json``'s config and loads the weights with
the one-line errors of every kind. The latent statistics (``scaling_factor``, ``latent_shift``) live in
:class:`AutoencoderConfig`, whose ``scale``/``unscale`` are the one place they are applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusers import AutoencoderKL
from pydantic import BaseModel, Field

from histosynth.models.folder import FolderModel, write_folder_manifest

if TYPE_CHECKING:
    import torch

KIND = "autoencoder"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


class AutoencoderConfig(BaseModel):
    """Architecture and latent statistics of the autoencoder.

    Four blocks give a downsampling factor of 8 (224 px -> 28x28). No attention in the
    mid-block keeps it fully convolutional, so it trains on crops and decodes any size.
    """

    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 16
    tile_size: int = 224
    #: Multiplies latents before diffusion so they have unit variance; measured on training data.
    scaling_factor: float = Field(default=1.0, gt=0)
    #: Per-channel latent mean subtracted before scaling (measured with the scaling factor).
    latent_shift: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.tile_size // self.downsample

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents -> the diffusion model's: ``(z - latent_shift) * scaling_factor``."""
        return (z - _shift(self, z)) * self.scaling_factor

    def unscale(self, latents: torch.Tensor) -> torch.Tensor:
        """The diffusion model's latents -> the autoencoder's: ``latents / scaling_factor + latent_shift``."""
        return latents / self.scaling_factor + _shift(self, latents)


def _shift(config: AutoencoderConfig, like: torch.Tensor) -> torch.Tensor:
    """The per-channel shift as a (1, C, 1, 1) float32 tensor on ``like``'s device."""
    import torch

    return torch.tensor(list(config.latent_shift), device=like.device).view(1, -1, 1, 1)


class Autoencoder(FolderModel[AutoencoderConfig], AutoencoderKL):
    """diffusers' ``AutoencoderKL`` built from an :class:`AutoencoderConfig`, with the model-folder interface."""

    kind = KIND
    weights_name = WEIGHTS_NAME
    config_type = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig) -> None:
        depth = len(config.block_out_channels)
        super().__init__(
            in_channels=3,
            out_channels=3,
            latent_channels=config.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * depth,
            up_block_types=("UpDecoderBlock2D",) * depth,
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            mid_block_add_attention=False,
            scaling_factor=config.scaling_factor,
        )
        #: The typed config (architecture and latent statistics) ``histosynth.json`` records.
        self.autoencoder_config = config

    def folder_config(self) -> AutoencoderConfig:
        """The typed config ``histosynth.json`` records: ``autoencoder_config`` (``config`` is diffusers')."""
        return self.autoencoder_config

    def save(self, folder: str | Path, **extra: Any) -> None:
        """Write diffusers' files (``config.json``, the safetensors weights) plus ``histosynth.json``."""
        config = self.folder_config()
        self.register_to_config(scaling_factor=config.scaling_factor)
        self.save_pretrained(folder, safe_serialization=True)
        write_folder_manifest(folder, self.kind, config, **extra)

    def to_json_string(self) -> str:
        """diffusers' ``config.json`` text, naming ``AutoencoderKL`` (diffusers writes the class's own name), so
        the file is what a plain ``AutoencoderKL`` writes and diffusers' ``from_pretrained`` reads it."""
        payload = json.loads(super().to_json_string())
        payload["_class_name"] = AutoencoderKL.__name__
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"
