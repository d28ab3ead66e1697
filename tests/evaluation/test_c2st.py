"""Classifier two-sample test on synthetic textures, and the fidelity verdict rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from histosynth.errors import InputError
from histosynth.evaluation.c2st import C2STConfig, binomial_summary, classifier_two_sample_test
from histosynth.evaluation.verdict import fidelity_verdict

FAST = C2STConfig(size=32, steps=60, seed=0)


def _textures(n: int, sigma: float, seed: int, size: int = 32) -> np.ndarray:
    """Pink noise-like textures: unit-contrast Gaussian noise blurred by ``sigma`` px, random tint. (n, H, W, 3)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, size, size, 3))
    if sigma:
        noise = gaussian_filter(noise, sigma=(0, sigma, sigma, 0), mode="wrap")
    noise /= noise.std(axis=(1, 2, 3), keepdims=True)  # equal contrast: only sharpness differs
    tint = np.array([200, 120, 170]) + rng.normal(0, 10, size=(n, 1, 1, 3))
    return np.clip(tint + 30 * noise, 0, 255).astype(np.uint8)


def test_same_distribution_is_indistinguishable() -> None:
    result = classifier_two_sample_test(_textures(60, 1.5, seed=1), _textures(60, 1.5, seed=2), FAST)
    assert result.n_heldout == 60 and result.n_train == 60
    assert result.ci_low <= 0.5 <= result.ci_high
    assert result.p_value > 0.05  # fails ~5% of seeds by design; this seed is fixed


def test_sharp_vs_blurred_textures_are_told_apart() -> None:
    result = classifier_two_sample_test(_textures(60, 0, seed=3), _textures(60, 1.5, seed=4), FAST)
    assert result.accuracy >= 0.95 and result.ci_low > 0.8 and result.p_value < 1e-6
    assert result.real_accuracy >= 0.9 and result.synthetic_accuracy >= 0.9


def test_balances_sides_and_accepts_channels_first_torch_tensors() -> None:
    real = torch.from_numpy(_textures(50, 0, seed=5)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    result = classifier_two_sample_test(real, _textures(24, 1.5, seed=6, size=40), FAST)  # other size too
    assert (result.n_train, result.n_heldout) == (24, 24)  # 24 per side, split 12/12
    assert (result.n_real_available, result.n_synthetic_available) == (50, 24)


def test_same_seed_same_result_other_seed_other_split() -> None:
    real, synth = _textures(40, 1.0, seed=7), _textures(40, 1.5, seed=8)
    config = C2STConfig(size=32, steps=20, seed=3)
    first, second = (classifier_two_sample_test(real, synth, config).to_dict() for _ in range(2))
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    calls = []
    other = classifier_two_sample_test(real, synth, config.model_copy(update={"seed": 4}),
                                       on_step=lambda step, total: calls.append((step, total))).to_dict()
    assert calls == [(s, 20) for s in range(1, 21)]
    assert other["seed"] == 4 and (other["n_correct"], other["real_accuracy"]) != (first["n_correct"], first["real_accuracy"])


def test_too_few_or_malformed_tiles_fail_with_one_line() -> None:
    with pytest.raises(InputError, match="at least 10 tiles per side, got 4 real and 60 synthetic"):
        classifier_two_sample_test(_textures(4, 0, 0), _textures(60, 0, 1), FAST)
    with pytest.raises(InputError, match="must be uint8"):
        classifier_two_sample_test(_textures(20, 0, 0).astype(np.float32), _textures(20, 0, 1), FAST)
    with pytest.raises(InputError, match=r"\(N, H, W, 3\)"):
        classifier_two_sample_test(_textures(20, 0, 0)[..., 0], _textures(20, 0, 1), FAST)


def test_binomial_summary_matches_known_values() -> None:
    accuracy, low, high, p = binomial_summary(50, 100)
    assert accuracy == 0.5 and low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert p == pytest.approx(0.5397, abs=1e-3)  # P(X >= 50), X ~ Binomial(100, 0.5)
    assert binomial_summary(100, 100)[3] == pytest.approx(0.5**100)


def _audit(accuracy: float | None, ci: tuple[float, float] = (0.45, 0.55), precision: float = 0.7, recall: float = 0.6,
           floor_accuracy: float | None = None) -> dict:
    def c2st(acc):
        return {"accuracy": acc, "ci_low": ci[0], "ci_high": ci[1], "p_value": 0.3, "n_heldout": 400}

    return {"synthetic_vs_heldout": {"fid": 1.0, "precision": precision, "recall": recall},
            "train_subset_vs_heldout": {"fid": 1.0, "precision": 0.75, "recall": 0.65},
            "c2st": None if accuracy is None else c2st(accuracy),
            "c2st_floor": None if floor_accuracy is None else c2st(floor_accuracy)}


def test_verdict_comes_from_c2st_and_precision_recall_not_fid() -> None:
    assert fidelity_verdict(_audit(0.5)).level == "pass"
    # FID at the floor does not rescue tiles a classifier tells apart
    told_apart = fidelity_verdict(_audit(0.97, ci=(0.95, 0.98)))
    assert told_apart.level == "fail" and "C2ST accuracy 0.970 [0.950, 0.980]" in told_apart.reasons[0]
    assert fidelity_verdict(_audit(0.56, ci=(0.53, 0.59))).level == "pass"  # within the 0.05 margin of chance
    assert fidelity_verdict(_audit(0.5, precision=0.5)).level == "fail"  # off the manifold: 0.5 < 0.8 * 0.75
    low_recall = fidelity_verdict(_audit(0.5, recall=0.3))
    assert low_recall.level == "warn" and low_recall.headline.startswith("Realistic, but less varied")
    assert fidelity_verdict(_audit(None)).level == "warn"  # skipped C2ST: never a pass on P/R alone
    assert fidelity_verdict(_audit(0.6, ci=(0.3, 0.85))).level == "warn"  # too few tiles to have failed
    # real splits that differ (floor 0.7) move chance: 0.72 [0.68, 0.76] is as far as real is from real
    assert fidelity_verdict(_audit(0.72, ci=(0.68, 0.76), floor_accuracy=0.7)).level == "pass"
    assert fidelity_verdict(_audit(0.72, ci=(0.68, 0.76))).level == "fail"
