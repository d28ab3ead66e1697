"""Large-latent samplers: random-patch invariants, equivalence with the seed's sequential algorithm,
agreement with plain tile sampling when one window covers the latent, and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.sampling.large.samplers import LEVEL_PLANS, LargeLatentSampler, LargeSamplingSettings, LargeState
from histosynth.sampling.large.windows import EdgeCounts, grid_windows, offset_grid_level
from histosynth.sampling.sampler import GuidedDenoiser, build_scheduler

from tiny_models import tiny_denoiser_config


@pytest.fixture(scope="module")
def denoiser() -> ConditionalDenoiser:
    torch.manual_seed(0)
    return ConditionalDenoiser(tiny_denoiser_config()).eval()


@pytest.mark.parametrize("method", sorted(LEVEL_PLANS))
@pytest.mark.parametrize("shape", [(8, 8), (20, 13), (33, 47)])
def test_every_latent_pixel_is_claimed_exactly_once_per_level(shape: tuple[int, int], method: str) -> None:
    height, width = shape
    plan = LEVEL_PLANS[method](height, width, 8, np.random.default_rng(1))
    claimed = np.zeros(shape, dtype=int)
    for (y, x), claim in zip(plan.windows, plan.claims):
        assert 0 <= y <= height - 8 and 0 <= x <= width - 8  # clamped inside the latent
        assert claim.any()  # every window advances at least one pixel, so the level terminates
        claimed[y:y + 8, x:x + 8] += claim
    assert (claimed == 1).all()
    again = LEVEL_PLANS[method](height, width, 8, np.random.default_rng(1))
    assert again.windows == plan.windows


def test_greedy_and_offset_grid_plans_need_fewer_windows_than_random_centres() -> None:
    """The counts issue K expects at 1024 px (128 x 128 latent, 28 px windows): ~47 / ~37 / ~31 per level."""
    def mean_windows(plan) -> float:
        return float(np.mean([len(plan(128, 128, 28, np.random.default_rng([0, 2, level])).windows)
                              for level in range(10)]))

    random, greedy, grid = (mean_windows(LEVEL_PLANS[m]) for m in ("random-patch", "greedy-patch", "offset-grid"))
    assert grid < greedy < random
    assert 25 <= grid <= 36 and greedy <= 0.85 * random  # a grid needs between 5x5 and 6x6 windows


def test_offset_grid_moves_its_window_edges_between_levels() -> None:
    corners = {tuple(offset_grid_level(64, 64, 8, np.random.default_rng([0, 2, level])).windows[1])
               for level in range(6)}
    assert len(corners) > 1


def test_grid_windows_reach_the_far_edges() -> None:
    windows = grid_windows(20, 13, 8, 4)
    assert {y for y, _ in windows} == {0, 4, 8, 12} and {x for _, x in windows} == {0, 4, 5}


def _seed_reference(denoiser, settings: LargeSamplingSettings, latent: np.ndarray, conditions: np.ndarray,
                    label: int, seed: int) -> np.ndarray:
    """DiffInfinite's random patch sampler written sequentially: a time state per pixel, a stored
    copy of the previous level, ahead pixels restored into each window before its step."""
    scheduler = build_scheduler(denoiser.config, "ddim")
    scheduler.set_timesteps(settings.steps)
    guided = GuidedDenoiser(denoiser, settings.guidance)
    size = denoiser.config.latent_size
    _, height, width = latent.shape
    x = latent.copy()
    time_state = np.zeros((height, width), dtype=int)
    for level, t in enumerate(scheduler.timesteps):
        stored = x.copy()  # every pixel is at this level now
        rng = np.random.default_rng([seed, 2, level])
        while (time_state == level).any():
            candidates = np.flatnonzero(time_state == level)
            cy, cx = divmod(int(candidates[rng.integers(len(candidates))]), width)
            y, x0 = min(max(cy - size // 2, 0), height - size), min(max(cx - size // 2, 0), width - size)
            window = x[:, y:y + size, x0:x0 + size].copy()
            ahead = time_state[y:y + size, x0:x0 + size] > level
            window[:, ahead] = stored[:, y:y + size, x0:x0 + size][:, ahead]
            assert (time_state[y:y + size, x0:x0 + size] >= level).all()
            with torch.inference_mode():
                inp = torch.from_numpy(window)[None]
                cond = torch.from_numpy(conditions[:, y:y + size, x0:x0 + size].copy())[None]
                out = guided(inp, t, torch.tensor([label]), cond)
                stepped = scheduler.step(out, t, inp).prev_sample[0].numpy()
            lagging = ~ahead
            x[:, y:y + size, x0:x0 + size][:, lagging] = stepped[:, lagging]
            time_state[y:y + size, x0:x0 + size][lagging] += 1
        assert (time_state == level + 1).all()
    return x


def _conditions(height: int, width: int) -> np.ndarray:
    gland = (np.add.outer(np.arange(height), np.arange(width)) % 9 < 4).astype(np.float32)
    return np.stack([1 - gland, gland])


def test_random_patch_equals_the_seeds_sequential_algorithm(denoiser) -> None:
    settings = LargeSamplingSettings(method="random-patch", steps=3, guidance=2.0, batch_size=5)
    sampler = LargeLatentSampler(denoiser, settings)
    state = sampler.initial_state(19, 23, seed=4)
    conditions = _conditions(19, 23)
    expected = _seed_reference(denoiser, settings, state.latent.copy(), conditions, 1, seed=4)
    result = sampler.run(state, 1, conditions, seed=4)
    np.testing.assert_allclose(result.latent, expected, atol=1e-5)
    assert result.units_done == 3 and result.evaluations >= 3 * 9  # at least ceil(19/8) * ceil(23/8) per level


@pytest.mark.parametrize("method", ["random-patch", "greedy-patch", "offset-grid", "multidiffusion", "sliding-window"])
def test_one_window_over_the_whole_latent_is_plain_sampling(denoiser, method: str) -> None:
    settings = LargeSamplingSettings(method=method, steps=4, guidance=2.0)
    sampler = LargeLatentSampler(denoiser, settings)
    state = sampler.initial_state(8, 8, seed=3)
    conditions = _conditions(8, 8)
    scheduler = build_scheduler(denoiser.config, "ddim")
    scheduler.set_timesteps(4)
    guided = GuidedDenoiser(denoiser, 2.0)
    x = torch.from_numpy(state.latent.copy())[None]
    with torch.inference_mode():
        for t in scheduler.timesteps:
            x = scheduler.step(guided(x, t, torch.tensor([2]), torch.from_numpy(conditions)[None]), t, x).prev_sample
    result = sampler.run(state, 2, conditions, seed=3)
    np.testing.assert_allclose(result.latent, x[0].numpy(), atol=1e-5)
    assert result.evaluations == 4


def test_sliding_window_keeps_generated_pixels_and_counts_evaluations(denoiser) -> None:
    sampler = LargeLatentSampler(denoiser, LargeSamplingSettings(method="sliding-window", steps=3, stride=4))
    state = sampler.initial_state(8, 16, seed=0)
    conditions = _conditions(8, 16)
    seen = []
    result = sampler.run(state, 0, conditions, seed=0, on_unit=lambda s: seen.append(s.latent.copy()))
    assert sampler.total_units(8, 16) == 3 and result.evaluations == 3 * 3
    np.testing.assert_array_equal(seen[0][:, :, :8], result.latent[:, :, :8])  # later windows only add pixels
    assert result.known.all()


@pytest.mark.parametrize("method", ["random-patch", "greedy-patch", "offset-grid", "multidiffusion", "sliding-window"])
def test_a_run_stopped_after_a_unit_resumes_to_the_same_latent(denoiser, method: str) -> None:
    settings = LargeSamplingSettings(method=method, steps=3, eta=0.5, stride=4)
    sampler = LargeLatentSampler(denoiser, settings)
    conditions = _conditions(12, 16)
    full = sampler.run(sampler.initial_state(12, 16, seed=5), 1, conditions, seed=5)
    saved: list[dict] = []

    def stop_after_first(state: LargeState) -> None:
        saved.append({k: np.array(v, copy=True) for k, v in state.arrays().items()})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sampler.run(sampler.initial_state(12, 16, seed=5), 1, conditions, seed=5, on_unit=stop_after_first)
    resumed = sampler.run(LargeState.from_arrays(saved[0]), 1, conditions, seed=5)
    np.testing.assert_allclose(resumed.latent, full.latent, atol=1e-6)
    assert resumed.evaluations == full.evaluations
    np.testing.assert_array_equal(resumed.edges.rows, full.edges.rows)


def test_edge_counts_ignore_the_image_border_and_scale_to_pixels() -> None:
    edges = EdgeCounts.empty(10, 12)
    edges.add([(0, 0), (2, 4)], 8)
    assert edges.rows.tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    assert edges.cols[[4, 8]].tolist() == [1, 1] and edges.cols[[0, 12]].tolist() == [0, 0]
    pixels = edges.to_pixels(8)
    assert len(pixels.rows) == 81 and pixels.rows[16] == 1 and pixels.rows.sum() == 2
