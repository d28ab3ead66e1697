"""Argument checks shared by every verb, run before any work: the torch device, seeds, pixel sizes.

Each raises :class:`~histosynth.errors.InputError` (one line, exit 2 on the command line).
"""

from __future__ import annotations

import math

from histosynth.errors import InputError

MAX_SEED = 2**63 - 1  # torch generators take seeds below 2**64; numpy's take any non-negative integer


def check_device(device: str, option: str = "--device") -> str:
    """``device`` when torch can run on it here (``cpu`` is accepted without importing torch)."""
    if device == "cpu":
        return device
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"{option} {device!r} is not a torch device; use e.g. cpu, cuda or cuda:1") from None
    if parsed.type == "cpu":
        return device
    backend = torch.backends.mps if parsed.type == "mps" else getattr(torch, parsed.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        build = " (this torch is a CPU-only build)" if parsed.type == "cuda" and torch.version.cuda is None else ""
        raise InputError(f"{option} {device}: {parsed.type.upper()} is not available on this machine{build}; "
                         "use --device cpu")
    count = getattr(backend, "device_count", None)
    if parsed.index is not None and count is not None and parsed.index >= count():
        raise InputError(f"{option} {device}: this machine has {count()} {parsed.type} device(s), "
                         f"numbered from 0")
    return device


def check_seed(seed: int, count: int = 1, option: str = "--seed") -> int:
    """``seed`` when ``seed .. seed + count - 1`` are all valid seeds (non-negative, below 2**63)."""
    if seed < 0 or seed + max(count, 1) - 1 > MAX_SEED:
        raise InputError(f"{option} {seed} is out of range: seeds run from 0 to 2**63 - 1 (tile i uses seed + i)")
    return seed


def check_mpp(mpp: float | None, option: str = "--mpp") -> float | None:
    """``mpp`` when it is None or a positive, finite number of microns per pixel."""
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise InputError(f"{option} must be a positive number of microns per pixel (got {mpp:g})")
    return mpp
