"""AdaIN on latents: plain (the cross-image-attention baseline) and class-masked (seed 002).

The class-masked variant matches, per class, the channel statistics of the output's pixels of that
class in the *target* mask to those of the appearance latent's pixels of the same class in the
*appearance* mask. Seed 002 alternates the class between steps (class ``c`` on steps with
``step mod C == c``) for two classes; here any number of classes C >= 2 works, and ``mode='all'``
matches every class at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from histosynth.errors import InputError

AdainMode = Literal["alternate", "all"]


def _stats(x: torch.Tensor, region: torch.Tensor | None = None, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``x`` (C,H,W) over ``region`` (H,W bool) or everything."""
    values = x.flatten(1) if region is None else x[:, region]
    return values.mean(1), values.std(1, unbiased=False) + eps


def adain(x: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give each channel of ``x`` (N,C,H,W) the mean and std of the same channel of ``reference``."""
    out = torch.empty_like(x)
    for i in range(len(x)):
        mean, std = _stats(x[i], eps=eps)
        ref_mean, ref_std = _stats(reference[i], eps=eps)
        out[i] = (x[i] - mean[:, None, None]) / std[:, None, None] * ref_std[:, None, None] + ref_mean[:, None, None]
    return out


def masked_adain(x: torch.Tensor, target_mask: torch.Tensor, reference: torch.Tensor, reference_mask: torch.Tensor,
                 classes: Sequence[int], eps: float = 1e-5) -> torch.Tensor:
    """Class-wise AdaIN: for each class in ``classes``, the output's target-mask region of that class
    takes the channel statistics of the reference's region of that class; other pixels are kept.

    ``x``/``reference``: (N,C,H,W); masks: (N,H,W) class ids at the latents' resolution.
    """
    out = x.clone()
    for i in range(len(x)):
        for class_id in classes:
            region, ref_region = target_mask[i] == class_id, reference_mask[i] == class_id
            if not bool(region.any()):
                continue
            if not bool(ref_region.any()):
                raise InputError(f"class {class_id} is in the target mask but not in the appearance mask")
            mean, std = _stats(x[i], region, eps)
            ref_mean, ref_std = _stats(reference[i], ref_region, eps)
            out[i][:, region] = (x[i][:, region] - mean[:, None]) / std[:, None] * ref_std[:, None] + ref_mean[:, None]
    return out


def classes_for_step(step: int, class_ids: Sequence[int], mode: AdainMode = "alternate") -> list[int]:
    """The classes whose statistics are matched at denoising step ``step`` (0-based)."""
    if len(class_ids) == 0:
        raise ValueError("no classes to match")
    if mode == "all":
        return list(class_ids)
    if mode == "alternate":
        return [class_ids[step % len(class_ids)]]
    raise ValueError(f"unknown AdaIN mode {mode!r}; choose alternate or all")


def check_classes(target_mask: torch.Tensor, appearance_mask: torch.Tensor, source: str = "target mask") -> list[int]:
    """Classes of the target mask; each must also occur in the appearance mask (one-line error)."""
    target, appearance = set(torch.unique(target_mask).tolist()), set(torch.unique(appearance_mask).tolist())
    missing = sorted(target - appearance)
    if missing:
        raise InputError(f"holds class(es) {missing} that the appearance mask lacks; their look cannot be transferred",
                         source)
    return sorted(target)
