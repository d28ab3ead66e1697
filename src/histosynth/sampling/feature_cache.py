"""DeepCache-style feature reuse (Ma et al., 2023): an optional, approximate speed path of the tile sampler.

A UNet's deep features change slowly between neighbouring denoising steps; its shallow ones carry the
detail. A **full** step runs the whole UNet (diffusers' own ``forward``, unchanged) and caches the hidden
state entering the last (shallowest) up block. A **partial** step runs only the time and class
embedding, ``conv_in``, the resnets (and attentions) of the first down block, which give the skip
tensors the last up block consumes, and then that up block on the cached deep feature plus the output
head. The down path below level 0, the mid block and the other up blocks are skipped; every module is
the UNet's own (no copied weights). Approximate: with ``interval`` 1 nothing is cached and the sampler
runs the exact path.

Schedule (``interval`` N): step ``i`` runs the full UNet when

- it is the first step (``i == 0``),
- ``i - f >= N``, where ``f`` is the last full step (so steps 0, N, 2N, ... when nothing else intervenes), or
- the forward's conditions differ from those of the cached feature: batch size, class labels, condition
  maps, tile embeddings (a guidance interval's edge switches between the guided batch, conditional +
  unconditional, and the plain conditional one);

every other step is partial. Classifier-free guidance's branches are one batched forward, so they share
one cache row by row. Classifier guidance (``--prototype``) works unchanged: its gradient comes from a
separate latent classifier, never from the denoiser.

Supported: the ``UNet2DModel`` denoisers (mask conditioning ``concat`` or ``none``) with positional time
embeddings and a plain or self-attention first down block; others are refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput
from diffusers.models.unets.unet_2d_blocks import AttnDownBlock2D, DownBlock2D
from torch import nn

from histosynth.errors import InputError

__all__ = ["FeatureReuse", "check_reusable", "partial_forward"]

#: First down blocks whose skip tensors :func:`partial_forward` recomputes (resnet [+ self-attention] per layer).
SHALLOW_DOWN_BLOCKS = (DownBlock2D, AttnDownBlock2D)


def check_reusable(denoiser: nn.Module) -> None:
    """Nothing if ``denoiser``'s UNet can run :func:`partial_forward`; else one line saying why not."""
    unet = getattr(denoiser, "unet", None)
    why = None
    if not isinstance(unet, UNet2DModel):
        conditioning = getattr(getattr(denoiser, "config", None), "mask_conditioning", "?")
        why = f"a UNet2DModel denoiser (mask conditioning concat or none), not {conditioning}"
    elif unet.config.time_embedding_type != "positional":
        why = f"positional time embeddings, not {unet.config.time_embedding_type}"
    elif any(hasattr(block, "skip_conv") for block in (*unet.down_blocks, *unet.up_blocks)):
        why = "blocks without a skip_conv branch"
    elif len(unet.down_blocks) < 2:
        why = "at least two resolution levels"
    elif type(unet.down_blocks[0]) not in SHALLOW_DOWN_BLOCKS:
        why = f"a DownBlock2D or AttnDownBlock2D first down block, not {type(unet.down_blocks[0]).__name__}"
    elif len(unet.up_blocks[-1].resnets) > 1 + len(unet.down_blocks[0].resnets):
        why = "a last up block that takes its skips from conv_in and the first down block only"
    if why is not None:
        raise InputError(f"feature reuse (feature_reuse > 1) needs {why}")


def _embedding(unet: UNet2DModel, sample: torch.Tensor, timestep: torch.Tensor | float | int,
               class_labels: torch.Tensor | None) -> torch.Tensor:
    """Time + class embedding exactly as ``UNet2DModel.forward`` computes it (diffusers 0.42; the split's test
    checks equality with the installed version)."""
    timesteps = timestep
    if not torch.is_tensor(timesteps):
        timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
    elif len(timesteps.shape) == 0:
        timesteps = timesteps[None].to(sample.device)
    timesteps = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
    emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))
    if unet.class_embedding is not None:
        if class_labels is None:
            raise ValueError("class_labels should be provided when doing class conditioning")
        if unet.config.class_embed_type == "timestep":
            class_labels = unet.time_proj(class_labels)
        emb = emb + unet.class_embedding(class_labels).to(dtype=unet.dtype)
    return emb


def partial_forward(unet: UNet2DModel, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                    class_labels: torch.Tensor | None, deep: torch.Tensor) -> torch.Tensor:
    """The UNet's output with ``deep`` (the cached input of its last up block) standing in for the deep path.

    With ``deep`` computed by a full forward on the same inputs this equals ``unet(...).sample`` up to
    float rounding. The last up block pops its skips from the end of the first ``len(resnets)`` entries
    of diffusers' skip list: ``conv_in``'s output, then the first down block's per-layer outputs (its
    downsampler's output, which deeper up blocks consume, is not needed and not computed).
    """
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    emb = _embedding(unet, sample, timestep, class_labels)
    hidden = unet.conv_in(sample)
    skips = [hidden]
    first = unet.down_blocks[0]
    attentions = getattr(first, "attentions", None) or [None] * len(first.resnets)
    for resnet, attention in zip(first.resnets, attentions):
        hidden = resnet(hidden, emb)
        if attention is not None:
            hidden = attention(hidden)
        skips.append(hidden)
    last = unet.up_blocks[-1]
    hidden = last(deep, tuple(skips[:len(last.resnets)]), emb)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))


@dataclass
class _Cached:
    step: int
    deep: torch.Tensor
    conditions: tuple[torch.Tensor | None, ...]


def _same(a: tuple[torch.Tensor | None, ...], b: tuple[torch.Tensor | None, ...]) -> bool:
    if len(a) != len(b):
        return False
    return all((x is None and y is None) or (x is not None and y is not None and x.shape == y.shape
                                              and torch.equal(x, y)) for x, y in zip(a, b))


class FeatureReuse(nn.Module):
    """A denoiser that reuses its deep UNet features for ``interval - 1`` steps after each full step.

    Called like the :class:`~histosynth.models.denoiser.ConditionalDenoiser` it wraps (so
    :class:`~histosynth.sampling.sampler.GuidedDenoiser` takes it in its place); the sampler calls
    :meth:`begin_step` before each step's forward. ``full_steps`` / ``partial_steps`` count the forwards.
    A full step briefly hooks the UNet's last up block, so one model should not serve concurrent reuse runs.
    """

    def __init__(self, denoiser: nn.Module, interval: int) -> None:
        super().__init__()
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise InputError(f"feature reuse interval must be an integer >= 1, got {interval!r}")
        check_reusable(denoiser)
        self.denoiser, self.interval = denoiser, interval
        self.config = denoiser.config
        self.step = 0
        self.full_steps = self.partial_steps = 0
        self._cached: _Cached | None = None

    def begin_step(self, step: int) -> None:
        """Set the index of the sampling step the next forward belongs to (0 = the first)."""
        self.step = step

    def is_full(self, conditions: tuple[torch.Tensor | None, ...]) -> bool:
        """Whether the current step with these conditions runs the whole UNet (see the module's schedule)."""
        cached = self._cached
        return (cached is None or self.step - cached.step >= self.interval or self.step < cached.step
                or not _same(cached.conditions, conditions))

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor, mask_fractions: torch.Tensor,
                embeddings: torch.Tensor | None = None, drop_embedding: torch.Tensor | None = None) -> torch.Tensor:
        conditions = (labels, mask_fractions, embeddings, drop_embedding)
        inputs = (latent, timestep, labels, mask_fractions, embeddings, drop_embedding)
        unet = self.denoiser.unet
        if self.interval == 1:
            return self.denoiser(*inputs)
        if not self.is_full(conditions):
            deep = self._cached.deep

            def shallow(sample: torch.Tensor, t: torch.Tensor,
                        class_labels: torch.Tensor | None = None) -> UNet2DOutput:
                return UNet2DOutput(sample=partial_forward(unet, sample, t, class_labels, deep))

            self.partial_steps += 1
            return self.denoiser(*inputs, unet=shallow)
        captured: list[torch.Tensor] = []

        def capture(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])

        handle = unet.up_blocks[-1].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            out = self.denoiser(*inputs)
        finally:
            handle.remove()
        self._cached = _Cached(self.step, captured[-1].detach(), conditions)
        self.full_steps += 1
        return out
