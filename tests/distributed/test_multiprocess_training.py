"""The training loop under ``torchrun`` with 2 CPU processes (gloo) against the same runs in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from histosynth.training.checkpoint import list_checkpoints
from histosynth.training.loop import METRICS_FILE

sys.path.insert(0, str(Path(__file__).parent))
import train_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """Run train_worker.py once under torchrun with 2 processes; its output folder."""
    out = tmp_path_factory.mktemp("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_CPU")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(train_worker.__file__)), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("single")
    return {"regression": train_worker.regression_run(out / "regression"), "dir": out,
            "denoiser": train_worker.denoiser_run(out / "denoiser")}


def _curve(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def _weights(folder: Path, name: str, rank: int) -> dict[str, torch.Tensor]:
    return load_file(str(folder / f"{name}_rank{rank}.safetensors"))


def test_two_processes_reproduce_one_process_on_a_deterministic_loss(two_processes: Path, one_process) -> None:
    single, double = _curve(one_process["dir"] / "regression"), _curve(two_processes / "regression")
    assert [r["step"] for r in double] == list(range(1, train_worker.STEPS + 1))  # main process logs, once
    for a, b in zip(single, double):  # logged loss and metric are means over the whole global batch
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-9)
        assert b["mae"] == pytest.approx(a["mae"], rel=1e-9)
    reference = one_process["regression"].model.state_dict()
    for rank in (0, 1):
        weights = _weights(two_processes, "regression", rank)
        assert all(torch.allclose(weights[k], reference[k], rtol=0, atol=1e-12) for k in reference)


def test_two_processes_follow_the_one_process_denoiser_loss_curve(two_processes: Path, one_process) -> None:
    single = [r["loss"] for r in _curve(one_process["dir"] / "denoiser")]
    double = [r["loss"] for r in _curve(two_processes / "denoiser")]
    assert len(double) == len(single) == train_worker.STEPS
    # same items per step; each process draws its own noise, so losses agree statistically
    assert sum(double) / len(double) == pytest.approx(sum(single) / len(single), rel=0.05)
    assert all(abs(b - a) < 0.15 * a for a, b in zip(single, double))
    rank0, rank1 = (_weights(two_processes, "denoiser", r) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # gradients were averaged across processes
    assert [p.name for p in list_checkpoints(two_processes / "denoiser")][-1] == f"step_{train_worker.STEPS:07d}"


def test_objectives_that_call_model_methods_train_in_sync(two_processes: Path) -> None:
    rank0, rank1 = (_weights(two_processes, "autoencoder", r) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert len(_curve(two_processes / "autoencoder")) == 4


def test_two_process_resume_reproduces_the_uninterrupted_run(two_processes: Path) -> None:
    straight = _weights(two_processes, "denoiser", 0)
    for rank in (0, 1):
        resumed = _weights(two_processes, "resumed", rank)
        assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert [r["step"] for r in _curve(two_processes / "resumed")] == list(range(1, train_worker.STEPS + 1))
