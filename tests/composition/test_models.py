"""Regressors, neighbour graph, model folders and leave-one-group-out cross-validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.composition import crossval
from histosynth.composition.crossval import correlations, cross_validate, leave_one_group_out
from histosynth.composition.modelfolder import (
    CompositionConfig,
    fit_composition,
    load_composition_model,
    save_composition_model,
)
from histosynth.composition.models import RegressorSettings, fit_model, neighbour_matrix, parse_kinds, predict_model
from histosynth.errors import InputError, ModelFolderError

FAST = RegressorSettings(epochs=60, hidden=64, dropout=0.0, weight_decay=1e-4)


def _known_function(n: int = 600, dim: int = 12, types: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and proportions that are a fixed smooth function of them (softmax of a linear map)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    logits = x @ rng.normal(size=(dim, types)) * 0.7
    y = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return x, y


def _mean_r(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.nanmean(correlations(truth, pred)[0]))


@pytest.mark.parametrize("kind", ["mlp", "ridge"])
def test_known_function_of_the_embedding_is_recovered(kind: str) -> None:
    x, y = _known_function()
    model, seconds = fit_model(kind, x[:450], y[:450], None, FAST, normalised=True)
    pred = predict_model(kind, model, x[450:], None)
    assert np.allclose(pred.sum(axis=1), 1.0) and (pred >= 0).all() and seconds > 0
    # the MLP recovers the softmax; ridge, being linear, only approximates it
    assert _mean_r(y[450:], pred) > (0.9 if kind == "mlp" else 0.8)


def test_ridge_recovers_a_linear_function_of_raw_abundances() -> None:
    x, _ = _known_function()
    y = x[:, :3] @ np.array([[1.0, 0.2, 0.0], [0.0, 2.0, 0.5], [0.3, 0.0, 1.0]]) + 10.0
    model, _ = fit_model("ridge", x[:450], y[:450], None, FAST, normalised=False)
    assert _mean_r(y[450:], predict_model("ridge", model, x[450:], None)) > 0.99


def test_raw_abundances_stay_non_negative_and_are_recovered() -> None:
    x, _ = _known_function(seed=1)
    logits = x @ np.random.default_rng(1).normal(size=(x.shape[1], 5)) * 0.5
    y = np.log1p(np.exp(logits)) * np.array([1.0, 10.0, 100.0, 3.0, 0.5])  # very different scales
    model, _ = fit_model("mlp", x[:450], y[:450], None, FAST, normalised=False)
    pred = predict_model("mlp", model, x[450:], None)
    assert (pred >= 0).all() and not np.allclose(pred.sum(axis=1), 1.0)
    assert _mean_r(y[450:], pred) > 0.9


def test_mlp_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    x, y = _known_function(n=120)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = predict_model("mlp", fit_model("mlp", x, y, None, FAST, True)[0], x, None)
    after = torch.rand(1)
    b = predict_model("mlp", fit_model("mlp", x, y, None, FAST, True)[0], x, None)
    c = predict_model("mlp", fit_model("mlp", x, y, None, FAST.model_copy(update={"seed": 1}), True)[0], x, None)
    assert torch.equal(before, after) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_neighbour_matrix_links_adjacent_spots_of_one_section_only() -> None:
    grid = np.array([(x, y) for y in range(4) for x in range(4)], np.float64) * 10
    coords = np.vstack([grid, grid])  # two sections on the same coordinates
    sections = np.array(["a"] * 16 + ["b"] * 16)
    adjacency = neighbour_matrix(coords, sections, radius=1.5).toarray()
    assert np.allclose(adjacency.sum(axis=1), 1.0)
    assert not adjacency[:16, 16:].any() and not adjacency[16:, :16].any()
    # radius 1.5 spacings: a square (legacy ST) grid gives 8 neighbours inside, 3 at a corner
    assert (adjacency[5] > 0).sum() == 8 and (adjacency[0] > 0).sum() == 3
    lonely = neighbour_matrix(np.array([[0.0, 0.0], [5.0, 5.0]]), np.array(["a", "b"]))
    assert np.array_equal(lonely.toarray(), np.eye(2))


def test_neighbourhood_model_uses_adjacent_spots() -> None:
    rng = np.random.default_rng(0)
    grid = np.array([(x, y) for y in range(20) for x in range(20)], np.float64)
    sections = np.where(grid[:, 0] < 10, "a", "b")
    x = rng.normal(size=(400, 6))
    adjacency = neighbour_matrix(grid, sections)
    signal = adjacency @ x[:, :1]  # the target depends on the neighbours' embeddings, not the spot's own
    y = np.hstack([np.exp(2 * signal), np.ones((400, 1))])
    y /= y.sum(axis=1, keepdims=True)
    result = cross_validate(x, y, sections, sections, grid, ["mlp", "neighbourhood"], FAST, True, ["t", "u"])
    scores = {row["model"]: row["mean_pearson"] for row in result.summary()}
    assert scores["neighbourhood"] > 0.8 and scores["neighbourhood"] > scores["mlp"] + 0.3


def test_model_folder_round_trip(tmp_path: Path) -> None:
    x, y = _known_function(n=100)
    coords = np.array([(i % 10, i // 10) for i in range(100)], np.float64)
    sections = np.zeros(100, dtype=str)
    models, _ = fit_composition(x, y, coords, sections, ["ridge", "mlp", "neighbourhood"], FAST, True)
    config = CompositionConfig(encoder="pixels", encoder_identity="pixels@16px", targets=list("abcde"),
                               normalised=True, feature_dim=12, models=list(models), diameter=30, settings=FAST)
    save_composition_model(tmp_path / "model", config, models, n_spots=100)
    loaded_config, loaded = load_composition_model(tmp_path / "model")
    assert loaded_config == config
    adjacency = neighbour_matrix(coords, sections)
    for kind in models:
        before = predict_model(kind, models[kind], x, adjacency)
        assert np.array_equal(before, predict_model(kind, loaded[kind], x, adjacency))
    (tmp_path / "model" / "mlp.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="missing model file mlp.safetensors"):
        load_composition_model(tmp_path / "model")
    with pytest.raises(ModelFolderError, match="no histosynth.json"):
        load_composition_model(tmp_path)


def test_leave_one_section_out_never_leaks() -> None:
    sections = np.array(["A1", "A2", "B1", "A1", "B2", "A2", "B1"])
    patients = np.array([s[0] for s in sections])
    for groups, by in ((sections, "section"), (patients, "patient")):
        folds = leave_one_group_out(groups, by)
        assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(7))  # each spot tested once
        for fold in folds:
            assert set(groups[fold.test]) == {fold.name} and fold.name not in set(groups[fold.train])
            assert len(fold.train) + len(fold.test) == 7
            # sections of a held-out patient are never in training (serial sections of one tumour)
            assert not set(sections[fold.test]) & set(sections[fold.train])
    with pytest.raises(InputError, match="at least 2 sections"):
        leave_one_group_out(np.array(["A1", "A1"]))


def test_cross_validation_predicts_each_section_from_the_others(tmp_path: Path, monkeypatch) -> None:
    x, y = _known_function(n=300)
    sections = np.repeat(["s1", "s2", "s3"], 100)
    section_of = {row.tobytes(): s for row, s in zip(x, sections)}
    seen: list[set[str]] = []
    real_fit = crossval.fit_model

    def spy(kind, features, targets, neighbours, settings, normalised):
        seen.append({section_of[row.tobytes()] for row in features})
        return real_fit(kind, features, targets, neighbours, settings, normalised)

    monkeypatch.setattr(crossval, "fit_model", spy)
    first = cross_validate(x, y, sections, sections, None, ["ridge", "mlp"], FAST, True, list("abcde"),
                           work_dir=tmp_path)
    assert seen == [{"s2", "s3"}] * 2 + [{"s1", "s3"}] * 2 + [{"s1", "s2"}] * 2  # (ridge, mlp) per held-out s1..s3
    assert not np.isnan(first.predictions["mlp"]).any()
    assert all(row["mean_pearson"] > 0.8 for row in first.summary())
    assert len(list((tmp_path / "folds").glob("*.npz"))) == 6

    def refuse(*args, **kwargs):
        raise AssertionError("a finished fold was fitted again")

    monkeypatch.setattr(crossval, "fit_model", refuse)  # resume: every fold is read back, none refitted
    again = cross_validate(x, y, sections, sections, None, ["ridge", "mlp"], FAST, True, list("abcde"),
                           work_dir=tmp_path)
    assert np.array_equal(again.predictions["mlp"], first.predictions["mlp"])
    with pytest.raises(InputError, match="neighbourhood model needs spot coordinates"):
        cross_validate(x, y, sections, sections, None, ["neighbourhood"], FAST, True, list("abcde"))


def test_correlations_skip_constant_types() -> None:
    truth = np.column_stack([np.arange(5.0), np.full(5, 1e-9) + np.arange(5) * 1e-18, np.arange(5.0) ** 2])
    pred = np.column_stack([np.arange(5.0) * 2, np.arange(5.0), -np.arange(5.0)])
    r, rho = correlations(truth, pred, scale=np.array([4.0, 0.5, 16.0]))
    assert np.isclose(r[0], 1.0) and np.isnan(r[1]) and r[2] < -0.9 and np.isclose(rho[2], -1.0)
    assert parse_kinds("all") == ["ridge", "mlp", "neighbourhood"]
    with pytest.raises(InputError, match="unknown model gnn"):
        parse_kinds("mlp,gnn")


def test_spatial_map_puts_high_values_in_yellow_at_their_spots() -> None:
    from histosynth.composition.maps import PANEL, TITLE, spatial_map

    coords = np.array([(x, y) for y in range(4) for x in range(4)], np.float64)
    values = coords[:, 0]  # rises left to right
    image = spatial_map(coords, np.array(["s"] * 16), values, {"mlp": -values}, title="t")
    top = image.shape[0] - PANEL - TITLE  # the header strip sits above the one row of panels
    centres = (np.arange(4) + 0.45) * (PANEL - 4) / 3.9 + 2  # disc centres of a 4 x 4 grid in a panel
    row = image[top + TITLE + int(centres[1])]
    left, right = row[int(centres[0])], row[int(centres[3])]
    assert image.shape[1] > 2 * PANEL
    assert right[0] > 200 and right[1] > 200 and right[2] < 100  # yellow: highest truth on the right
    assert left[0] < 100 and left[2] > 60  # dark purple: lowest truth on the left
    mlp_right = row[PANEL + 6 + int(centres[3])]
    assert mlp_right[0] < 100  # the (negated) prediction is lowest on the right
