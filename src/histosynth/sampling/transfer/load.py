"""Loading a transfer backbone from a folder: one of ours, or a local Stable Diffusion 1.x/2.x folder.

The factory sits above both implementations, so neither backbone module imports the other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from histosynth.data.classes import ClassList
from histosynth.sampling.transfer.backbones import HistosynthBackbone, TransferBackbone
from histosynth.sampling.transfer.stable_diffusion import StableDiffusionBackbone


def is_stable_diffusion_folder(folder: str | Path) -> bool:
    """A diffusers pipeline folder (``model_index.json`` at the top)."""
    return (Path(folder) / "model_index.json").is_file()


def load_backbone(folder: str | Path, device: str | torch.device = "cpu", prompt: str = "",
                  classes: ClassList | None = None) -> TransferBackbone:
    """A histosynth model folder or a local Stable Diffusion 1.x/2.x folder, as a transfer backbone.

    ``prompt`` and ``classes`` (the meaning of mask values, for writing masks) apply to Stable
    Diffusion folders only: our folders carry their own classes and take no text.
    """
    if is_stable_diffusion_folder(folder):
        return StableDiffusionBackbone(folder, device, prompt=prompt, classes=classes)
    from histosynth.models.pipeline import LatentDiffusionModel

    return HistosynthBackbone(LatentDiffusionModel.load(folder), device)
