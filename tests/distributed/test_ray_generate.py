"""Ray generation on a local 2-CPU cluster: same files as the plain sampler, after killed workers and drivers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from testkit import read_rows, run_cli, write_rows
from tiny_models import CLASSES, save_tiny_mask_model, tiny_autoencoder_config, tiny_denoiser_config

from histosynth.distributed.ray_generate import generate_dataset_ray
from histosynth.distributed.shards import SHARD_DIR
from histosynth.io import save_png
from histosynth.models.autoencoder import Autoencoder
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.generate import MaskSource, generate_dataset
from histosynth.sampling.sampler import SamplingSettings

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

SETTINGS = SamplingSettings(steps=3, guidance=2.0, batch_size=2)
N, LABELS, SEED = 4, [0, 1, 2], 3  # 12 tiles, 6 shards of one batch
DRIVER_SCRIPT = """
import sys
from pathlib import Path
from histosynth.distributed.ray_generate import generate_dataset_ray
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.generate import MaskSource
from histosynth.sampling.sampler import SamplingSettings
model, out, address, masks = sys.argv[1:5]
settings = SamplingSettings(steps={steps}, guidance={guidance}, batch_size={batch})
generate_dataset_ray(LatentDiffusionModel.load(model), out, {n}, {labels}, MaskSource(Path(masks)), settings,
                     seed={seed}, address=address, workers=1)
"""


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2**20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ray") / "model"
    Autoencoder(tiny_autoencoder_config()).save(folder / "autoencoder")
    ConditionalDenoiser(tiny_denoiser_config()).eval().save(folder / "denoiser", labels=CLASSES.labels)
    CLASSES.save(folder / "classes.json")
    return folder


@pytest.fixture(scope="module")
def mask_model_dir(model_dir: Path, tmp_path_factory) -> Path:
    """The model folder plus a tiny mask model, for the mask-model mask source."""
    import shutil

    folder = tmp_path_factory.mktemp("ray-masks") / "model"
    shutil.copytree(model_dir, folder)
    return save_tiny_mask_model(folder)


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("masks")
    for i in range(3):
        mask = np.zeros((32, 32), np.uint8)
        mask[: 8 * (i + 1)] = 255
        save_png(folder / f"m{i}.png", mask)
    return folder


def _plain(model_dir: Path, out: Path, masks: MaskSource) -> Path:
    """The plain sampler's folder, with one torch thread like each actor (CPU sums depend on threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generate_dataset(LatentDiffusionModel.load(model_dir), out, N, LABELS, masks, SETTINGS, seed=SEED)
    finally:
        torch.set_num_threads(threads)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_same_folder(reference: Path, folder: Path) -> None:
    expected, got = _files(reference), _files(folder)
    assert sorted(got) == sorted(expected)  # no missing, extra, temporary or shard files
    assert [name for name in expected if got[name] != expected[name]] == []


def _actor_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any("ShardWorker" in part for part in (p.info["cmdline"] or []))]


def _actors_after_exit(timeout: float = 60.0) -> list[int]:
    """Actor processes still alive once Ray has had ``timeout`` s to end them (it kills asynchronously)."""
    deadline = time.monotonic() + timeout
    while (pids := _actor_pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return pids


def test_ray_run_writes_the_plain_runs_files(cluster, model_dir: Path, tmp_path: Path) -> None:
    reference = _plain(model_dir, tmp_path / "plain", MaskSource())
    result = generate_dataset_ray(LatentDiffusionModel.load(model_dir), tmp_path / "ray", N, LABELS, MaskSource(),
                                  SETTINGS, seed=SEED, workers=2)
    assert (result.written, result.skipped_existing) == (12, 0)
    _assert_same_folder(reference, tmp_path / "ray")
    again = generate_dataset_ray(LatentDiffusionModel.load(model_dir), tmp_path / "ray", N, LABELS, MaskSource(),
                                 SETTINGS, seed=SEED, workers=2)
    assert (again.written, again.skipped_existing) == (0, 12)
    _assert_same_folder(reference, tmp_path / "ray")


def test_ray_run_with_mask_model_masks_writes_the_plain_runs_files(cluster, mask_model_dir: Path,
                                                                  tmp_path: Path) -> None:
    masks = MaskSource(None, model=True, model_steps=2)
    reference = _plain(mask_model_dir, tmp_path / "plain", masks)
    rows = read_rows(reference / "manifest.csv")
    assert rows[0]["mask_source"].startswith("mask_model(model/mask_model@")
    (tmp_path / "ray").mkdir()
    for name in ("images", "masks"):  # a resumed run whose first shard (one batch) was finished
        (tmp_path / "ray" / name).mkdir()
    for row in rows[:2]:
        for column in ("image", "mask"):
            (tmp_path / "ray" / row[column]).write_bytes((reference / row[column]).read_bytes())
    write_rows(tmp_path / "ray" / "manifest.csv", rows[:2], list(rows[0]))
    result = generate_dataset_ray(LatentDiffusionModel.load(mask_model_dir), tmp_path / "ray", N, LABELS, masks,
                                  SETTINGS, seed=SEED, workers=2)
    assert (result.written, result.skipped_existing) == (10, 2)
    _assert_same_folder(reference, tmp_path / "ray")


def test_killed_worker_loses_and_duplicates_nothing(cluster, model_dir: Path, tmp_path: Path) -> None:
    reference = _plain(model_dir, tmp_path / "plain", MaskSource())
    killed: list[int] = []

    def kill_one_worker(done: int) -> None:
        if not killed:
            pids = _actor_pids()  # the second actor may still be starting
            assert pids
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    result = generate_dataset_ray(LatentDiffusionModel.load(model_dir), tmp_path / "ray", N, LABELS, MaskSource(),
                                  SETTINGS, seed=SEED, workers=2, on_tile=kill_one_worker)
    assert killed and not psutil.pid_exists(killed[0])
    # A killed worker's shard is sampled again, unless the worker had written it (its shard part) before it
    # died: then the rerun reads those tiles instead. Either way every tile is there exactly once (below).
    assert result.written <= 12
    _assert_same_folder(reference, tmp_path / "ray")
    assert _actors_after_exit() == []  # actors are released at the end


def test_interrupted_driver_resumes_to_the_same_folder(cluster, model_dir: Path, mask_folder: Path,
                                                       tmp_path: Path) -> None:
    masks = MaskSource(mask_folder)
    reference = _plain(model_dir, tmp_path / "plain", masks)
    out = tmp_path / "ray"

    def interrupt(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset_ray(LatentDiffusionModel.load(model_dir), out, N, LABELS, masks, SETTINGS, seed=SEED,
                             workers=1, on_tile=interrupt)
    assert list((out / SHARD_DIR).glob("shard_*.csv"))  # the first shard's part survived
    assert _actors_after_exit() == []  # the interrupted driver released its actors
    result = generate_dataset_ray(LatentDiffusionModel.load(model_dir), out, N, LABELS, masks, SETTINGS, seed=SEED,
                                  workers=1)
    assert result.skipped_existing >= 2 and result.written + result.skipped_existing == 12
    _assert_same_folder(reference, out)


@pytest.mark.slow  # a second driver process, SIGKILLed, then a rerun: 35-62 s on the shared 2-core machine
def test_killed_driver_process_resumes_to_the_same_folder(cluster, model_dir: Path, mask_folder: Path,
                                                          tmp_path: Path) -> None:
    reference = _plain(model_dir, tmp_path / "plain", MaskSource(mask_folder))
    out = tmp_path / "ray"
    script = DRIVER_SCRIPT.format(n=N, labels=LABELS, steps=SETTINGS.steps, guidance=SETTINGS.guidance,
                                  batch=SETTINGS.batch_size, seed=SEED)
    driver = subprocess.Popen([sys.executable, "-c", script, str(model_dir), str(out), cluster, str(mask_folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((out / SHARD_DIR).glob("shard_*.csv")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert _actors_after_exit() == []  # Ray ends a dead driver's actors
    assert (out / SHARD_DIR).is_dir()  # the run was cut short: its parts are not merged away yet
    result = generate_dataset_ray(LatentDiffusionModel.load(model_dir), out, N, LABELS, MaskSource(mask_folder),
                                  SETTINGS, seed=SEED, workers=2)
    assert result.skipped_existing >= 2 and result.written + result.skipped_existing == 12
    _assert_same_folder(reference, out)


def test_cli_ray_option_uses_the_cluster(cluster, model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    code, stdout, err = run_cli(["sample", "--model", str(model_dir), "--n", "3", "--label", "Polyp", "--steps", "2",
                                 "--batch-size", "2", "--ray", "auto", "--ray-workers", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert "3 tiles written" in stdout
    assert [r["id"] for r in read_rows(out / "manifest.csv")] == [f"polyp_{i:06d}" for i in range(3)]
    assert not (out / SHARD_DIR).exists()
