"""The training loop: loss falls, resume is exact, data order is stateless, settings are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from histosynth.errors import InputError
from histosynth.models.autoencoder import Autoencoder
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.training.checkpoint import list_checkpoints
from histosynth.training.latents import encode_dihedral, measure_latent_statistics
from histosynth.training.loop import METRICS_FILE, batch_indices, step_generator, train
from histosynth.training.objectives import (
    AutoencoderLossConfig,
    AutoencoderObjective,
    DenoiserLossConfig,
    DenoiserObjective,
)
from histosynth.training.run import start_or_resume
from histosynth.models.conditioning import mask_fractions

from tiny_models import make_tiles, tiny_autoencoder_config, tiny_denoiser_config, tiny_train_config


def _denoiser_objective(tiles, config):
    torch.manual_seed(0)
    autoencoder = Autoencoder(tiny_autoencoder_config()).eval()
    mean, logvar = encode_dihedral(autoencoder, tiles.images)
    shift, scale = measure_latent_statistics(autoencoder, tiles.images)  # unit-variance latents, as in training
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type=config.prediction_type)
    return DenoiserObjective(mean, logvar, mask_fractions(tiles.masks, tiles.mask_known, 2, 4), tiles.labels,
                             torch.tensor(shift), scale, config.null_label, scheduler, DenoiserLossConfig())


def _fixed_batch_loss(objective, model) -> float:
    with torch.no_grad():
        losses = [objective.loss(model, torch.arange(4), step_generator(99, s), torch.device("cpu"))[0]
                  for s in range(4)]
    return float(torch.stack(losses).mean())


def test_batch_indices_cover_each_epoch_once_and_are_stateless() -> None:
    first_epoch = np.concatenate([batch_indices(s, 10, 5, seed=3) for s in range(2)])
    assert sorted(first_epoch) == list(range(10))
    assert np.array_equal(batch_indices(7, 10, 5, seed=3), batch_indices(7, 10, 5, seed=3))
    assert not np.array_equal(batch_indices(0, 10, 5, seed=3), batch_indices(0, 10, 5, seed=4))
    # two ranks split one global batch without overlap
    ranks = [batch_indices(1, 10, 2, seed=0, rank=r, world=2) for r in range(2)]
    assert len(set(np.concatenate(ranks))) == 4


def test_autoencoder_loss_falls_on_fixed_batch(tiles, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny_autoencoder_config())
    objective = AutoencoderObjective(tiles.images[:4], AutoencoderLossConfig(crop=32))
    before = _fixed_batch_loss(objective, model)
    result = train(model, objective, tiny_train_config(steps=40, checkpoint_every=100), tmp_path)
    assert _fixed_batch_loss(objective, result.model) < 0.8 * before


@pytest.mark.parametrize("mechanism", ["concat", "cross_attention"])
def test_denoiser_loss_falls_on_fixed_batch(tmp_path: Path, mechanism: str) -> None:
    config = tiny_denoiser_config(mechanism)
    objective = _denoiser_objective(make_tiles(n=4), config)  # training batches == the fixed batch
    torch.manual_seed(0)
    model = ConditionalDenoiser(config)
    before = _fixed_batch_loss(objective, model)
    result = train(model, objective, tiny_train_config(steps=60, checkpoint_every=100), tmp_path)
    # Diffusion losses fall slowly (fixed draws: concat ~-10%, cross-attention ~-8% in 60 steps).
    # A loop that does not learn (no step, wrong target, detached graph) stays at or above `before`.
    assert _fixed_batch_loss(objective, result.model) < 0.95 * before


class _Killed(Exception):
    pass


def test_resume_reproduces_uninterrupted_weights_exactly(tiles, tmp_path: Path) -> None:
    config = tiny_denoiser_config()
    objective = _denoiser_objective(tiles, config)
    train_config = tiny_train_config(steps=6, checkpoint_every=2)

    torch.manual_seed(0)
    straight = train(ConditionalDenoiser(config), objective, train_config, tmp_path / "straight")

    def die_after_step_5(step: int, _: dict) -> None:
        if step == 5:  # checkpoint 4 exists, step 5 is lost, as with kill -9
            raise _Killed

    torch.manual_seed(0)
    with pytest.raises(_Killed):
        train(ConditionalDenoiser(config), objective, train_config, tmp_path / "resumed", on_step=die_after_step_5)
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["step_0000002", "step_0000004"]
    torch.manual_seed(123)  # a resumed process starts from different random weights
    resumed = train(ConditionalDenoiser(config), objective, train_config, tmp_path / "resumed")
    assert resumed.resumed_from == 4
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in straight.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[name]), name
    steps_logged = [line for line in (tmp_path / "resumed" / METRICS_FILE).read_text().splitlines()]
    assert len(steps_logged) == 6  # the lost step 5 was logged once before the kill, trimmed, then logged again


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    settings = {"train": tiny_train_config().model_dump(), "model": {"a": 1}}
    assert start_or_resume(tmp_path, settings) is False
    assert start_or_resume(tmp_path, settings) is True
    changed = {"train": tiny_train_config(learning_rate=0.5).model_dump(), "model": {"a": 1}}
    with pytest.raises(InputError, match="train.learning_rate"):
        start_or_resume(tmp_path, changed)


def test_labelled_repeats_put_each_labelled_tile_k_times_in_an_epoch() -> None:
    """Semi-supervised fine-tunes: unlabelled tiles (null label) once per epoch, labelled ones k times."""
    config = tiny_denoiser_config()
    null = config.null_label
    labels = torch.tensor([0, null, null, 1, null, null])
    n = len(labels)
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=config.prediction_type)

    def objective(repeats: int) -> DenoiserObjective:
        return DenoiserObjective(torch.zeros(n, 8, 4, 2, 2), torch.full((n, 8, 4, 2, 2), -10.0), torch.zeros(n, 2, 2, 2),
                                 labels, torch.zeros(4), 1.0, null, scheduler,
                                 DenoiserLossConfig(condition_dropout=0.0, labelled_repeats=repeats))

    seen: list[torch.Tensor] = []

    def model(noisy, t, labels, fractions):
        seen.append(labels)
        return torch.zeros_like(noisy)

    once, thrice = objective(1), objective(3)
    assert once.num_items() == n and thrice.num_items() == n + 2 * 2
    epoch = torch.from_numpy(batch_indices(0, thrice.num_items(), thrice.num_items(), seed=0))
    thrice.loss(model, epoch, step_generator(0, 0), torch.device("cpu"))
    counts = torch.bincount(seen[-1], minlength=null + 1)
    assert (counts[0], counts[1], counts[null]) == (3, 3, 4)
    once.loss(model, torch.arange(n), step_generator(0, 0), torch.device("cpu"))
    assert torch.equal(seen[-1], labels)  # repeats 1: the items are the tiles, in order, as before the option
    with pytest.raises(ValueError):
        DenoiserLossConfig(labelled_repeats=0)
