"""Weights shipped inside the package (safetensors), with their recipes in docs/models.md."""

from __future__ import annotations

from pathlib import Path

from histosynth.errors import ModelFolderError

EBHI_MODEL = Path(__file__).parent / "default"  # trained on EBHI-Seg, see docs/models.md
HISTOLOGY_ENCODER = Path(__file__).parent / "histology"  # self-supervised on EBHI-Seg train tiles


def default_model_dir() -> Path:
    """The shipped EBHI-Seg model folder; a clear error if this install lacks it."""
    if not (EBHI_MODEL / "denoiser").is_dir():
        raise ModelFolderError("the shipped default model is not in this install; pass --model", EBHI_MODEL)
    return EBHI_MODEL
