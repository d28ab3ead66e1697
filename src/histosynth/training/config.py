"""Typed training settings, loadable from YAML and saved in the model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from histosynth.errors import InputError


class TrainConfig(BaseModel):
    """Optimisation settings shared by every trainable model."""

    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = Field(200, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(25, ge=1)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"


def load_yaml_section(path: str | Path | None, section: str) -> dict:
    """Read ``section`` of a YAML config file (``{}`` when no file is given)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InputError("config file not found", path) from None
    except yaml.YAMLError as error:
        raise InputError(f"config is not valid YAML ({type(error).__name__})", path) from None
    if not isinstance(data, dict):
        raise InputError("config must be a YAML mapping", path)
    unknown = set(data) - {"train", "model", "objective"}
    if unknown:
        raise InputError(f"unknown config section(s) {', '.join(sorted(unknown))}", path)
    return data.get(section) or {}


def parse_config(model_type: type[BaseModel], values: dict, source: str | Path) -> BaseModel:
    """Validate ``values`` as ``model_type``; errors become one line naming ``source``."""
    try:
        return model_type.model_validate(values)
    except ValidationError as error:
        detail = error.errors()[0]
        where = ".".join(str(p) for p in detail["loc"])
        raise InputError(f"invalid config value {where}: {detail['msg']}", source) from None
