"""The evaluation segmenter: learns an easy task, exact Dice, resolution handling, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosynth.evaluation.segmentation import (
    SegmentationTrainConfig,
    SegmentationUNet,
    dice_per_image,
    predict_masks,
    train_segmenter,
)

SIZE = 32


def disc_tiles(n: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy dark tiles with one bright disc each (random centre and radius); mask = the disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.integers(20, 90, (n, 3, size, size)).astype(np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        radius = rng.uniform(0.15, 0.3) * size
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        masks[i, disc] = 1
        images[i][:, disc] = rng.integers(170, 240, (3, int(disc.sum())))
    return torch.from_numpy(images), torch.from_numpy(masks)


def _config(**overrides) -> SegmentationTrainConfig:
    return SegmentationTrainConfig(**{"size": SIZE, "steps": 60, "batch_size": 8, **overrides})


@pytest.fixture(scope="module")
def trained() -> SegmentationUNet:
    images, masks = disc_tiles(16, seed=0)
    return train_segmenter(images, masks, _config())


def test_learns_discs_on_held_out_tiles(trained: SegmentationUNet) -> None:
    images, masks = disc_tiles(8, seed=1)
    dice = dice_per_image(predict_masks(trained, images, SIZE), masks)
    assert dice.shape == (8,)
    assert dice.mean() > 0.8, dice


def test_predict_masks_returns_input_resolution_uint8(trained: SegmentationUNet) -> None:
    images, masks = disc_tiles(3, seed=2, size=48)
    pred = predict_masks(trained, images, SIZE, batch_size=2)
    assert pred.shape == (3, 48, 48) and pred.dtype == torch.uint8
    assert set(np.unique(pred.numpy())) <= {0, 1}
    assert dice_per_image(pred, masks).mean() > 0.6  # upsampled logits still land on the discs


def test_dice_exact_values() -> None:
    target = np.zeros((5, 4, 4), np.uint8)
    pred = np.zeros((5, 4, 4), np.uint8)
    target[0, :2], pred[0, :2] = 1, 1  # identical: 1
    target[1, :2], pred[1, :1] = 1, 1  # |P|=4, |T|=8, overlap 4: 8/12
    target[2, :1], pred[2, 3:] = 1, 1  # disjoint: 0
    # image 3: both empty, 1 by definition
    target[4, :2] = 1  # prediction empty, target not: 0
    expected = [1.0, 2 / 3, 0.0, 1.0, 0.0]
    np.testing.assert_allclose(dice_per_image(pred, target), expected)
    np.testing.assert_allclose(dice_per_image(target, pred), expected)  # symmetric
    assert dice_per_image(np.zeros((4, 4)), np.ones((4, 4))).tolist() == [0.0]  # a single H,W image


def test_dice_foreground_class_and_tensors() -> None:
    target = torch.tensor([[[0, 2], [2, 1]]], dtype=torch.uint8)
    pred = torch.tensor([[[2, 2], [1, 1]]], dtype=torch.uint8)
    np.testing.assert_allclose(dice_per_image(pred, target, foreground_class=2), [2 * 1 / (2 + 2)])
    np.testing.assert_allclose(dice_per_image(pred, target, foreground_class=1), [2 * 1 / (2 + 1)])
    with pytest.raises(ValueError):
        dice_per_image(pred, target[:, :1])


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    images, masks = disc_tiles(6, seed=3)
    config = _config(steps=3, batch_size=4)
    state = torch.random.get_rng_state()
    first = train_segmenter(images, masks, config).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    second = train_segmenter(images, masks, config).state_dict()
    other = train_segmenter(images, masks, config.model_copy(update={"seed": 1})).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_multiclass_shapes_and_parameter_count() -> None:
    assert 0.4e6 < sum(p.numel() for p in SegmentationUNet().parameters()) < 0.6e6  # ~0.48M as in BASELINES
    images, masks = disc_tiles(4, seed=4, size=16)
    masks[:, :, :4] = 2
    steps = []
    model = train_segmenter(images, masks, _config(size=16, steps=2, batch_size=4, num_classes=3),
                            on_step=lambda step, loss: steps.append((step, loss)))
    assert [s for s, _ in steps] == [1, 2] and all(np.isfinite(loss) for _, loss in steps)
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    pred = predict_masks(model, images, 16)
    assert pred.shape == (4, 16, 16) and int(pred.max()) <= 2


def test_rejects_masks_with_unknown_classes() -> None:
    images, masks = disc_tiles(2, seed=5)
    masks[0, 0, 0] = 2
    with pytest.raises(ValueError, match="class id 2"):
        train_segmenter(images, masks, _config(steps=1))
