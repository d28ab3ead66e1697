"""The one model-folder interface (:class:`histosynth.models.folder.FolderModel`): every kind saves with
``model.save(folder, **facts)`` and loads with ``Kind.load(folder)``, writing the same files as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from histosynth.errors import ModelFolderError
from histosynth.models.autoencoder import Autoencoder, AutoencoderConfig
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.folder import FolderModel
from histosynth.models.histology_encoder import HistologyCNN, HistologyEncoderConfig
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.models.prototype_classifier import PrototypeClassifier, PrototypeClassifierConfig
from tiny_models import CLASSES, TILE, tiny_autoencoder_config, tiny_denoiser_config

PROTOTYPES = ["tiny/0", "tiny/1", "tiny/2"]


def _classifier_config(**overrides: object) -> PrototypeClassifierConfig:
    return PrototypeClassifierConfig(latent_size=TILE // 4, num_prototypes=3, widths=(8, 16), norm_num_groups=4,
                                     **overrides)


def _latent_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 700]))


def _denoiser_run(model: torch.nn.Module) -> torch.Tensor:
    latent, t = _latent_inputs()
    return model(latent, t, torch.tensor([0, 2]), torch.full((2, 2, 8, 8), 0.5))


@dataclass
class Case:
    """A kind on a tiny config: how to build it, run it, and break its config against its weights."""

    build: Callable[[], FolderModel]
    run: Callable[[torch.nn.Module], torch.Tensor]
    mismatch: dict


CASES = {
    "denoiser": Case(lambda: ConditionalDenoiser(tiny_denoiser_config()), _denoiser_run,
                     {"block_out_channels": [16, 16]}),
    "denoiser-cross-attention": Case(lambda: ConditionalDenoiser(tiny_denoiser_config("cross_attention")),
                                     _denoiser_run, {"num_mask_classes": 3}),
    "autoencoder": Case(lambda: Autoencoder(tiny_autoencoder_config()),
                        lambda m: m.decode(m.encode(torch.rand(2, 3, TILE, TILE) * 2 - 1).latent_dist.mean).sample,
                        {"latent_channels": 3}),
    "histology-encoder": Case(lambda: HistologyCNN(HistologyEncoderConfig(widths=(8, 8, 8, 16), input_size=16)),
                              lambda m: m(torch.rand(2, 3, 24, 24)), {"widths": [8, 8, 8, 8]}),
    "prototype-classifier": Case(lambda: PrototypeClassifier(_classifier_config(), PROTOTYPES),
                                 lambda m: m(*_latent_inputs()), {"widths": [8, 8]}),
}


@pytest.mark.parametrize("name", CASES)
def test_every_kind_round_trips_through_its_folder(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build().eval()
    model.save(tmp_path / "m", note={"kept": True})
    loaded = type(model).load(tmp_path / "m")

    assert type(loaded) is type(model) and not loaded.training
    assert loaded.folder_config() == model.folder_config() == type(model).read_config(tmp_path / "m")
    assert type(model).read_manifest(tmp_path / "m")["note"] == {"kept": True}
    before, after = model.state_dict(), loaded.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    torch.manual_seed(1)
    with torch.no_grad():
        expected = case.run(model)
        torch.manual_seed(1)
        assert torch.equal(case.run(loaded), expected)


@pytest.mark.parametrize("name", CASES)
def test_weights_that_do_not_match_the_config_fail_in_one_line(name: str, tmp_path: Path) -> None:
    model = CASES[name].build()
    model.save(tmp_path / "m")
    manifest_path = tmp_path / "m" / "histosynth.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"].update(CASES[name].mismatch)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"weights do not match the config \(") as error:
        type(model).load(tmp_path / "m")
    assert "\n" not in str(error.value) and str(tmp_path / "m" / model.weights_name) in str(error.value)


def test_a_folder_of_another_kind_fails_naming_the_folder(tmp_path: Path) -> None:
    ConditionalDenoiser(tiny_denoiser_config()).save(tmp_path / "denoiser")
    with pytest.raises(ModelFolderError, match="kind 'denoiser', expected 'autoencoder'") as error:
        Autoencoder.load(tmp_path / "denoiser")
    assert str(error.value).startswith(f"{tmp_path / 'denoiser'}: ")
    with pytest.raises(ModelFolderError, match="expected 'prototype-classifier'"):
        PrototypeClassifier.load(tmp_path / "denoiser")
    with pytest.raises(ModelFolderError, match="expected 'histology-encoder'"):
        HistologyCNN.read_config(tmp_path / "denoiser")
    (tmp_path / "denoiser" / "denoiser.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="missing model file denoiser.safetensors"):
        ConditionalDenoiser.load(tmp_path / "denoiser")


def test_classifier_keeps_its_prototype_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one prototype name per class"):
        PrototypeClassifier(_classifier_config()).save(tmp_path / "unnamed")
    with pytest.raises(ValueError, match="one prototype name per class"):
        PrototypeClassifier(_classifier_config(), PROTOTYPES[:2])
    PrototypeClassifier(_classifier_config(), PROTOTYPES).save(tmp_path / "clf")
    assert PrototypeClassifier.load(tmp_path / "clf").prototypes == PROTOTYPES
    manifest = json.loads((tmp_path / "clf" / "histosynth.json").read_text())
    manifest["prototypes"] = PROTOTYPES[:2]
    (tmp_path / "clf" / "histosynth.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="lists no prototype name per class"):
        PrototypeClassifier.load(tmp_path / "clf")


# What save_autoencoder / save_weights_folder wrote before FolderModel, byte for byte.
EXPECTED_AUTOENCODER_JSON = """{
  "kind": "autoencoder",
  "format_version": 1,
  "config": {
    "block_out_channels": [
      8,
      8,
      16
    ],
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "tile_size": 32,
    "scaling_factor": 1.5,
    "latent_shift": [
      0.25,
      0.0,
      0.0,
      -1.0
    ]
  },
  "trained_on": {
    "tiles": 3
  }
}
"""
EXPECTED_MANIFESTS = {
    "denoiser": {"kind": "denoiser", "format_version": 1, "config": {
        "latent_channels": 4, "latent_size": 8, "num_labels": 3, "num_mask_classes": 2, "mask_conditioning": "concat",
        "block_out_channels": [16, 32], "attention_levels": [False, True], "layers_per_block": 1,
        "attention_head_dim": 8, "norm_num_groups": 8, "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"},
        "labels": ["Normal", "Polyp", "Adenocarcinoma"], "x": {"a": 1}},
    "prototype-classifier": {"kind": "prototype-classifier", "format_version": 1, "config": {
        "latent_channels": 4, "latent_size": 8, "num_prototypes": 3, "widths": [8, 16], "norm_num_groups": 4,
        "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
        "prototypes": PROTOTYPES, "latent_scaling": {"scaling_factor": 1.0}},
    "histology-encoder": {"kind": "histology-encoder", "format_version": 1, "config": {
        "widths": [8, 8, 8, 16], "input_size": 16, "projection_dim": 128}, "trained_on": {"tiles": 3}},
}


def test_histosynth_json_is_byte_identical_to_what_the_old_functions_wrote(tmp_path: Path) -> None:
    config = tiny_autoencoder_config().model_copy(update={"scaling_factor": 1.5, "latent_shift": (0.25, 0, 0, -1)})
    Autoencoder(config).save(tmp_path / "ae", trained_on={"tiles": 3})
    assert (tmp_path / "ae" / "histosynth.json").read_text(encoding="utf-8") == EXPECTED_AUTOENCODER_JSON
    ConditionalDenoiser(tiny_denoiser_config()).save(tmp_path / "denoiser", labels=CLASSES.labels, x={"a": 1})
    classifier = CASES["prototype-classifier"].build()
    classifier.save(tmp_path / "prototype-classifier", latent_scaling={"scaling_factor": 1.0})
    CASES["histology-encoder"].build().save(tmp_path / "histology-encoder", trained_on={"tiles": 3})
    for kind, expected in EXPECTED_MANIFESTS.items():
        text = (tmp_path / kind / "histosynth.json").read_text(encoding="utf-8")
        assert text == json.dumps(expected, indent=2) + "\n", kind


def test_autoencoder_folder_is_what_plain_diffusers_writes_and_reads(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    config = tiny_autoencoder_config().model_copy(update={"scaling_factor": 1.5})
    torch.manual_seed(0)
    Autoencoder(config).save(tmp_path / "ours")
    torch.manual_seed(0)  # the network save_autoencoder used to write: diffusers' own class, same arguments
    plain = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 3,
                          up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), layers_per_block=1,
                          norm_num_groups=4, mid_block_add_attention=False, scaling_factor=1.0)
    plain.register_to_config(scaling_factor=1.5)
    plain.save_pretrained(tmp_path / "plain", safe_serialization=True)
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    reread = AutoencoderKL.from_pretrained(tmp_path / "ours")
    assert reread.config.scaling_factor == 1.5
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in reread.state_dict().items())


def test_shipped_model_folder_still_loads(tmp_path: Path) -> None:
    from histosynth.weights import HISTOLOGY_ENCODER, default_model_dir

    folder = default_model_dir()
    model = LatentDiffusionModel.load(folder)
    recorded = json.loads((folder / "autoencoder" / "histosynth.json").read_text())["config"]
    assert isinstance(model.autoencoder, Autoencoder) and isinstance(model.mask_model, ConditionalDenoiser)
    assert model.autoencoder_config == AutoencoderConfig.model_validate(recorded)
    assert model.autoencoder_config.scaling_factor == recorded["scaling_factor"] != 1.0
    assert list(model.autoencoder_config.latent_shift) == recorded["latent_shift"]
    assert not model.autoencoder.training and not model.denoiser.training
    assert HistologyCNN.load(HISTOLOGY_ENCODER).config.feature_dim > 0
