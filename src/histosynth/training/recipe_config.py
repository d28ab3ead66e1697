"""A training recipe from YAML: its ``train:``, ``model:`` and ``objective:`` sections as typed configs.

:func:`load_recipe` is the one place a recipe is assembled (``histosynth train --config`` and the
benchmarks that train): each section is laid over the caller's defaults, the caller's overrides (e.g.
``--steps``) over it, and validated. Every problem is one :class:`~histosynth.errors.InputError` line
naming the YAML file: a missing or malformed file, an unknown section, a section that is not a mapping,
an unknown key (with the nearest known one) or a bad value.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar, cast

from pydantic import BaseModel

from histosynth.errors import InputError
from histosynth.training.config import TrainConfig, load_yaml_section, parse_config

SECTIONS = ("train", "model", "objective")
ModelT = TypeVar("ModelT", bound=BaseModel)
ObjectiveT = TypeVar("ObjectiveT", bound=BaseModel)


class Recipe(NamedTuple, Generic[ModelT, ObjectiveT]):
    """The three configs of a training recipe (unpacks as ``train, model, objective``)."""

    train: TrainConfig
    model: ModelT
    objective: ObjectiveT


def recipe_sections(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The sections of a recipe YAML (empty ones when ``path`` is None); one line when the file or a
    section is malformed."""
    sections = {name: load_yaml_section(path, name) for name in SECTIONS}
    for name, values in sections.items():
        if not isinstance(values, dict):
            raise InputError(f"config section {name}: must be a mapping of settings, "
                             f"not {type(values).__name__}", path)
    return sections


def _check_keys(values: Mapping[str, Any], config_type: type[BaseModel], section: str, source: str | Path) -> None:
    """One line naming the first key of ``values`` that ``config_type`` does not have (in the words of
    :func:`~histosynth.training.config.parse_config`, which the configs that forbid extra keys use too)."""
    known = set(config_type.model_fields) | {f.alias for f in config_type.model_fields.values() if f.alias}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise InputError(f"invalid config value {key}: unknown {section} setting{hint}", source)


def load_recipe(path: str | Path | None, model_type: type[ModelT], objective_type: type[ObjectiveT], *,
                model_defaults: Mapping[str, Any] | None = None, model_overrides: Mapping[str, Any] | None = None,
                train_overrides: Mapping[str, Any] | None = None,
                objective_overrides: Mapping[str, Any] | None = None) -> Recipe[ModelT, ObjectiveT]:
    """The train, model and objective configs of the recipe at ``path`` (defaults alone when None).

    Each section: the caller's defaults (``model_defaults``, e.g. the latent shape an autoencoder
    fixes), then the YAML, then the caller's overrides (``train_overrides``, e.g. ``--steps``). Errors
    name ``path`` (``defaults`` without a file).
    """
    source: str | Path = path if path is not None else "defaults"
    sections = recipe_sections(path)
    types: dict[str, type[BaseModel]] = {"train": TrainConfig, "model": model_type, "objective": objective_type}
    defaults = {"model": model_defaults}
    overrides = {"train": train_overrides, "model": model_overrides, "objective": objective_overrides}
    configs = {}
    for name in SECTIONS:
        _check_keys(sections[name], types[name], name, source)
        values = {**(defaults.get(name) or {}), **sections[name], **(overrides[name] or {})}
        configs[name] = parse_config(types[name], values, source)
    return Recipe(cast(TrainConfig, configs["train"]), cast(ModelT, configs["model"]),
                  cast(ObjectiveT, configs["objective"]))
