"""DeepCache-style feature reuse (``SamplingSettings.feature_reuse``): the split is exact, the schedule skips
the deep blocks, the approximation stays bounded, the default is the exact path, bad values are one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.errors import InputError
from histosynth.models.conditioning import mask_fractions
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.models.prototype_classifier import PrototypeClassifier, PrototypeClassifierConfig
from histosynth.sampling.feature_cache import FeatureReuse, check_reusable
from histosynth.sampling.masks import procedural_mask
from histosynth.sampling.sampler import SamplingSettings, TileSampler

from testkit import run_cli
from tiny_models import TILE, tiny_denoiser_config

#: Relative L2 distance of the final latents from the exact path's (UniPC 20, w 1.5, float32, 4 tiles of the
#: random tiny model), measured at 0.0200 (interval 2) and 0.0092 (interval 3: not monotone in a random model);
#: bounds with 2x margin. (The shipped model, 2 tiles: 0.068 and 0.111.)
BOUNDS = {2: 0.04, 3: 0.02}

ARCHITECTURES = {
    "tiny": {},
    "shipped-layout": {"block_out_channels": (16, 32, 32), "attention_levels": (False, False, True)},
    "two-layers-per-block": {"layers_per_block": 2},
    "attention-first": {"attention_levels": (True, True)},
    "mask-model": {"mask_conditioning": "none", "latent_channels": 2},
    "embedding": {"embedding_dim": 12, "embedding_hidden": 8},
}


def _sampler(folder: Path, **settings) -> TileSampler:
    exact = {"steps": 20, "sampler": "unipc", "guidance": 1.5, "precision": "float32"}
    return TileSampler(LatentDiffusionModel.load(folder), SamplingSettings(**{**exact, **settings}))


def _conditions(n: int) -> tuple[list[np.ndarray], torch.Tensor, torch.Tensor]:
    masks = [procedural_mask(TILE, 0.5, i) for i in range(n)]
    fractions = mask_fractions(torch.from_numpy(np.stack(masks)), torch.ones(n, dtype=torch.bool), 2, 4)
    return masks, torch.arange(n) % 3, fractions


def _denoise(folder: Path, n: int = 4, **settings) -> tuple[torch.Tensor, TileSampler]:
    sampler = _sampler(folder, **settings)
    _, labels, fractions = _conditions(n)
    return sampler.denoise(sampler.initial_noise(list(range(1, n + 1))), labels, fractions), sampler


def _count_calls(module: torch.nn.Module, batches: list[int]) -> torch.utils.hooks.RemovableHandle:
    """Append the batch size of every call of ``module`` to ``batches``."""
    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        batches.append(len(args[0] if args else kwargs["hidden_states"]))

    return module.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_partial_forward_with_a_fresh_cache_equals_the_full_forward(name: str) -> None:
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(tiny_denoiser_config().model_copy(update=ARCHITECTURES[name])).eval()
    config = denoiser.config
    extra: tuple = ()
    if config.embedding_dim:
        torch.nn.init.normal_(denoiser.embedding_proj[-1].weight)  # not the zero init: the embedding acts
        extra = (torch.randn(3, config.embedding_dim), torch.tensor([False, True, False]))
    channels = config.num_mask_classes if config.mask_conditioning == "concat" else 0
    inputs = (torch.randn(3, config.latent_channels, 8, 8), torch.tensor(600).expand(3), torch.tensor([0, 2, 3]),
              torch.rand(3, channels, 8, 8), *extra)
    reuse = FeatureReuse(denoiser, 2)
    with torch.inference_mode():
        full = reuse(*inputs)
        reuse.begin_step(1)
        partial = reuse(*inputs)
        exact = denoiser(*inputs)
    assert (reuse.full_steps, reuse.partial_steps) == (1, 1)
    assert torch.equal(full, exact)  # a full step is diffusers' own forward
    assert torch.allclose(partial, full, atol=1e-5)
    assert float(full.abs().mean()) > 0.05


def test_interval_one_is_the_exact_path(tiny_model_dir: Path) -> None:
    masks, labels, _ = _conditions(2)
    default = _sampler(tiny_model_dir, steps=4).sample(labels.tolist(), masks, [5, 6])
    sampler = _sampler(tiny_model_dir, steps=4, feature_reuse=1)
    assert np.array_equal(sampler.sample(labels.tolist(), masks, [5, 6]), default)
    assert sampler.feature_reuse is None  # the wrapper is not even built
    one_step, _ = _denoise(tiny_model_dir, steps=1, feature_reuse=3)  # only the first (full) step
    assert torch.equal(one_step, _denoise(tiny_model_dir, steps=1)[0])


@pytest.mark.parametrize("interval", sorted(BOUNDS))
def test_reuse_moves_the_result_by_a_bounded_nonzero_amount(tiny_model_dir: Path, interval: int) -> None:
    exact, _ = _denoise(tiny_model_dir)
    approx, sampler = _denoise(tiny_model_dir, feature_reuse=interval)
    distance = float((approx - exact).norm() / exact.norm())
    assert 0 < distance <= BOUNDS[interval], distance
    assert sampler.feature_reuse.full_steps == -(-20 // interval)


@pytest.mark.parametrize(("interval", "full"), [(1, 6), (2, 3), (3, 2), (4, 2), (6, 1)])
def test_the_deep_blocks_run_only_on_full_steps(tiny_model_dir: Path, interval: int, full: int) -> None:
    sampler = _sampler(tiny_model_dir, steps=6, feature_reuse=interval)
    unet = sampler.model.denoiser.unet
    mid, second_down, first_down = [], [], []
    handles = [_count_calls(unet.mid_block, mid), _count_calls(unet.down_blocks[1], second_down),
               _count_calls(unet.down_blocks[0], first_down)]
    try:
        _, labels, fractions = _conditions(2)
        sampler.denoise(sampler.initial_noise([1, 2]), labels, fractions)
    finally:
        for handle in handles:
            handle.remove()
    assert len(mid) == len(second_down) == len(first_down) == full  # partial steps call resnets, not the block
    assert mid == [4] * full  # both guidance branches in one batched forward, sharing the cache
    if interval > 1:
        assert (sampler.feature_reuse.full_steps, sampler.feature_reuse.partial_steps) == (full, 6 - full)


def test_a_guidance_interval_edge_forces_a_full_step(tiny_model_dir: Path) -> None:
    """DDIM 4 trailing steps are t = 999, 749, 499, 249; guiding in (0, 0.6) switches the batch from the plain
    conditional forward (2 rows) to the guided one (4 rows) at step 2, which must not reuse step 0's cache."""
    sampler = _sampler(tiny_model_dir, steps=4, sampler="ddim", guidance=3.0, guidance_interval=(0.0, 0.6),
                       feature_reuse=3)
    mid: list[int] = []
    handle = _count_calls(sampler.model.denoiser.unet.mid_block, mid)
    try:
        _, labels, fractions = _conditions(2)
        sampler.denoise(sampler.initial_noise([1, 2]), labels, fractions)
    finally:
        handle.remove()
    assert mid == [2, 4]  # full at steps 0 and 2, partial at 1 and 3


def test_classifier_guidance_still_steers_with_reuse(tiny_model_dir: Path) -> None:
    torch.manual_seed(0)
    classifier = PrototypeClassifier(PrototypeClassifierConfig(latent_size=TILE // 4, num_prototypes=3, widths=(8, 16),
                                                               norm_num_groups=4)).eval()
    model = LatentDiffusionModel.load(tiny_model_dir)
    masks, labels, _ = _conditions(2)

    def run(weight: float, interval: int) -> np.ndarray:
        settings = SamplingSettings(steps=6, sampler="ddim", precision="float32", prototype_guidance=weight,
                                    feature_reuse=interval)
        sampler = TileSampler(model, settings, classifier=classifier)
        return sampler.sample(labels.tolist(), masks, [1, 2], prototypes=[0, 2]).astype(int)

    steered, unsteered, exact = run(50.0, 2), run(0.0, 2), run(50.0, 1)
    assert np.abs(steered - unsteered).mean() > 0.5  # the classifier's gradient still acts
    assert 0 < np.abs(steered - exact).mean() < np.abs(steered - unsteered).mean() + 5


@pytest.mark.parametrize("value", [0, -1, 11, 2.5, "2", True])
def test_invalid_intervals_are_one_line(value: object) -> None:
    with pytest.raises(InputError, match="feature_reuse"):
        SamplingSettings(feature_reuse=value)


def test_unsupported_denoisers_are_refused() -> None:
    denoiser = ConditionalDenoiser(tiny_denoiser_config("cross_attention"))
    with pytest.raises(InputError, match="feature reuse .*UNet2DModel denoiser .*not cross_attention"):
        check_reusable(denoiser)
    with pytest.raises(InputError, match="interval must be an integer >= 1"):
        FeatureReuse(ConditionalDenoiser(tiny_denoiser_config()), 0)


def test_the_manifest_names_the_reuse_and_a_rerun_with_another_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                                                          capsys) -> None:
    base = ["sample", "--model", str(tiny_model_dir), "--n", "1", "--steps", "3", "--label", "Normal",
            "--masks", "procedural", "--sampler", "ddim", "--precision", "float32", "--out", str(tmp_path / "out")]
    code, _, stderr = run_cli([*base, "--feature-reuse", "2"], capsys)
    assert code == 0, stderr
    with open(tmp_path / "out" / "manifest.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["sampler"] == "ddim+reuse2"
    code, stdout, stderr = run_cli([*base, "--n", "2"], capsys)  # the exact path into the same folder
    assert code != 0 and "other settings" in stdout + stderr
    code, _, stderr = run_cli([*base, "--feature-reuse", "0"], capsys)
    assert code != 0 and "--feature-reuse" in stderr
