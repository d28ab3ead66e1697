"""What the models are conditioned and augmented with, shared by training, sampling and evaluation.

- :func:`mask_fractions`: a class mask as per-class area fractions of each latent cell (the denoiser's
  spatial condition).
- :func:`dihedral` / :func:`dihedral_mask`: the 8 symmetries of the square (training augmentation,
  test-time augmentation, transfer rounds).
"""

from __future__ import annotations

import numpy as np
import torch


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square (k % 4 quarter turns, then a flip if k >= 4)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def dihedral_mask(mask: np.ndarray, k: int) -> np.ndarray:
    """:func:`dihedral` of a numpy array (k taken modulo 8), as a C-contiguous array."""
    return np.ascontiguousarray(dihedral(torch.from_numpy(np.ascontiguousarray(mask)), k % 8).numpy())


def mask_fractions(masks: torch.Tensor, known: torch.Tensor, num_classes: int, factor: int) -> torch.Tensor:
    """Per-class area fractions of each ``factor`` x ``factor`` cell: (N,C,H/f,W/f); zeros where unknown."""
    one_hot = torch.nn.functional.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()
    fractions = torch.nn.functional.avg_pool2d(one_hot, factor)
    return fractions * known.view(-1, 1, 1, 1).float()
