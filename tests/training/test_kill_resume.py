"""A real ``kill -9`` of ``histosynth train autoencoder``, then a rerun: same weights as never killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from testkit import kill_9_after_checkpoint

CONFIG = {
    "train": {"steps": 60, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "checkpoint_every": 5,
              "log_every": 5, "seed": 0},
    "model": {"block_out_channels": [8, 8, 16], "norm_num_groups": 4, "tile_size": 32},
    "objective": {"crop": 16},
}


def _command(data: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-c", "from histosynth.cli.app import main; main()", "train", "autoencoder",
            "--data", str(data), "--out", str(out), "--config", str(config), "--threads", "1"]


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "autoencoder" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_kill_9_then_rerun_gives_the_uninterrupted_weights(make_tile_dataset, tmp_path: Path) -> None:
    data = make_tile_dataset(tmp_path / "data", n=8, size=(32, 32), splits=("train",))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    subprocess.run(_command(data, tmp_path / "straight", config), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    kill_9_after_checkpoint(_command(data, killed, config), killed / "runs" / "autoencoder" / "checkpoints", 15, env)
    assert not (killed / "autoencoder").exists()  # no half-written model folder

    subprocess.run(_command(data, killed, config), check=True, env=env, capture_output=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(killed)
    assert straight.keys() == resumed.keys()
    assert all((straight[k] == resumed[k]).all() for k in straight)
    metrics = (killed / "runs" / "autoencoder" / "metrics.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in metrics] == list(range(5, 61, 5))
