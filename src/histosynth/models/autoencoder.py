"""A small KL autoencoder (diffusers ``AutoencoderKL``) mapping 224 px tiles to 28x28 latents."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from histosynth.models.folder import load_weights, read_folder_config, require_files, write_folder_manifest

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL

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


def build_autoencoder(config: AutoencoderConfig) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL`` for ``config``."""
    from diffusers import AutoencoderKL

    depth = len(config.block_out_channels)
    return AutoencoderKL(
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


def save_autoencoder(model: AutoencoderKL, config: AutoencoderConfig, folder: str | Path) -> None:
    """Write diffusers' files plus ``histosynth.json``."""
    model.register_to_config(scaling_factor=config.scaling_factor)
    model.save_pretrained(folder, safe_serialization=True)
    write_folder_manifest(folder, KIND, config)


def load_autoencoder(folder: str | Path) -> tuple[AutoencoderKL, AutoencoderConfig]:
    """Load an autoencoder folder in eval mode; a folder of another kind fails with one line."""
    config = read_folder_config(folder, KIND, AutoencoderConfig)
    require_files(folder, WEIGHTS_NAME)
    model = build_autoencoder(config)
    load_weights(model, Path(folder) / WEIGHTS_NAME)
    return model.eval(), config
