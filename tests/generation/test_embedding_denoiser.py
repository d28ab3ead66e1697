"""The embedding-conditioned denoiser: fine-tune start, null path, model-folder contract, recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from histosynth.errors import InputError, ModelFolderError
from histosynth.models.denoiser import ConditionalDenoiser, DenoiserConfig
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.models.prototype_classifier import PrototypeClassifier
from histosynth.training.like import init_from_base

from guided_models import PIXELS_DIM, like_denoiser_config, randomise_projection
from guided_models import like_model_dir, classifier_dir  # noqa: F401  (fixtures)
from tiny_models import make_tiles, tiny_denoiser_config, tiny_train_config


def _inputs(n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, 8, 8, generator=g), torch.tensor([3, 500, 999][:n]), torch.tensor([0, 3, 1][:n]),
            torch.rand(n, 2, 8, 8, generator=g), torch.randn(n, PIXELS_DIM, generator=g))


def test_configs_without_embedding_are_written_as_before() -> None:
    dumped = tiny_denoiser_config().model_dump(mode="json")
    assert not {"embedding_dim", "embedding_encoder", "embedding_hidden"} & set(dumped)
    assert DenoiserConfig.model_validate(dumped) == tiny_denoiser_config()
    with_embedding = like_denoiser_config().model_dump(mode="json")
    assert with_embedding["embedding_dim"] == PIXELS_DIM
    assert DenoiserConfig.model_validate(with_embedding) == like_denoiser_config()


def test_shipped_denoiser_folder_still_loads_without_embedding() -> None:
    from histosynth.weights import default_model_dir

    config = ConditionalDenoiser.read_config(default_model_dir() / "denoiser")
    assert config.embedding_dim == 0 and config.embedding_encoder is None


def test_fresh_embedding_denoiser_computes_exactly_its_base() -> None:
    torch.manual_seed(0)
    base = ConditionalDenoiser(tiny_denoiser_config()).eval()
    model = ConditionalDenoiser(like_denoiser_config()).eval()
    init_from_base(model, base)
    x, t, labels, fractions, embeddings = _inputs()
    with torch.no_grad():
        expected = base(x, t, labels, fractions)
        assert torch.equal(model(x, t, labels, fractions, embeddings), expected)
        assert torch.equal(model(x, t, labels, fractions), expected)
    with pytest.raises(ValueError, match="takes no embeddings"):
        base(x, t, labels, fractions, embeddings)


def test_null_embedding_path_equals_no_embedding() -> None:
    torch.manual_seed(0)
    model = randomise_projection(ConditionalDenoiser(like_denoiser_config())).eval()
    x, t, labels, fractions, embeddings = _inputs()
    with torch.no_grad():
        none = model(x, t, labels, fractions)
        dropped = model(x, t, labels, fractions, embeddings, torch.ones(3, dtype=torch.bool))
        given = model(x, t, labels, fractions, embeddings)
        mixed = model(x, t, labels, fractions, embeddings, torch.tensor([True, False, True]))
    assert torch.equal(none, dropped)
    assert not torch.allclose(none, given, atol=1e-4)  # the embedding matters once trained
    assert torch.equal(mixed[0], none[0]) and torch.allclose(mixed[1], given[1], atol=1e-5)
    assert model.unet.class_embedding.extra is None  # nothing left behind between calls


def test_embedding_denoiser_round_trips_through_its_folder(tmp_path: Path, like_model_dir: Path,
                                                           classifier_dir: Path) -> None:
    loaded = LatentDiffusionModel.load(like_model_dir)
    assert loaded.denoiser.config.embedding_dim == PIXELS_DIM
    loaded.denoiser.save(tmp_path / "copy")
    again = ConditionalDenoiser.load(tmp_path / "copy")
    x, t, labels, fractions, embeddings = _inputs()
    with torch.no_grad():
        expected = loaded.denoiser(x, t, labels, fractions, embeddings)
        assert torch.equal(again(x, t, labels, fractions, embeddings), expected)
    with pytest.raises(ModelFolderError, match="kind 'prototype-classifier', expected 'denoiser'"):
        ConditionalDenoiser.load(classifier_dir)
    with pytest.raises(ModelFolderError, match="kind 'denoiser', expected 'prototype-classifier'"):
        PrototypeClassifier.load(like_model_dir / "denoiser")
    manifest = json.loads((like_model_dir / "denoiser" / "histosynth.json").read_text())
    manifest["config"]["embedding_dim"] = 12  # config no longer matches the weights
    (like_model_dir / "denoiser" / "histosynth.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="weights do not match the config"):
        ConditionalDenoiser.load(like_model_dir / "denoiser")


def test_like_recipe_fine_tunes_writes_a_model_folder_and_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    from histosynth.data.manifest import TileManifest
    from histosynth.training.like import train_like_model
    from histosynth.training.objectives import EmbeddingDenoiserLossConfig

    from tiny_models import CLASSES

    tiles = make_tiles(6)
    manifest = TileManifest(tmp_path / "manifest.csv", [], CLASSES)
    loss = EmbeddingDenoiserLossConfig(latent_variants=2, condition_dropout=0.5)
    out = tmp_path / "like"
    result = train_like_model(manifest, tiles, out, tiny_model_dir, "pixels", tiny_train_config(steps=3), loss,
                              embedding_hidden=8)
    assert (result.steps, result.resumed_from) == (3, 0)
    model = LatentDiffusionModel.load(out)
    assert (model.denoiser.config.embedding_dim, model.denoiser.config.embedding_encoder) == (PIXELS_DIM, "pixels")
    facts = json.loads((out / "denoiser" / "histosynth.json").read_text())
    assert facts["embedding_encoder_identity"] == "pixels@16px" and facts["fine_tuned_from"].startswith("model@")
    assert float(model.denoiser.embedding_proj[-1].weight.detach().abs().sum()) > 0  # the projection learned something
    base = LatentDiffusionModel.load(tiny_model_dir).denoiser
    with torch.no_grad():  # the UNet itself was fine-tuned too
        assert not torch.equal(model.denoiser.unet.conv_in.weight, base.unet.conv_in.weight)
    again = train_like_model(manifest, tiles, out, tiny_model_dir, "pixels", tiny_train_config(steps=3), loss,
                             embedding_hidden=8)
    assert again.resumed_from == 3
    with pytest.raises(InputError, match="other settings"):
        train_like_model(manifest, tiles, out, tiny_model_dir, "pixels", tiny_train_config(steps=4), loss, 8)
    with pytest.raises(InputError, match="another folder than the base model"):
        train_like_model(manifest, tiles, tiny_model_dir, tiny_model_dir, "pixels", tiny_train_config(), loss)
    with pytest.raises(InputError, match="already embedding-conditioned"):
        train_like_model(manifest, tiles, tmp_path / "again", out, "pixels", tiny_train_config(), loss)
