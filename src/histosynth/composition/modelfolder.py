"""Composition model folders: ``histosynth.json`` (kind ``composition-model``) + one safetensors per model.

The config records the encoder (name, weights, identity) and the tiles it saw, so ``predict`` cuts
and embeds new spots the same way and refuses an encoder whose weights differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from histosynth.composition.models import (
    MODEL_KINDS,
    Regressor,
    RegressorSettings,
    fit_model,
    load_regressor,
    model_state,
    neighbour_matrix,
)
from histosynth.errors import ModelFolderError

KIND = "composition-model"


class CompositionConfig(BaseModel):
    """What a composition model folder holds and how its inputs were made."""

    encoder: str
    encoder_identity: str
    encoder_weights: str | None = None
    targets: list[str] = Field(min_length=1)
    normalised: bool
    feature_dim: int = Field(ge=1)
    models: list[str] = Field(min_length=1)
    diameter: float | None = None
    tile_size: int = Field(224, ge=8)
    settings: RegressorSettings = RegressorSettings()


def weights_name(kind: str) -> str:
    return f"{kind}.safetensors"


def fit_composition(features: np.ndarray, targets: np.ndarray, coords: np.ndarray | None, sections: np.ndarray,
                    kinds: list[str], settings: RegressorSettings, normalised: bool,
                    on_model: Any = None) -> tuple[dict[str, Regressor], dict[str, float]]:
    """Fit every model of ``kinds`` on all spots; returns the models and their fit seconds."""
    neighbours = neighbour_matrix(coords, sections, settings.neighbour_radius) if coords is not None else None
    models, seconds = {}, {}
    for kind in kinds:
        models[kind], seconds[kind] = fit_model(kind, features, targets, neighbours, settings, normalised)
        if on_model is not None:
            on_model(kind)
    return models, seconds


def save_composition_model(folder: str | Path, config: CompositionConfig, models: dict[str, Regressor],
                           **extra: Any) -> None:
    """Write the folder atomically (a previous folder at that path is replaced only on success)."""
    from safetensors.torch import save_file

    from histosynth.io import atomic_dir, atomic_path
    from histosynth.models.folder import write_folder_manifest

    with atomic_dir(Path(folder)) as tmp:
        for kind, model in models.items():
            state = {k: v.detach().contiguous().cpu() for k, v in model_state(model).items()}
            with atomic_path(tmp / weights_name(kind)) as part:  # usual file permissions, as other model folders
                save_file(state, str(part))
        write_folder_manifest(tmp, KIND, config, **extra)


def load_composition_model(folder: str | Path) -> tuple[CompositionConfig, dict[str, Regressor]]:
    """The config and every fitted model of a folder; a wrong or damaged folder fails with one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from histosynth.models.folder import read_folder_config, require_files

    config = read_folder_config(folder, KIND, CompositionConfig)
    unknown = [k for k in config.models if k not in MODEL_KINDS]
    if unknown:
        raise ModelFolderError(f"unknown model kind(s) {', '.join(unknown)}", folder)
    require_files(folder, *(weights_name(k) for k in config.models))
    models = {}
    for kind in config.models:
        path = Path(folder) / weights_name(kind)
        try:
            state = load_file(str(path))
            models[kind] = load_regressor(kind, state, config.settings, config.normalised)
        except (SafetensorError, OSError, KeyError, RuntimeError) as error:
            raise ModelFolderError(f"weights are unreadable or do not match ({type(error).__name__})", path) from None
    return config, models
