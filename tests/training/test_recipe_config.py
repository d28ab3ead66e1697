"""One assembly of a training recipe from YAML (`train --config` and the benchmarks): defaults under the YAML,
overrides over it, and one line naming the YAML file for any problem (exit 2 through the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from histosynth.errors import InputError
from histosynth.models.denoiser import DenoiserConfig
from histosynth.models.histology_encoder import HistologyEncoderConfig
from histosynth.training.contrastive import ContrastiveLossConfig
from histosynth.training.objectives import AutoencoderLossConfig, DenoiserLossConfig
from histosynth.training.recipe_config import load_recipe, recipe_sections
from testkit import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text("train:\n  steps: 50\n  batch_size: 4\nmodel:\n  num_labels: 3\nobjective:\n"
                      "  condition_dropout: 0.2\n")
    train, model, objective = load_recipe(config, DenoiserConfig, DenoiserLossConfig,
                                          model_defaults={"num_labels": 9, "num_mask_classes": 2, "latent_size": 14},
                                          model_overrides={"mask_conditioning": "none"},
                                          train_overrides={"steps": 7})
    assert (train.steps, train.batch_size) == (7, 4)
    assert (model.num_labels, model.latent_size, model.mask_conditioning) == (3, 14, "none")
    assert objective.condition_dropout == 0.2
    assert load_recipe(None, HistologyEncoderConfig, ContrastiveLossConfig).train.steps == 10_000


def test_the_shipped_recipe_reads_as_before() -> None:
    recipe = load_recipe(ROOT / "configs" / "ebhi_encoder.yaml", HistologyEncoderConfig, ContrastiveLossConfig)
    assert recipe.train.steps == recipe_sections(ROOT / "configs" / "ebhi_encoder.yaml")["train"]["steps"]
    assert recipe.model.input_size == 112 and recipe.objective.temperature == 0.2


BAD = {
    "unknown key": ("train:\n  stepz: 5\n", "invalid config value stepz: unknown train setting; did you mean steps?"),
    "unknown model key": ("model:\n  colour: red\n", "invalid config value colour: unknown model setting"),
    "bad value": ("train:\n  learning_rate: -1\n", "invalid config value learning_rate: Input should be greater"),
    "wrong type": ("objective:\n  temperature: warm\n", "invalid config value temperature: Input should be a valid"),
    "unknown section": ("trian:\n  steps: 5\n", "unknown config section(s) trian"),
    "section not a mapping": ("train: 5\n", "config section train: must be a mapping of settings, not int"),
    "not a mapping": ("- steps\n", "config must be a YAML mapping"),
    "not YAML": ("train: [\n", "config is not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipes_are_one_line_naming_the_file(case: str, tmp_path: Path) -> None:
    text, says = BAD[case]
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    with pytest.raises(InputError) as error:
        load_recipe(config, HistologyEncoderConfig, ContrastiveLossConfig)
    assert str(error.value).startswith(f"{config}: {says}"), str(error.value)


@pytest.mark.parametrize("case", ["unknown key", "section not a mapping", "bad value"])
def test_the_cli_refuses_a_bad_recipe_before_any_work(case: str, tmp_path: Path, capsys) -> None:
    text, says = BAD[case]
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    out = tmp_path / "model"
    code, _, err = run_cli(["train", "encoder", "--data", str(tmp_path / "missing.csv"), "--config", str(config),
                            "--steps", "3", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {config}: {says}"), err
    assert not out.exists()


def test_a_missing_recipe_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="recipe.yaml: config file not found"):
        load_recipe(tmp_path / "recipe.yaml", DenoiserConfig, AutoencoderLossConfig)
