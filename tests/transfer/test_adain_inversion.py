"""Class-masked AdaIN and inversion to noise: exact statistics, every class visited, exact
reconstruction from edit-friendly noise maps."""

from __future__ import annotations

import pytest
import torch

from histosynth.errors import InputError
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.sampling.sampler import build_scheduler
from histosynth.sampling.transfer.adain import adain, check_classes, classes_for_step, masked_adain
from histosynth.sampling.transfer.inversion import ddim_invert, edit_friendly_invert, sample_with_noise_maps

from tiny_models import tiny_denoiser_config


def _three_class_masks() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(1, 12, 12, dtype=torch.long)
    target[:, 4:8] = 1
    target[:, 8:] = 2
    reference = torch.zeros(1, 12, 12, dtype=torch.long)
    reference[:, :, 3:9] = 1
    reference[:, :, 9:] = 2
    return target, reference


def test_masked_adain_matches_each_class_exactly_and_keeps_other_pixels() -> None:
    torch.manual_seed(0)
    x, reference = torch.randn(1, 4, 12, 12), torch.randn(1, 4, 12, 12) * 3 + 1
    target_mask, reference_mask = _three_class_masks()
    out = masked_adain(x, target_mask, reference, reference_mask, classes=[0, 1, 2], eps=0.0)
    for c in range(3):
        region, ref_region = target_mask[0] == c, reference_mask[0] == c
        torch.testing.assert_close(out[0][:, region].mean(1), reference[0][:, ref_region].mean(1), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[0][:, region].std(1, unbiased=False),
                                   reference[0][:, ref_region].std(1, unbiased=False), atol=1e-4, rtol=1e-4)
    only_one = masked_adain(x, target_mask, reference, reference_mask, classes=[1])
    untouched = target_mask[0] != 1
    torch.testing.assert_close(only_one[0][:, untouched], x[0][:, untouched])


def test_plain_adain_matches_whole_image_statistics() -> None:
    torch.manual_seed(1)
    x, reference = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8) * 0.5 - 2
    out = adain(x, reference, eps=0.0)
    torch.testing.assert_close(out.mean((2, 3)), reference.mean((2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((2, 3), unbiased=False), reference.std((2, 3), unbiased=False), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_alternation_visits_every_class_once_per_cycle_and_all_mode_matches_all(n_classes: int) -> None:
    ids = list(range(n_classes))
    seen = [classes_for_step(step, ids) for step in range(n_classes)]
    assert sorted(c for step in seen for c in step) == ids and all(len(s) == 1 for s in seen)
    assert classes_for_step(0, [0, 2]) == [0] and classes_for_step(3, [0, 2]) == [2]  # step mod C picks
    assert classes_for_step(7, ids, "all") == ids


def test_a_target_class_missing_from_the_appearance_is_refused() -> None:
    target = torch.tensor([[0, 1], [2, 2]])
    with pytest.raises(InputError, match=r"class\(es\) \[2\]"):
        check_classes(target, torch.tensor([[0, 1], [1, 0]]), "masks/t7.png")
    assert check_classes(target, torch.tensor([[0, 1], [2, 0]])) == [0, 1, 2]


@pytest.fixture(scope="module")
def model_fn():
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(tiny_denoiser_config()).eval()
    labels, fractions = torch.tensor([1]), torch.zeros(1, 2, 8, 8)
    return denoiser.config, lambda x, t: denoiser(x, t.expand(len(x)), labels, fractions)


def test_edit_friendly_noise_maps_reproduce_the_latent_exactly(model_fn) -> None:
    config, model = model_fn
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    noise = edit_friendly_invert(model, latent, config, steps=6, generator=torch.Generator().manual_seed(4))
    assert len(noise.noise_maps) == 6
    torch.testing.assert_close(sample_with_noise_maps(model, noise, config, 6), latent, atol=1e-4, rtol=0)
    calls = []
    sample_with_noise_maps(model, noise, config, 6, on_step=lambda i, x: calls.append(i) or x)
    assert calls == list(range(6))


def test_ddim_inversion_then_sampling_returns_near_the_latent(model_fn) -> None:
    config, _ = model_fn
    scheduler = build_scheduler(config, "ddim")
    alphas, scale = scheduler.alphas_cumprod, 0.7

    def gaussian_oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact v-prediction for data ~ N(0, scale^2): a smooth model, so the ODE round trip is tight."""
        a = alphas[int(t)]
        x0 = scale**2 * a.sqrt() * x / (a * scale**2 + 1 - a)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * scale
    start = ddim_invert(gaussian_oracle, latent, config, steps=50)
    scheduler.set_timesteps(50)
    x = start
    for t in scheduler.timesteps:
        x = scheduler.step(gaussian_oracle(x, t), t, x).prev_sample
    assert (x - latent).abs().mean() < 0.1 * latent.abs().mean()  # 5% measured: the inversion approximation
    # for Gaussian data the probability-flow ODE is a pure rescaling: data ~ N(0, scale^2) -> noise ~ N(0, 1)
    assert (start - latent / scale).abs().mean() < 0.1 * (latent / scale).abs().mean()


def test_edit_friendly_inversion_stays_on_the_latents_device(model_fn) -> None:
    """The noise comes from a CPU generator (same maps on any device) but every tensor the model sees, and
    every map, lives where the latent does ("meta" stands in for a GPU here)."""
    config, _ = model_fn
    seen = []

    def zero_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.device.type)
        return torch.zeros_like(x)

    latent = torch.empty(1, 4, 8, 8, device="meta")
    noise = edit_friendly_invert(zero_model, latent, config, steps=4, generator=torch.Generator().manual_seed(4))
    assert seen == ["meta"] * 4
    assert {m.device.type for m in noise.noise_maps} == {"meta"} and noise.start.device.type == "meta"
