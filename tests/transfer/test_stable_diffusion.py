"""Appearance transfer with a local Stable Diffusion folder: a tiny randomly initialised
UNet2DConditionModel + AutoencoderKL + CLIP text encoder in the diffusers layout, built on the fly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="Stable Diffusion folders need the 'transformers' package")

from histosynth.cli.app import main  # noqa: E402
from histosynth.errors import ModelFolderError  # noqa: E402
from histosynth.sampling.transfer.load import load_backbone  # noqa: E402
from histosynth.sampling.transfer.appearance import AppearanceTransfer, TransferSettings, render_mask  # noqa: E402
from histosynth.sampling.transfer.stable_diffusion import StableDiffusionBackbone  # noqa: E402

SIDE = 32  # image px; the tiny VAE halves it once, the tiny UNet has two levels


def make_sd_folder(folder: Path) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=SIDE // 2, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(block_out_channels=(16, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  sample_size=SIDE).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                                 vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(folder / "text_encoder")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "h": 2, "e": 3, "h</w>": 4, "e</w>": 5}
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16).save_pretrained(tokenizer_dir)
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory) -> Path:
    return make_sd_folder(tmp_path_factory.mktemp("sd") / "tiny-sd")


def _inputs():
    rng = np.random.default_rng(0)
    appearance = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    appearance_mask = np.zeros((SIDE, SIDE), np.uint8)
    appearance_mask[:, SIDE // 2:] = 1
    target = np.zeros((SIDE, SIDE), np.uint8)
    target[SIDE // 4: 3 * SIDE // 4, SIDE // 4: 3 * SIDE // 4] = 1
    return appearance, appearance_mask, target


def test_a_local_folder_loads_without_downloads_and_replays_without_transfer(sd_folder: Path) -> None:
    backbone = load_backbone(sd_folder)
    assert isinstance(backbone, StableDiffusionBackbone) and backbone.tile_size == SIDE and backbone.classes is None
    assert backbone.schedule.beta_schedule == "scaled_linear" and backbone.schedule.beta_end == 0.012
    before = dict(backbone.unet.attn_processors)
    appearance, appearance_mask, target = _inputs()
    off = AppearanceTransfer(backbone, TransferSettings(steps=4, transfer=False))
    image = off.transfer(appearance, appearance_mask, target, seed=3)
    rendered = render_mask(target, 2, (0.1, 0.5), 0.01, np.random.default_rng(3))
    expected = backbone.decode(backbone.encode(rendered))[0]
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    on = AppearanceTransfer(backbone, TransferSettings(steps=4, swap_ranges={0: (0, 100), 1: (0, 100)},
                                                       adain_range=(0, 100)))
    transferred = on.transfer(appearance, appearance_mask, target, seed=3)
    assert transferred.shape == (SIDE, SIDE, 3) and np.abs(transferred.astype(int) - image.astype(int)).mean() > 0.5
    assert dict(backbone.unet.attn_processors) == before  # processors restored


def test_folders_missing_parts_are_named(sd_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(sd_folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(ModelFolderError, match=r"missing unet/diffusion_pytorch_model\.safetensors\|.*tokenizer/vocab"):
        load_backbone(broken)


def test_cli_transfers_with_a_stable_diffusion_folder(sd_folder: Path, tmp_path: Path, capsys) -> None:
    from histosynth.io import save_png

    appearance, appearance_mask, target = _inputs()
    save_png(tmp_path / "app.png", appearance)
    save_png(tmp_path / "app_mask.png", appearance_mask)
    save_png(tmp_path / "targets" / "t0.png", target)
    args = ["transfer", "--model", str(sd_folder), "--appearance", str(tmp_path / "app.png"),
            "--appearance-mask", str(tmp_path / "app_mask.png"), "--target-masks", str(tmp_path / "targets"),
            "--steps", "2", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as refused:
        main(args + ["--label", "Normal"])
    assert refused.value.code == 2 and "Stable Diffusion takes --prompt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(args + ["--prompt", "he"])
    assert done.value.code == 0
    rows = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    assert len(rows) == 2 and "tiny-sd@stable-diffusion" in rows[1]
    assert (tmp_path / "out" / "images" / "t0_r0.png").is_file()
