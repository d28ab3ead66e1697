"""Linear probe and gated-attention MIL on synthetic embeddings: they learn what they should, fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosynth.errors import InputError
from histosynth.evaluation.abmil import (
    ABMILConfig,
    Bag,
    GatedAttentionMIL,
    _pad,
    evaluate_abmil,
    make_bags,
    predict_bags,
    train_abmil,
)
from histosynth.evaluation.probe import linear_probe

DIM = 12
NUM_CLASSES = 3
SHIFT = 4.0


def _key_tile_bags(n: int, seed: int) -> tuple[list[Bag], list[int]]:
    """Bags of 6-20 noise tiles; exactly one "key" tile carries the label: +SHIFT on dimension ``label``.

    Mean pooling dilutes the key tile by the bag size; attention can find it. Returns the bags and
    the index of each bag's key tile.
    """
    rng = np.random.default_rng(seed)
    bags, keys = [], []
    for i in range(n):
        label = i % NUM_CLASSES
        features = rng.normal(size=(int(rng.integers(6, 21)), DIM))
        key = int(rng.integers(len(features)))
        features[key, label] += SHIFT
        bags.append(Bag(features, label, f"bag{i}"))
        keys.append(key)
    return bags, keys


@pytest.fixture(scope="module")
def trained() -> tuple[GatedAttentionMIL, list[Bag], list[int]]:
    train, _ = _key_tile_bags(150, seed=0)
    val, _ = _key_tile_bags(30, seed=1)
    test, keys = _key_tile_bags(60, seed=2)
    model, epoch, val_score = train_abmil(train, val, NUM_CLASSES, ABMILConfig(epochs=40, seed=0))
    assert 1 <= epoch <= 40 and val_score > 0.8
    return model, test, keys


def test_abmil_learns_a_label_carried_by_one_tile(trained) -> None:
    model, test, _ = trained
    probabilities, _ = predict_bags(model, test)
    labels = np.array([b.label for b in test])
    assert (probabilities.argmax(1) == labels).mean() >= 0.9
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)


def test_abmil_attends_to_the_key_tile(trained) -> None:
    model, test, keys = trained
    _, attention = predict_bags(model, test)
    found = np.mean([int(np.argmax(a) == key) for a, key in zip(attention, keys)])
    assert found >= 0.8


def test_attention_sums_to_one_per_bag_and_is_zero_on_padding() -> None:
    bags, _ = _key_tile_bags(5, seed=3)
    model = GatedAttentionMIL(DIM, NUM_CLASSES, ABMILConfig())
    x, mask, _ = _pad(bags)
    assert x.shape[1] == max(len(b.features) for b in bags) and not mask.all()  # really padded
    _, attention = model.eval()(x, mask)
    assert torch.allclose(attention.sum(1), torch.ones(len(bags)), atol=1e-6)
    assert (attention[~mask] == 0).all()
    _, per_bag = predict_bags(model, bags)
    assert [len(a) for a in per_bag] == [len(b.features) for b in bags]
    assert all(abs(a.sum() - 1.0) < 1e-5 for a in per_bag)


def test_abmil_is_seeded_and_leaves_the_global_rng_alone() -> None:
    train, _ = _key_tile_bags(30, seed=4)
    val, _ = _key_tile_bags(9, seed=5)
    config = ABMILConfig(epochs=3, seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = evaluate_abmil(train, val, val, NUM_CLASSES, config)
    assert torch.equal(torch.get_rng_state(), state)
    second = evaluate_abmil(train, val, val, NUM_CLASSES, config)
    assert (first.best_epoch, first.val_balanced_accuracy) == (second.best_epoch, second.val_balanced_accuracy)
    assert first.n_train == 30 and first.n_test == 9


def test_make_bags_groups_by_case_and_handles_mixed_cases() -> None:
    features = np.arange(12, dtype=float).reshape(6, 2)
    bags = make_bags(features, [0, 0, 1, 1, 2, 2], ["a", "a", "b", "b", "c", "c"])
    assert [(b.name, b.label, len(b.features)) for b in bags] == [("a", 0, 2), ("b", 1, 2), ("c", 2, 2)]
    assert np.array_equal(bags[1].features, features[2:4])
    with pytest.raises(InputError, match="group 'a' has tiles of several classes"):
        make_bags(features, [0, 1, 1, 1, 2, 2], ["a", "a", "b", "b", "c", "c"])
    split = make_bags(features, [0, 1, 1, 1, 2, 2], ["a", "a", "b", "b", "c", "c"], mixed="split")
    assert [(b.name, b.label) for b in split] == [("a/0", 0), ("a/1", 1), ("b", 1), ("c", 2)]
    with pytest.raises(InputError, match="one label and one group per feature row"):
        make_bags(features, [0, 1], ["a"] * 6)


@pytest.mark.parametrize(("bad", "message"), [
    ([], "train split has no bags"),
    ([Bag(np.zeros((0, DIM)), 0, "empty")], "at least one tile"),
    ([Bag(np.full((2, DIM), np.nan), 0, "nan")], "NaN or infinite"),
    ([Bag(np.zeros((2, DIM)), 5, "far")], "label 5, outside 0..2"),
    ([Bag(np.zeros((2, DIM)), 0, "x"), Bag(np.zeros((2, DIM + 1)), 1, "wide")], "13-d features, expected 12"),
    ([Bag(np.zeros((2, DIM)), 1, "x"), Bag(np.ones((2, DIM)), 1, "y")], "fewer than two classes"),
])
def test_abmil_bad_inputs_fail_with_one_line(bad: list[Bag], message: str) -> None:
    val, _ = _key_tile_bags(3, seed=6)
    with pytest.raises(InputError, match=message):
        train_abmil(bad, val, NUM_CLASSES, ABMILConfig(epochs=1))


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes separated along one random direction, in 20-d noise (linearly separable)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).normal(size=20)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 20)) * 0.5 + np.outer(labels * 3.0, direction / np.linalg.norm(direction))
    return x, labels


def test_probe_recovers_a_linearly_separable_label() -> None:
    result = linear_probe(_separable(150, 0), _separable(60, 1), _separable(90, 2))
    assert result.test_balanced_accuracy > 0.95 and result.val_balanced_accuracy > 0.95
    assert set(result.val_scores) == {"0.001", "0.01", "0.1", "1", "10"}
    assert result.val_balanced_accuracy == max(result.val_scores.values())
    assert (result.n_train, result.n_val, result.n_test) == (150, 60, 90)


def test_probe_scores_chance_on_a_label_unrelated_to_features() -> None:
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(n, 20)) for n in (200, 100, 300)]
    y = [rng.integers(0, 2, n) for n in (200, 100, 300)]
    result = linear_probe(*zip(x, y))
    assert 0.35 < result.test_balanced_accuracy < 0.65


@pytest.mark.parametrize(("train", "message"), [
    ((np.zeros((4, 3)), [0, 1, 0]), "4 feature rows but 3 labels"),
    ((np.zeros(4), [0, 1, 0, 1]), "2-D"),
    ((np.full((4, 3), np.inf), [0, 1, 0, 1]), "NaN or infinite"),
    ((np.zeros((4, 3)), [0, 0, 0, 0]), "fewer than two classes"),
    ((np.zeros((4, 3)), [0, -1, 0, 1]), "non-negative class ids"),
    ((np.zeros((4, 5)), [0, 1, 0, 1]), "differ in dimension"),
    ((np.zeros((0, 3)), []), "train split has no tiles"),
])
def test_probe_bad_inputs_fail_with_one_line(train, message: str) -> None:
    split = (np.zeros((4, 3)), [0, 1, 0, 1])
    with pytest.raises(InputError, match=message):
        linear_probe(train, split, split)
