"""Encoding tiles to latents once, and measuring the latent scaling from data."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from histosynth.models.conditioning import dihedral
from histosynth.training.tensors import to_unit_range


@torch.no_grad()
def encode_dihedral(
    autoencoder, images: torch.Tensor, batch_size: int = 32, on_batch: Callable[[int], None] | None = None,
    variants: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and log-variance of every tile under the first ``variants`` of the 8 dihedral
    transforms (default all 8; 1 = the tile as it is): (N,variants,C,h,w) fp16.

    Runs on the autoencoder's device; results come back on the CPU. (The autoencoder is not
    rotation-equivariant, so each variant is encoded, not derived by rotating a latent.)
    """
    if not 1 <= variants <= 8:
        raise ValueError("variants must be 1..8")
    device = next(autoencoder.parameters()).device
    means, logvars = [], []
    for start in range(0, len(images), batch_size):
        batch = to_unit_range(images[start:start + batch_size].to(device))
        variants_mean, variants_logvar = [], []
        for k in range(variants):
            posterior = autoencoder.encode(dihedral(batch, k)).latent_dist
            variants_mean.append(posterior.mean.half())
            variants_logvar.append(posterior.logvar.half())
        means.append(torch.stack(variants_mean, 1).cpu())
        logvars.append(torch.stack(variants_logvar, 1).cpu())
        if on_batch is not None:
            on_batch(len(batch))
    return torch.cat(means), torch.cat(logvars)


@torch.no_grad()
def training_device() -> torch.device:
    """The accelerator accelerate would train on (CUDA, MPS) or the CPU."""
    from accelerate import PartialState

    return PartialState().device


@torch.no_grad()
def measure_latent_statistics(autoencoder, images: torch.Tensor, batch_size: int = 32) -> tuple[list[float], float]:
    """Per-channel mean and the factor 1/std that give sampled latents zero mean and unit variance."""
    device = next(autoencoder.parameters()).device
    samples = []
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(images), batch_size):
        posterior = autoencoder.encode(to_unit_range(images[start:start + batch_size].to(device))).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        samples.append((posterior.mean + posterior.std * noise.to(device)).cpu())
    z = torch.cat(samples)
    shift = z.mean(dim=(0, 2, 3))
    std = (z - shift.view(1, -1, 1, 1)).std()
    return [float(v) for v in shift], float(1.0 / std)


def _read_cached(path: Path, key: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (mean, logvar) a cache file holds if it was written for ``key``; None when absent, foreign or broken."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            if handle.metadata() == key:
                return handle.get_tensor("mean"), handle.get_tensor("logvar")
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply encoded again
        pass
    return None


def _write_cached(path: Path, key: dict[str, str], mean: torch.Tensor, logvar: torch.Tensor) -> None:
    from safetensors.torch import save_file

    from histosynth.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"mean": mean.contiguous(), "logvar": logvar.contiguous()}, str(tmp), metadata=key)


def encode_dihedral_cached(
    cache: str | Path, autoencoder, images: torch.Tensor, autoencoder_digest: str,
    on_batch: Callable[[int], None] | None = None, batch_size: int = 32, part_batches: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`encode_dihedral`, kept in the safetensors file ``cache`` so a resumed run does not encode again
    (over an hour on one CPU thread for EBHI's 10,304 tile x symmetry latents). The file names the autoencoder
    weights and a digest of the tiles; a cache made from anything else is encoded afresh and replaced.

    While encoding, every ``part_batches`` batches are kept as a part file beside ``cache``, so a run killed
    mid-way encodes only the parts it lacks (batch boundaries are the same, so the latents are too); the parts
    are merged into ``cache`` and removed at the end.
    """
    cache = Path(cache)
    key = {"autoencoder": autoencoder_digest, "tiles": hashlib.sha256(images.numpy().tobytes()).hexdigest()}
    cached = _read_cached(cache, key)
    if cached is not None:
        if on_batch is not None:  # a hit completes the bar, so it does not read as an encoding stuck at 0
            on_batch(len(cached[0]))
        return cached
    step = batch_size * part_batches
    parts: list[Path] = []
    means, logvars = [], []
    for start in range(0, len(images), step):
        part = cache.with_name(f".{cache.stem}.part{start:07d}{cache.suffix}")
        parts.append(part)
        done = _read_cached(part, key)
        if done is None:
            done = encode_dihedral(autoencoder, images[start:start + step], batch_size=batch_size, on_batch=on_batch)
            _write_cached(part, key, *done)
        elif on_batch is not None:
            on_batch(len(done[0]))
        means.append(done[0])
        logvars.append(done[1])
    mean, logvar = torch.cat(means), torch.cat(logvars)
    _write_cached(cache, key, mean, logvar)
    for part in parts:
        part.unlink(missing_ok=True)
    return mean, logvar
