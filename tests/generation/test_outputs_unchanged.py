"""The generation stage writes the same files, bytes and manifests as before its redesign (issue J).

Every run below uses the tiny random models of ``tests/tiny_models.py`` and
``tests/generation/guided_models.py``; the digests were recorded from the code before the dataset
writers were merged into one. A digest covers every file of the output folder (path and sha256), so
any change of pixels, masks, manifest text or layout shows. Torch runs on one thread here: CPU sums
split by thread move a handful of pixels by one level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from testkit import run_cli
from guided_models import classifier_dir, like_model_dir  # noqa: F401  (fixtures)
from tiny_models import TILE, make_tiles, save_tiny_mask_model

#: The settings the digests were recorded with (the defaults then; since issue K the defaults are UniPC in
#: ``auto`` precision, which would make the digests depend on whether the CPU computes bfloat16).
EXACT = ["--sampler", "ddim", "--precision", "float32"]
SAMPLE = {  # scenario -> digest of the output folder
    "procedural": "8e48084eb36af5337d9aab5c5b0f5576e0cd1a6befd7291d4d027b75fa3fd2d4",
    "folder-masks-dpm-interval": "1250aaac200035a4d3e2e40aad61997dec168e07afcc50bb3a7d1b9496d3de76",
    "mask-model": "74f18450c09624c18c1968065fa3e3db40378aed9050c46abe1f4b6ab9cb839b",
    "like": "8894b2958289b928db78d58f2ef191d3cf47affe3a4adf7be5abf9b57eae3b43",
    "like-label-masks": "3c1f1a034a0251358a3fa6a9bbfaf1e1911e642ebde8b33dbc54c660f9cc1d8e",
    "prototype": "0598875afcb28687c8565cb9f1b153d31fdf6bebf74d3295904c5c42004e7e00",
    "balanced": "e6bdf26dcb8e23caf41c378595b47b72ae01953fabbe282d20a5d745964dddb7",
    "transfer": "fc327957cfd595538a0b0f5d691ff65c30ccf08da5b063499b3554d598326686",
}


def folder_digest(folder: Path) -> tuple[str, list[str]]:
    """One sha256 over every file's relative path and sha256 (dot files aside), and the listing."""
    listing = [f"{p.relative_to(folder).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}"
               for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return hashlib.sha256("\n".join(listing).encode()).hexdigest(), listing


def assert_digest(folder: Path, scenario: str) -> None:
    digest, listing = folder_digest(folder)
    assert digest == SAMPLE[scenario], f"{scenario}: {digest}\n" + "\n".join(listing) + "\n" + \
        (folder / "manifest.csv").read_text()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cli(args: list[str], capsys) -> str:
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    return stdout


def _mask_folder(folder: Path) -> Path:
    tiles = make_tiles(6)
    folder.mkdir()
    for i in (1, 2, 4):
        Image.fromarray(tiles.masks[i].numpy() * 255).save(folder / f"m{i}.png")
    return folder


def test_sample_procedural_and_resumed(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    base = ["sample", "--model", str(tiny_model_dir), "--steps", "2", "--batch-size", "4", "--seed", "3",
            "--masks", "procedural", *EXACT]
    _cli([*base, "--n", "2", "--out", str(tmp_path / "a")], capsys)
    assert_digest(tmp_path / "a", "procedural")
    _cli([*base, "--n", "1", "--out", str(tmp_path / "b")], capsys)
    assert "3 tiles written, 3 already there" in _cli([*base, "--n", "2", "--out", str(tmp_path / "b")], capsys)
    assert_digest(tmp_path / "b", "procedural")


def test_sample_folder_masks_dpm_with_interval(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    masks = _mask_folder(tmp_path / "masks")
    _cli(["sample", "--model", str(tiny_model_dir), "--steps", "2", "--n", "2", "--label", "Polyp", "--masks",
          str(masks), "--sampler", "dpm", "--precision", "float32", "--guidance-interval", "0.2,0.8", "--out", str(tmp_path / "a")], capsys)
    assert_digest(tmp_path / "a", "folder-masks-dpm-interval")


def test_sample_mask_model_masks(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    save_tiny_mask_model(tiny_model_dir)
    _cli(["sample", "--model", str(tiny_model_dir), "--steps", "2", "--n", "2", "--label", "0", "--label", "2",
          "--mask-steps", "2", "--batch-size", "3", *EXACT, "--out", str(tmp_path / "a")], capsys)
    assert_digest(tmp_path / "a", "mask-model")


def _reference(tmp_path: Path) -> Path:
    path = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (TILE, TILE, 3), dtype=np.uint8)).save(path)
    return path


def test_sample_like(like_model_dir: Path, tmp_path: Path, capsys) -> None:
    base = ["sample", "--model", str(like_model_dir), "--like", str(_reference(tmp_path)), "--n", "3", "--steps", "2",
            "--batch-size", "2", *EXACT]
    _cli([*base, "--out", str(tmp_path / "a")], capsys)
    assert_digest(tmp_path / "a", "like")
    _cli([*base, "--label", "Polyp", "--masks", "procedural", "--like-weight", "3", "--out", str(tmp_path / "b")],
         capsys)
    assert_digest(tmp_path / "b", "like-label-masks")


def test_sample_prototype_and_balanced(tiny_model_dir: Path, classifier_dir: Path, tmp_path: Path,  # noqa: F811
                                       capsys) -> None:
    _cli(["sample", "--model", str(tiny_model_dir), "--prototype", "1", "--prototype-classifier", str(classifier_dir),
          "--n", "2", "--steps", "2", "--out", str(tmp_path / "a")], capsys)
    assert_digest(tmp_path / "a", "prototype")
    _cli(["synthesize-balanced", "--model", str(tiny_model_dir), "--prototype-classifier", str(classifier_dir),
          "--per-prototype", "1", "--steps", "2", "--label", "Normal", "--masks", "procedural", "--batch-size", "2",
          "--out", str(tmp_path / "b")], capsys)
    assert_digest(tmp_path / "b", "balanced")


def test_transfer_dataset(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    tiles = make_tiles(4)
    Image.fromarray(tiles.images[0].permute(1, 2, 0).numpy()).save(tmp_path / "app.png")
    Image.fromarray(tiles.masks[0].numpy() * 255).save(tmp_path / "app_mask.png")
    _cli(["transfer", "--model", str(tiny_model_dir), "--appearance", str(tmp_path / "app.png"), "--appearance-mask",
          str(tmp_path / "app_mask.png"), "--target-masks", str(_mask_folder(tmp_path / "targets")), "--rounds", "2",
          "--steps", "2", "--seed", "4", "--out", str(tmp_path / "a")], capsys)
    assert_digest(tmp_path / "a", "transfer")


def test_ray_shards_write_the_plain_runs_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from histosynth.distributed.ray_generate import generate_dataset_ray
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.generate import MaskSource
    from histosynth.sampling.settings import SamplingSettings

    settings = SamplingSettings(steps=2, batch_size=4, sampler="ddim", precision="float32")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=96 * 2**20)
    try:
        generate_dataset_ray(LatentDiffusionModel.load(tiny_model_dir), tmp_path / "a", 2, [0, 1, 2],
                             MaskSource(None, 0.6), settings, seed=3, workers=1, shard_batches=1)
    finally:
        ray.shutdown()
    assert_digest(tmp_path / "a", "procedural")
