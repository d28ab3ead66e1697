"""Atomic, resumable training checkpoints.

A checkpoint is a folder ``checkpoints/step_0001234/`` written under a temporary name and renamed
when complete, so a kill at any moment leaves either the previous or the new checkpoint, never
half of one. Weights are safetensors; optimiser and scheduler state (nested dicts of tensors and
numbers) use ``torch.save`` and are read back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoints"
PREFIX = "step_"


@dataclass
class TrainingState:
    """What a checkpoint restores besides weights."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    torch_rng: torch.Tensor
    extra: dict[str, Any]


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``."""
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(model), str(tmp / "model.safetensors"))
    save_file(_tensors(ema), str(tmp / "ema.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()},
        tmp / "state.pt",
    )
    (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporaries of a killed write are ignored)."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def load_checkpoint(path: Path, model: torch.nn.Module, ema: torch.nn.Module) -> TrainingState:
    """Restore weights into ``model``/``ema`` and return the rest of the state."""
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    state = torch.load(path / "state.pt", weights_only=True)
    info = json.loads((path / "state.json").read_text())
    return TrainingState(
        step=int(info.pop("step")),
        optimizer=state["optimizer"],
        scheduler=state["scheduler"],
        torch_rng=state["torch_rng"],
        extra=info,
    )
