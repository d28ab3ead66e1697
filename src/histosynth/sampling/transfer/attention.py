"""Cross-image attention for diffusers UNets: the output's queries attend to the appearance's keys
and values inside the decoder's self-attention layers.

The batch given to the UNet is laid out as ``[output, appearance, structure]`` (three equal chunks).
In a swapped layer, the output chunk's attention uses its own queries with the appearance chunk's keys
and values; the other two chunks attend normally (they are being reconstructed). Attention maps of
the swapped chunk are contrast-stretched around their mean (``contrast`` > 1 sharpens them), as in
cross-image attention. Which layers swap is decided per call from the layer's spatial resolution
(level 0 = the latent's resolution, 1 = half, ...) and the current sampling step.

Works with any UNet whose attention modules are diffusers ``Attention`` (``UNet2DConditionModel``
``attn1`` self-attention, ``UNet2DModel`` attention blocks, hence our denoiser). The original
processors are restored when the context manager exits.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class SwapSchedule:
    """When to swap: per resolution level, a range of sampling steps in percent of all steps."""

    #: level -> (start %, end %); the seed's defaults map SD's 64x64 layers to level 0 and 32x32 to level 1
    step_ranges: dict[int, tuple[float, float]] = field(default_factory=lambda: {0: (10, 90), 1: (10, 70)})
    contrast: float = 1.67
    total_steps: int = 100
    step: int = 0
    enabled: bool = True

    def active(self, level: int) -> bool:
        if not self.enabled or level not in self.step_ranges:
            return False
        start, end = self.step_ranges[level]
        percent = 100.0 * self.step / max(self.total_steps, 1)
        return start <= percent < end


class CrossImageAttnProcessor:
    """Self-attention that, when its schedule says so, gives the output chunk the appearance's keys/values."""

    def __init__(self, schedule: SwapSchedule, latent_side: int) -> None:
        self.schedule, self.latent_side = schedule, latent_side

    def _level(self, tokens: int) -> int:
        side = math.isqrt(tokens)
        return max(0, round(math.log2(max(self.latent_side, 1) / max(side, 1))))

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key, value = attn.to_k(context), attn.to_v(context)
        swap = encoder_hidden_states is None and batch % 3 == 0 and self.schedule.active(self._level(tokens))
        if swap:
            third = batch // 3
            key = torch.cat([key[third:2 * third], key[third:]])  # output chunk takes the appearance's keys
            value = torch.cat([value[third:2 * third], value[third:]])
        query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)
        if swap and self.schedule.contrast != 1.0:
            heads = probs.shape[0] // batch
            out_rows = slice(0, heads * (batch // 3))  # head_to_batch_dim keeps samples contiguous
            stretched = probs[out_rows]
            mean = stretched.mean(dim=-1, keepdim=True)
            stretched = ((stretched - mean) * self.schedule.contrast + mean).clamp(min=0)
            probs = torch.cat([stretched / stretched.sum(-1, keepdim=True).clamp(min=1e-12), probs[out_rows.stop:]])
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _attention_modules(unet: nn.Module) -> dict[str, nn.Module]:
    from diffusers.models.attention_processor import Attention

    return {name: module for name, module in unet.named_modules() if isinstance(module, Attention)}


def decoder_self_attention_names(unet: nn.Module) -> list[str]:
    """Names of the self-attention modules in the UNet's decoder (up blocks)."""
    return [name for name, module in _attention_modules(unet).items()
            if name.startswith("up_blocks.") and not module.is_cross_attention]


@contextlib.contextmanager
def cross_image_attention(unet: nn.Module, schedule: SwapSchedule, latent_side: int) -> Iterator[SwapSchedule]:
    """Install :class:`CrossImageAttnProcessor` on the decoder's self-attention layers; restore on exit.

    Works module by module (``Attention.set_processor``), so it needs no ``attn_processors`` API on
    the UNet (``UNet2DModel`` has none).
    """
    modules = _attention_modules(unet)
    names = decoder_self_attention_names(unet)
    original = {name: modules[name].processor for name in names}
    swapped = CrossImageAttnProcessor(schedule, latent_side)
    try:
        for name in names:
            modules[name].set_processor(swapped)
        yield schedule
    finally:
        for name, processor in original.items():
            modules[name].set_processor(processor)
