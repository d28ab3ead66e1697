"""Cross-image attention processors: swap only where and when scheduled, leave the other chunks alone,
and restore the UNet's own processors afterwards."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.sampling.transfer.attention import SwapSchedule, cross_image_attention, decoder_self_attention_names

from tiny_models import tiny_denoiser_config


def _our_unet():
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(tiny_denoiser_config()).eval()
    labels, fractions = torch.tensor([0, 0, 0]), torch.zeros(3, 2, 8, 8)
    return denoiser.unet, lambda x: denoiser(x, torch.tensor(500), labels, fractions)


def _sd_like_unet():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=4, norm_num_groups=4).eval()
    text = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(1))
    return unet, lambda x: unet(x, torch.tensor(500), encoder_hidden_states=text).sample


@pytest.mark.parametrize("make", [_our_unet, _sd_like_unet], ids=["ours", "sd-like"])
def test_swap_changes_only_the_output_chunk_and_processors_are_restored(make) -> None:
    unet, run = make()
    assert decoder_self_attention_names(unet)
    before = {name: module.processor for name, module in unet.named_modules() if hasattr(module, "set_processor")}
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        plain = run(x)
        with cross_image_attention(unet, SwapSchedule(step_ranges={0: (0, 100), 1: (0, 100)}, contrast=1.0,
                                                      enabled=False), latent_side=8):
            disabled = run(x)
        with cross_image_attention(unet, SwapSchedule(step_ranges={0: (0, 100), 1: (0, 100)}, contrast=1.67,
                                                      step=10), latent_side=8) as schedule:
            swapped = run(x)
            same_appearance = run(torch.cat([x[1:2], x[1:2], x[2:3]]))
            schedule.step = 95
            schedule.step_ranges = {0: (10, 90), 1: (10, 70)}
            out_of_range = run(x)
    after = {name: module.processor for name, module in unet.named_modules() if hasattr(module, "set_processor")}
    assert after == before  # the very same processor objects are back
    torch.testing.assert_close(disabled, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_of_range, plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(swapped[0], plain[0], atol=1e-4)
    torch.testing.assert_close(swapped[1:], plain[1:], atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        reference = run(torch.cat([x[1:2], x[1:2], x[2:3]]))
    # when the output already is the appearance, swapping keys/values changes nothing but the contrast
    assert (same_appearance[0] - reference[0]).abs().max() < (swapped[0] - plain[0]).abs().max() + 1e-6


def test_schedule_follows_step_percentages_per_level() -> None:
    schedule = SwapSchedule(total_steps=100)
    schedule.step = 5
    assert not schedule.active(0)
    schedule.step = 50
    assert schedule.active(0) and schedule.active(1) and not schedule.active(2)
    schedule.step = 80
    assert schedule.active(0) and not schedule.active(1)
