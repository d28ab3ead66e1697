"""Min-SNR-gamma weighting of the denoiser loss (off by default)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from histosynth.training.objectives import min_snr_weights


def _snr(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    alpha_bar = scheduler.alphas_cumprod[t]
    return alpha_bar / (1 - alpha_bar)


def test_min_snr_weights_equal_the_clipped_x0_weight_for_each_prediction_type() -> None:
    t = torch.tensor([1, 50, 300, 700, 990])
    for prediction, divisor in (("epsilon", lambda snr: snr), ("v_prediction", lambda snr: snr + 1)):
        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                  prediction_type=prediction)
        snr = _snr(scheduler, t)
        expected = torch.minimum(snr, torch.tensor(5.0)) / divisor(snr)
        assert torch.allclose(min_snr_weights(scheduler, t, 5.0), expected.float(), rtol=1e-4)
    eps = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")
    weights = min_snr_weights(eps, t, 5.0)
    assert weights[0] < 0.01 and torch.allclose(weights[-1], torch.tensor(1.0))  # clean steps down-weighted
