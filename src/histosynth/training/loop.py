"""A resumable training loop on accelerate, shared by every histosynth model.

Data order and noise are functions of ``(seed, step, rank)`` rather than of a stream's history,
so resuming from a checkpoint replays exactly the batches and noise an uninterrupted run would
have drawn: resume after ``kill -9`` reproduces the same weights bit for bit (on the same device).

Under ``accelerate launch`` / ``torchrun`` with N processes, ``batch_size`` stays the global batch:
process ``r`` takes items ``r, r+N, ...`` of the one-process batch, gradients are averaged, the
logged loss is the mean over processes, and only the main process writes metrics and checkpoints
(see docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from histosynth.errors import InputError
from histosynth.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from histosynth.training.config import TrainConfig

METRICS_FILE = "metrics.jsonl"


class Objective(Protocol):
    """What the loop trains: a loss over a batch of item indices."""

    def num_items(self) -> int: ...

    def loss(
        self, model: torch.nn.Module, indices: torch.Tensor, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class TrainResult:
    model: torch.nn.Module
    ema: torch.nn.Module
    steps_done: int
    resumed_from: int
    seconds: float
    items_per_second: float
    #: False on the other processes of a multi-process launch: only the main one should write outputs.
    is_main_process: bool = True


def batch_indices(step: int, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Indices of the batch at ``step``: epochs are seeded permutations read as one stream."""
    start = step * batch_size * world
    positions = np.arange(start, start + batch_size * world)[rank::world]
    epochs = positions // num_items
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(num_items)
        chosen = epochs == epoch
        out[chosen] = perm[positions[chosen] % num_items]
    return out


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for the randomness of one step (noise, timesteps, crops, dropout of labels)."""
    mixed = np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))


def ema_with_warmup(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """EMA update whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates.

    Without the ramp, a fixed decay of 0.999 would still give ~13% weight to the first steps'
    near-random weights after 2,000 steps: far too slow for CPU-sized runs.
    """

    def update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * d + current * (1.0 - d)

    return update


def build_lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The learning-rate schedule of ``config`` (OneCycle, or cosine / constant after a linear warm-up)."""
    if config.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate, total_steps=config.steps,
            pct_start=min(0.3, max(config.warmup_steps, 1) / config.steps),
        )
    from diffusers.optimization import get_scheduler

    name = "cosine" if config.lr_schedule == "cosine" else "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.steps)


class _ObjectiveModule(torch.nn.Module):
    """The whole loss as one module's forward, so DDP sees objectives that call ``model.encode`` etc."""

    def __init__(self, model: torch.nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, indices: torch.Tensor, generator: torch.Generator, device: torch.device):
        return self.objective.loss(self.model, indices, generator, device)


def _launched_processes() -> int:
    """Processes of a torchrun / accelerate launch (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop log lines past the resumed step, so a resumed run's log has no duplicates."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def train(
    model: torch.nn.Module,
    objective: Objective,
    config: TrainConfig,
    run_dir: str | Path,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``objective`` for ``config.steps`` steps, resuming from ``run_dir`` if possible."""
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # A multi-process launch on a machine without CUDA must say cpu, or accelerate runs N lone processes.
    accelerator = Accelerator(mixed_precision=config.mixed_precision,
                              cpu=_launched_processes() > 1 and not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.batch_size % world:
        raise InputError(f"train.batch_size {config.batch_size} is the global batch and must be divisible by "
                         f"the {world} processes")
    per_process = config.batch_size // world
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = build_lr_schedule(optimizer, config)
    ema = AveragedModel(model, avg_fn=ema_with_warmup(config.ema_decay), use_buffers=True)

    start = 0
    checkpoints = list_checkpoints(run_dir)
    if checkpoints:
        state = load_checkpoint(checkpoints[-1], model, ema)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        torch.set_rng_state(state.torch_rng)
        start = state.step
    metrics_path = run_dir / METRICS_FILE
    if accelerator.is_main_process:
        _trim_metrics(metrics_path, start)

    if world > 1:  # DDP wraps the whole loss; one process keeps the plain path unchanged
        engine, optimizer = accelerator.prepare(_ObjectiveModule(model, objective), optimizer)

        def compute(indices: torch.Tensor, generator: torch.Generator):
            return engine(indices, generator, accelerator.device)
    else:
        engine, optimizer = accelerator.prepare(model, optimizer)

        def compute(indices: torch.Tensor, generator: torch.Generator):
            return objective.loss(engine, indices, generator, accelerator.device)

    def unwrapped() -> torch.nn.Module:
        inner = accelerator.unwrap_model(engine)
        return inner.model if isinstance(inner, _ObjectiveModule) else inner

    ema.to(accelerator.device)
    began, window_start, window_items = time.perf_counter(), time.perf_counter(), 0
    engine.train()
    for step in range(start, config.steps):
        indices = torch.from_numpy(batch_indices(step, objective.num_items(), per_process, config.seed, rank, world))
        generator = step_generator(config.seed, step, rank)
        with accelerator.autocast():
            loss, metrics = compute(indices, generator)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(engine.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update_parameters(unwrapped())
        window_items += len(indices) * world
        done = step + 1
        values = {"loss": float(loss.detach()), **metrics}
        if world > 1:  # every process's slice counts: log the global batch's mean
            mean = accelerator.reduce(torch.tensor(list(values.values()), dtype=torch.float64,
                                                   device=accelerator.device), "mean")
            values = dict(zip(values, mean.tolist()))
        if done % config.log_every == 0 or done == config.steps:
            elapsed = time.perf_counter() - window_start
            record = {"step": done, **values, "lr": scheduler.get_last_lr()[0],
                      "items_per_s": window_items / max(elapsed, 1e-9)}
            if accelerator.is_main_process:
                with open(metrics_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            window_start, window_items = time.perf_counter(), 0
        if on_step is not None:
            on_step(done, values)
        if accelerator.is_main_process and (done % config.checkpoint_every == 0 or done == config.steps):
            save_checkpoint(run_dir, done, unwrapped(), ema, optimizer, scheduler,
                            checkpoint_extra or {}, config.keep_checkpoints)
        accelerator.wait_for_everyone()
    seconds = time.perf_counter() - began
    trained = (config.steps - start) * config.batch_size
    return TrainResult(unwrapped(), ema.module, config.steps, start, seconds, trained / max(seconds, 1e-9),
                       accelerator.is_main_process)
