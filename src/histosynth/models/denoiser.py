"""Latent denoiser conditioned on a diagnostic class and a segmentation mask.

Conditioning mechanisms (``DenoiserConfig.mask_conditioning``):

- ``concat``: the mask, as per-class area fractions at latent resolution, is concatenated to the
  noisy latent as extra input channels (cheap; spatially exact at latent resolution).
- ``cross_attention``: the latent's features attend to mask tokens (class fractions of 4x4 latent
  patches plus a learned position embedding) in diffusers' cross-attention blocks.
- ``none``: class only. The mask generation model is this denoiser with ``none``: its "latent" is
  the mask itself, as per-class fractions at latent resolution (scaled to [-1, 1]).

The class enters through the UNet's class embedding. The null condition (classifier-free
guidance) is class id ``num_labels`` together with an all-zero mask: zero fractions everywhere
mean "mask unknown", so unlabelled tiles train exactly that input.

Optionally (``embedding_dim > 0``, PixCell-style) a tile embedding from a registry encoder
(``embedding_encoder``) is a further condition: a small MLP projects it onto the UNet's time
embedding, where it is added to the class embedding. "No embedding" is a learned null embedding
(also what a dropped embedding trains). The MLP's last layer starts at zero, so a new embedding
model computes exactly what the class + mask denoiser it is fine-tuned from computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel, UNet2DModel
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer
from torch import nn

from histosynth.models.folder import FolderModel

KIND = "denoiser"
WEIGHTS_NAME = "denoiser.safetensors"
MASK_PATCH = 4
EMBEDDING_FIELDS = ("embedding_dim", "embedding_encoder", "embedding_hidden")


class DenoiserConfig(BaseModel):
    """Architecture, conditioning and noise schedule of the latent denoiser."""

    latent_channels: int = 4
    latent_size: int = 28
    num_labels: int = Field(ge=1)
    num_mask_classes: int = Field(ge=2)
    mask_conditioning: Literal["concat", "cross_attention", "none"] = "concat"
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    #: One flag per resolution level: use self-attention there.
    attention_levels: tuple[bool, ...] = (False, False, True)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: Literal["squaredcos_cap_v2", "scaled_linear", "linear"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    #: Size of the tile embedding the denoiser is also conditioned on; 0 (the default) means none.
    embedding_dim: int = Field(0, ge=0)
    #: Registry name (``histosynth.encoders``) of the encoder whose features are that embedding.
    embedding_encoder: str | None = None
    #: Hidden width of the embedding projection MLP.
    embedding_hidden: int = Field(256, ge=1)

    @property
    def null_label(self) -> int:
        return self.num_labels

    @model_serializer(mode="wrap")
    def _omit_unused_embedding(self, handler: SerializerFunctionWrapHandler) -> dict:
        """A denoiser without embedding writes the same config as before the embedding existed."""
        data = handler(self)
        if not self.embedding_dim:
            for key in EMBEDDING_FIELDS:
                data.pop(key, None)
        return data


class _ClassEmbedding(nn.Embedding):
    """The UNet's class embedding plus ``extra`` (the projected tile embedding) while it is set.

    Same parameters (and state-dict keys) as ``nn.Embedding``, so base denoiser weights load into it.
    """

    extra: torch.Tensor | None = None

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        out = super().forward(labels)
        return out if self.extra is None else out + self.extra.to(out.dtype)


def _block_types(config: DenoiserConfig, cross: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if cross:
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
    else:
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
    return down, up


class ConditionalDenoiser(FolderModel[DenoiserConfig], nn.Module):
    """``forward(noisy_latent, timestep, labels, mask_fractions) -> model output`` (eps or v).

    Its folder (``save``/``load``): ``denoiser.safetensors`` and ``histosynth.json`` (kind ``denoiser``;
    facts such as ``labels``, and ``role: mask`` with ``factor`` for a mask model).
    """

    kind = KIND
    weights_name = WEIGHTS_NAME
    config_type = DenoiserConfig

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        classes = config.num_labels + 1  # + null
        if len(config.attention_levels) != len(config.block_out_channels):
            raise ValueError("attention_levels needs one flag per block_out_channels entry")
        if config.mask_conditioning in ("concat", "none"):
            down, up = _block_types(config, cross=False)
            mask_channels = config.num_mask_classes if config.mask_conditioning == "concat" else 0
            self.unet = UNet2DModel(
                sample_size=config.latent_size,
                in_channels=config.latent_channels + mask_channels,
                out_channels=config.latent_channels,
                layers_per_block=config.layers_per_block,
                block_out_channels=config.block_out_channels,
                down_block_types=down,
                up_block_types=up,
                num_class_embeds=classes,
                norm_num_groups=config.norm_num_groups,
                attention_head_dim=config.attention_head_dim,
            )
        else:
            down, up = _block_types(config, cross=True)
            if config.latent_size % MASK_PATCH:
                raise ValueError(f"latent_size must be a multiple of {MASK_PATCH} for cross_attention")
            width = config.block_out_channels[-1]
            tokens = (config.latent_size // MASK_PATCH) ** 2
            self.mask_proj = nn.Linear(config.num_mask_classes * MASK_PATCH * MASK_PATCH, width)
            self.mask_pos = nn.Parameter(torch.zeros(1, tokens, width))
            self.unet = UNet2DConditionModel(
                sample_size=config.latent_size,
                in_channels=config.latent_channels,
                out_channels=config.latent_channels,
                layers_per_block=config.layers_per_block,
                block_out_channels=config.block_out_channels,
                down_block_types=down,
                up_block_types=up,
                mid_block_type="UNetMidBlock2DCrossAttn",
                cross_attention_dim=width,
                attention_head_dim=config.attention_head_dim,
                num_class_embeds=classes,
                norm_num_groups=config.norm_num_groups,
            )
        if config.embedding_dim:
            self._add_embedding_condition(config)

    def _add_embedding_condition(self, config: DenoiserConfig) -> None:
        base = self.unet.class_embedding
        self.unet.class_embedding = _ClassEmbedding(base.num_embeddings, base.embedding_dim)
        self.unet.class_embedding.load_state_dict(base.state_dict())
        self.embedding_null = nn.Parameter(torch.randn(config.embedding_dim))
        last = nn.Linear(config.embedding_hidden, base.embedding_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        dim, hidden = config.embedding_dim, config.embedding_hidden
        self.embedding_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), last)

    def project_embedding(self, embeddings: torch.Tensor | None, batch: int,
                          drop: torch.Tensor | None = None) -> torch.Tensor:
        """Projected embeddings (B, time-embedding width); ``None`` or ``drop`` rows use the null embedding."""
        null = self.embedding_null.unsqueeze(0)
        if embeddings is None:
            values = null.expand(batch, -1)
        else:
            if tuple(embeddings.shape) != (batch, self.config.embedding_dim):
                raise ValueError(f"embeddings must be ({batch}, {self.config.embedding_dim}), "
                                 f"got {tuple(embeddings.shape)}")
            values = embeddings.to(null.dtype)
            if drop is not None:
                values = torch.where(drop.view(-1, 1), null, values)
        return self.embedding_proj(values)

    def forward(
        self, latent: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor, mask_fractions: torch.Tensor,
        embeddings: torch.Tensor | None = None, drop_embedding: torch.Tensor | None = None,
        unet: Callable[..., Any] | None = None,
    ) -> torch.Tensor:
        """Model output; ``embeddings`` (B, embedding_dim) only for an embedding model, where ``None`` =
        the null embedding and ``drop_embedding`` (B bools) replaces chosen rows with it.

        ``unet``, when given, is called instead of ``self.unet`` on the inputs assembled here, the same way
        (its result's ``.sample`` is the output): the partial forward of feature reuse
        (:mod:`histosynth.sampling.feature_cache`)."""
        if not self.config.embedding_dim:
            if embeddings is not None:
                raise ValueError("this denoiser takes no embeddings (embedding_dim is 0)")
            return self._forward(latent, timestep, labels, mask_fractions, unet or self.unet)
        self.unet.class_embedding.extra = self.project_embedding(embeddings, len(latent), drop_embedding)
        try:
            return self._forward(latent, timestep, labels, mask_fractions, unet or self.unet)
        finally:
            self.unet.class_embedding.extra = None

    def _forward(
        self, latent: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor, mask_fractions: torch.Tensor,
        unet: Callable[..., Any],
    ) -> torch.Tensor:
        if self.config.mask_conditioning == "none":
            return unet(latent, timestep, class_labels=labels).sample
        if self.config.mask_conditioning == "concat":
            inputs = torch.cat((latent, mask_fractions.to(latent.dtype)), dim=1)
            return unet(inputs, timestep, class_labels=labels).sample
        tokens = self._mask_tokens(mask_fractions.to(latent.dtype))
        return unet(latent, timestep, encoder_hidden_states=tokens, class_labels=labels).sample

    def _mask_tokens(self, mask_fractions: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(mask_fractions, kernel_size=MASK_PATCH, stride=MASK_PATCH)  # B x (C*P*P) x N
        return self.mask_proj(patches.transpose(1, 2)) + self.mask_pos

