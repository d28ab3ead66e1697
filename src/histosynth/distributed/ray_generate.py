"""Distributed generation on Ray: the plain sampler's tiles, sampled by GPU (or CPU) actors.

The driver plans the run exactly as :func:`histosynth.sampling.generate.generate_dataset` does
(same ids, seeds and manifest rows), cuts it into shards, and hands shards to actors. Actors write
tiles and their shard's manifest part atomically; the driver merges the parts into ``manifest.csv``
in plan order. A shard whose actor dies is given to a fresh actor; a rerun after the driver is
killed skips every finished tile. Either way the folder ends up byte-identical to a plain run's
(on a CPU, when the actors and the plain run use the same number of torch threads: CPU sums are
split by thread, which moves a handful of pixels by one level).

Ray is optional (``pip install 'histosynth[ray]'``); only this module imports it, lazily. Actors
load the model from its folder and write into the output folder, so on a multi-node cluster both
must be on a file system that every node sees at the same path.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.distributed.shards import Shard, make_shards, merge_manifest
from histosynth.errors import HistosynthError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.generate import MaskSource, plan_request, tile_maker
from histosynth.sampling.sampler import SamplingSettings, TileSampler, resolve_precision
from histosynth.sampling.writer import GenerationResult, SyntheticDatasetWriter, SyntheticRow, check_plan, write_tiles

INSTALL_HINT = "pip install 'histosynth[ray]' (or: pip install ray)"
#: Shards queued on each actor, so it starts the next one without waiting for the driver.
IN_FLIGHT_PER_WORKER = 2


def require_ray() -> Any:
    """Import Ray, or fail with one line saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "ray":
            raise
        raise HistosynthError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class ShardWorker:
    """The body of a Ray actor: loads the model once, then samples shards into ``out``."""

    def __init__(self, model_dir: str, settings: SamplingSettings, device: str, out: str, masks: MaskSource,
                 folder_masks: Sequence[np.ndarray] | None, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        sampler = TileSampler(LatentDiffusionModel.load(model_dir), settings, device)
        self.make = tile_maker(sampler, masks, list(folder_masks) if folder_masks is not None else None)
        self.settings, self.out, self.tile_size = settings, Path(out), sampler.tile_size

    def run(self, shard: Shard) -> tuple[list[SyntheticRow], int]:
        """Sample the shard's unfinished tiles; returns (the shard's finished rows, tiles sampled now)."""
        writer = SyntheticDatasetWriter(self.out, self.tile_size, part=shard.id)
        written, _ = write_tiles(writer, [(job.row, job) for job in shard.jobs], self.make, self.settings.batch_size)
        return [writer.rows[job.row.id] for job in shard.jobs if job.row.id in writer.rows], written


def check_ray_address(address: str, timeout: float = 10.0) -> Any:
    """Import Ray and check ``address`` (``local``, ``auto`` or ``[ray://]host:port``): one-line errors.

    A ``host:port`` must accept a TCP connection within ``timeout`` seconds (``ray.init`` would retry
    an unreachable head forever). Returns the ``ray`` module.
    """
    ray = require_ray()
    if address not in ("local", "auto") and not ray.is_initialized():
        _check_reachable(address, timeout)
    return ray


def _check_reachable(address: str, timeout: float) -> None:
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise HistosynthError(f"--ray {address!r}: expected local, auto or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise HistosynthError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


def _connect(ray: Any, address: str) -> bool:
    """Join (or start, for ``local``) a cluster; True when this call did, so we disconnect at the end."""
    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            ray.init(**options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise HistosynthError(f"cannot reach the Ray cluster at {address!r}: {str(error).splitlines()[0]}") from None
    return True


def _worker_count(ray: Any, gpu: bool, requested: int, cpus_per_worker: int, shards: int) -> int:
    resources = ray.cluster_resources()
    if gpu:
        available = int(resources.get("GPU", 0))
        if available == 0:
            raise HistosynthError("the Ray cluster has no GPU; run with --device cpu")
    else:
        available = max(1, int(resources.get("CPU", 1) // cpus_per_worker))
    return max(1, min(requested or available, shards))


def generate_dataset_ray(
    model: LatentDiffusionModel,
    out: str | Path,
    n: int,
    labels: list[int],
    masks: MaskSource,
    settings: SamplingSettings,
    seed: int = 0,
    device: str = "cpu",
    address: str = "local",
    workers: int = 0,
    cpus_per_worker: int = 1,
    shard_batches: int = 1,
    on_tile: Callable[[int], None] | None = None,
    max_attempts: int = 3,
    merge_every_s: float = 10.0,
) -> GenerationResult:
    """:func:`~histosynth.sampling.generate.generate_dataset` on a Ray cluster, with the same output files.

    ``address`` is ``local`` (start a cluster on this machine), ``auto`` (the running cluster) or
    ``host:port``; a Ray session already open in this process is reused. ``workers`` actors (0: one
    per GPU for a CUDA ``device``, else one per ``cpus_per_worker`` CPUs) each sample shards of
    ``shard_batches`` batches with ``cpus_per_worker`` torch threads; a CUDA actor uses the GPU Ray
    gives it. A shard is retried on a fresh actor up to ``max_attempts`` times.
    """
    ray = check_ray_address(address)
    out = Path(out)
    settings = resolve_precision(settings, device)  # the driver decides, so every worker runs the same arithmetic
    jobs, folder_masks = plan_request(model, n, labels, masks, settings, seed)
    finished = check_plan(out, [job.row for job in jobs], model.tile_size)  # one line for anything wrong, first
    order = [job.row.id for job in jobs]
    writer = SyntheticDatasetWriter(out, model.tile_size, finished)  # prepares the folder
    pending = [Shard(s.id, tuple(j for j in s.jobs if j.row.id not in writer.rows))
               for s in make_shards(jobs, settings.batch_size * shard_batches)]
    pending = [shard for shard in pending if shard.jobs]
    skipped = len(order) - sum(len(shard.jobs) for shard in pending)
    if on_tile is not None and skipped:
        on_tile(skipped)
    written, last_merge = 0, time.monotonic()

    def done(shard: Shard, shard_rows: list[SyntheticRow], sampled: int) -> None:
        nonlocal written, last_merge
        written += sampled
        writer.rows.update((row.id, row) for row in shard_rows)
        if on_tile is not None:
            on_tile(len(shard.jobs))
        if time.monotonic() - last_merge > merge_every_s:  # a killed driver still leaves a fresh manifest
            writer.flush(order)
            last_merge = time.monotonic()

    if pending:
        started = _connect(ray, address)
        try:
            gpu = str(device).startswith("cuda")
            count = _worker_count(ray, gpu, workers, cpus_per_worker, len(pending))
            actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=1 if gpu else 0)(ShardWorker)
            arguments = (str(model.folder), settings, "cuda" if gpu else "cpu", str(out.resolve()), masks,
                         folder_masks, cpus_per_worker)
            _dispatch(ray, lambda: actor_class.remote(*arguments), count, pending, max_attempts, done)
        finally:
            if started:
                ray.shutdown()
        writer.clean()  # no worker runs now: drop temporaries a killed actor left behind
    merge_manifest(writer, order, dict(writer.rows))
    model.classes.save(out / "classes.json")
    return GenerationResult(out, written, skipped)


def _dispatch(ray: Any, make_actor: Callable[[], Any], count: int, pending: Sequence[Shard], max_attempts: int,
              finished: Callable[[Shard, list[SyntheticRow], int], None]) -> None:
    """Run every shard on ``count`` actors; a dead actor is replaced and its shards queued again first."""
    from ray.exceptions import RayActorError, RayTaskError

    actors = [make_actor() for _ in range(count)]
    generation = [0] * count  # bumped when a slot's actor is replaced
    queue, attempts, in_flight = deque(pending), Counter(), {}

    def submit(slot: int) -> None:
        if queue:
            shard = queue.popleft()
            in_flight[actors[slot].run.remote(shard)] = (slot, generation[slot], shard)

    try:
        for slot in range(count):
            for _ in range(IN_FLIGHT_PER_WORKER):
                submit(slot)
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            slot, gen, shard = in_flight.pop(ref)
            try:
                shard_rows, sampled = ray.get(ref)
            except RayActorError as error:
                attempts[shard.id] += 1
                if attempts[shard.id] >= max_attempts:
                    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # Ray colours its messages
                    reason = (text.splitlines() or [type(error).__name__])[0][:300]
                    raise HistosynthError(f"{shard.id} failed {attempts[shard.id]} times, its Ray worker died: "
                                          f"{reason}") from None
                if gen == generation[slot]:  # the first failure seen from this actor: replace it
                    ray.kill(actors[slot], no_restart=True)
                    actors[slot], generation[slot] = make_actor(), gen + 1
                queue.appendleft(shard)
                submit(slot)
                continue
            except RayTaskError as error:
                if isinstance(error.cause, HistosynthError):
                    raise error.cause from None
                raise
            finished(shard, shard_rows, sampled)
            submit(slot)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
