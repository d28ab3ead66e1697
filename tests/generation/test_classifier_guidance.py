"""Classifier guidance towards prototypes: w=0 is the old sampler, the eps/v shift, ids, tables, recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.errors import InputError, ModelFolderError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.models.prototype_classifier import PrototypeClassifier, resolve_prototype
from histosynth.sampling.classifier_guidance import MIN_ALPHA_BAR, ClassifierGuidance
from histosynth.sampling.guidance import load_guidance_classifier
from histosynth.sampling.masks import procedural_mask
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.embeddings.prototypes import nearest_prototype, read_prototype_table, write_prototype_table

from guided_models import PROTOTYPES, tiny_classifier_config
from guided_models import classifier_dir  # noqa: F401  (fixtures)
from tiny_models import TILE, make_tiles, tiny_train_config


def _sampler(model_dir: Path, classifier_dir: Path | None, **settings) -> TileSampler:
    model = LatentDiffusionModel.load(model_dir)
    classifier = load_guidance_classifier(classifier_dir, model)[0] if classifier_dir else None
    exact = {"steps": 4, "sampler": "ddim", "precision": "float32"}  # classifier guidance steps through DDIM
    return TileSampler(model, SamplingSettings(**{**exact, **settings}), classifier=classifier)


def test_zero_weight_is_exactly_the_unguided_sampler(tiny_model_dir: Path, classifier_dir: Path) -> None:
    masks = [procedural_mask(TILE, 0.5, i) for i in range(2)]
    plain = _sampler(tiny_model_dir, None).sample([0, 3], masks, [1, 2])
    zero = _sampler(tiny_model_dir, classifier_dir, prototype_guidance=0.0).sample([0, 3], masks, [1, 2],
                                                                                  prototypes=[0, 2])
    guided = _sampler(tiny_model_dir, classifier_dir, prototype_guidance=50.0).sample([0, 3], masks, [1, 2],
                                                                                     prototypes=[0, 2])
    assert np.array_equal(plain, zero)
    assert not np.array_equal(plain, guided)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_guidance_shifts_eps_by_the_scaled_gradient(classifier_dir: Path, prediction_type: str) -> None:
    classifier = PrototypeClassifier.load(classifier_dir)
    alphas = torch.linspace(0.99, 1e-6, 1000)
    guidance = ClassifierGuidance(classifier, 2.5, prediction_type, alphas)
    g = torch.Generator().manual_seed(0)
    z, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    targets, t = torch.tensor([1, 2]), 400
    a = float(alphas[t])
    grad = guidance.gradient(z, t, targets)

    def as_eps(model_output: torch.Tensor) -> torch.Tensor:
        return a ** 0.5 * model_output + (1 - a) ** 0.5 * z if prediction_type == "v_prediction" else model_output

    shifted = guidance(out, z, t, targets)
    assert torch.allclose(as_eps(shifted) - as_eps(out), -2.5 * (1 - a) ** 0.5 * grad, atol=1e-5)
    assert float(grad.abs().sum()) > 0
    late = int((alphas < MIN_ALPHA_BAR).nonzero()[0])
    assert torch.equal(guidance(out, z, late, targets), out)  # pure-noise steps get no gradient


def test_gradient_is_each_tiles_own_log_probability(classifier_dir: Path) -> None:
    classifier = PrototypeClassifier.load(classifier_dir)
    guidance = ClassifierGuidance(classifier, 1.0, "epsilon", torch.full((1000,), 0.5))
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    both = guidance.gradient(z, 100, torch.tensor([0, 1, 2]))
    alone = guidance.gradient(z[1:2], 100, torch.tensor([1]))
    assert torch.allclose(both[1:2], alone, atol=1e-6)


def test_guidance_raises_the_requested_prototypes_probability(tiny_model_dir: Path, classifier_dir: Path) -> None:
    sampler = _sampler(tiny_model_dir, classifier_dir, steps=6, guidance=1.0)
    labels, fractions = torch.full((4,), 3), torch.zeros(4, 2, 8, 8)
    noise = sampler.initial_noise([0, 1, 2, 3])
    targets = torch.tensor([0, 1, 2, 0])
    unguided = sampler.denoise(noise, labels, fractions)
    sampler.settings.prototype_guidance = 30.0
    guided = sampler.denoise(noise, labels, fractions, prototypes=targets)
    with torch.no_grad():
        t0 = torch.zeros(4, dtype=torch.long)
        before = sampler.classifier(unguided, t0).log_softmax(-1).gather(1, targets.view(-1, 1))
        after = sampler.classifier(guided, t0).log_softmax(-1).gather(1, targets.view(-1, 1))
    assert bool((after > before).all())


def test_prototype_ids_out_of_range_fail_in_one_line(tiny_model_dir: Path, classifier_dir: Path) -> None:
    sampler = _sampler(tiny_model_dir, classifier_dir, prototype_guidance=1.0)
    with pytest.raises(InputError, match=r"prototype id 3 is out of range: the classifier knows 3 prototypes \(0..2\)"):
        sampler.sample([3], [None], [0], prototypes=[3])
    with pytest.raises(InputError, match="prototype id -1 is out of range"):
        sampler.sample([3], [None], [0], prototypes=[-1])
    assert resolve_prototype("tiny/2", PROTOTYPES) == 2 and resolve_prototype(" 1", PROTOTYPES) == 1
    with pytest.raises(InputError, match="prototype id 7 is out of range"):
        resolve_prototype("7", PROTOTYPES)
    with pytest.raises(InputError, match="unknown prototype 'tiny/9'"):
        resolve_prototype("tiny/9", PROTOTYPES)
    with pytest.raises(InputError, match="DDIM"):  # refused when the settings are made, before any sampling
        _sampler(tiny_model_dir, classifier_dir, prototype_guidance=1.0, sampler="dpm")


def test_classifier_must_match_the_models_latents(tmp_path: Path, tiny_model_dir: Path, classifier_dir: Path) -> None:
    model = LatentDiffusionModel.load(tiny_model_dir)
    PrototypeClassifier(tiny_classifier_config(latent_size=16), PROTOTYPES).save(tmp_path / "big")
    with pytest.raises(ModelFolderError, match="classifier latents are 4x16x16, the model's 4x8x8"):
        load_guidance_classifier(tmp_path / "big", model)
    PrototypeClassifier(tiny_classifier_config(), PROTOTYPES).save(
        tmp_path / "other", latent_scaling={"scaling_factor": 0.5, "latent_shift": [0, 0, 0, 0]})
    with pytest.raises(ModelFolderError, match="another autoencoder"):
        load_guidance_classifier(tmp_path / "other", model)
    with pytest.raises(ModelFolderError, match="expected 'prototype-classifier'"):
        load_guidance_classifier(tiny_model_dir / "denoiser", model)


def _table(tmp_path: Path, n: int = 6) -> Path:
    from PIL import Image

    tiles = make_tiles(n)
    (tmp_path / "tiles").mkdir(exist_ok=True)
    names = []
    for i in range(n):
        Image.fromarray(tiles.images[i].permute(1, 2, 0).numpy()).save(tmp_path / "tiles" / f"t{i}.png")
        names.append(f"tiles/t{i}.png")
    centroids = np.eye(3, 5)
    path = tmp_path / "prototypes.h5ad"
    write_prototype_table(path, names, np.arange(n) % 3, PROTOTYPES, centroids, np.random.rand(n, 5), "pixels@16px")
    return path


def test_prototype_table_round_trip_and_one_line_errors(tmp_path: Path) -> None:
    import anndata

    path = _table(tmp_path)
    table = read_prototype_table(path)
    assert table.names == PROTOTYPES and table.ids.tolist() == [0, 1, 2, 0, 1, 2]
    assert table.tiles[0] == tmp_path / "tiles" / "t0.png" and table.encoder == "pixels@16px"
    assert nearest_prototype(np.array([[0.1, 0.9, 0, 0, 0], [0, 0, 2, 0, 0]]), table.centroids).tolist() == [1, 2]
    data = anndata.read_h5ad(path)
    data.obs["prototype_id"] = [0, 1, 2, 0, 1, 5]
    data.write_h5ad(tmp_path / "bad_id.h5ad")
    with pytest.raises(InputError, match="prototype_id 5 is out of range for 3 centroids"):
        read_prototype_table(tmp_path / "bad_id.h5ad")
    del data.obs["prototype"]
    data.write_h5ad(tmp_path / "no_col.h5ad")
    with pytest.raises(InputError, match="obs lacks column"):
        read_prototype_table(tmp_path / "no_col.h5ad")
    (tmp_path / "junk.h5ad").write_text("not hdf5")
    with pytest.raises(InputError, match="junk.h5ad: not a readable .h5ad"):
        read_prototype_table(tmp_path / "junk.h5ad")


def test_classifier_recipe_trains_and_saves_its_kind(tmp_path: Path, tiny_model_dir: Path) -> None:
    from histosynth.training.prototypes import PrototypeLossConfig, load_table_tiles, train_prototype_classifier

    table = read_prototype_table(_table(tmp_path))
    model = LatentDiffusionModel.load(tiny_model_dir)
    tiles = load_table_tiles(table, model)
    result = train_prototype_classifier(table, tiles, tmp_path / "clf", model, tiny_classifier_config(),
                                        tiny_train_config(steps=3), PrototypeLossConfig(latent_variants=2))
    assert result.steps == 3
    classifier, names, identity = load_guidance_classifier(tmp_path / "clf", model)
    assert names == PROTOTYPES and identity.startswith("clf@")
    assert (tmp_path / "clf" / "runs" / "prototype-classifier" / "inputs.safetensors").is_file()
    with pytest.raises(InputError, match="num_prototypes must match"):
        train_prototype_classifier(table, tiles, tmp_path / "clf2", model, tiny_classifier_config(num_prototypes=4),
                                   tiny_train_config(steps=3), PrototypeLossConfig())
