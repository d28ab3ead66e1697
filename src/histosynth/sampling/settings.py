"""Tile sampling settings: one place for their defaults, which the CLI, the web app and Ray read.

Kept free of torch so that ``histosynth sample --help`` can show the defaults without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from histosynth.errors import InputError

SamplerName = Literal["ddim", "dpm", "dpm-sde", "unipc"]
#: ddim: DDIM (deterministic); dpm: DPM-Solver++ 2M; dpm-sde: its stochastic (SDE) variant, whose step noise
#: each tile draws from its own seed; unipc: UniPC multistep (deterministic).
SAMPLERS: tuple[str, ...] = ("ddim", "dpm", "dpm-sde", "unipc")
STOCHASTIC_SAMPLERS: tuple[str, ...] = ("dpm-sde",)


def check_sampler(name: str) -> str:
    """``name`` if it is a known sampler, else one line listing them."""
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return name


@dataclass
class SamplingSettings:
    steps: int = 50
    guidance: float = 1.5  # best generation FID of the issue-H sweep (docs/benchmarks.md)
    sampler: SamplerName = "ddim"
    batch_size: int = 16
    #: Guidance weight of the tile embedding (embedding denoisers, ``--like``): 0 ignores it, 1 = plain conditional.
    like_weight: float = 2.0
    #: Classifier-guidance weight towards a prototype (0 = off: the unguided code path exactly).
    prototype_guidance: float = 0.0
    #: Noise levels, as fractions ``(low, high)`` of the training timesteps, where classifier-free guidance
    #: applies (Kynkaanniemi et al. 2024); elsewhere the plain conditional model runs (one forward, not two).
    #: ``(0, 1)`` guides every step.
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_sampler(self.sampler)
        low, high = self.guidance_interval
        if not 0.0 <= low <= high <= 1.0:
            raise InputError(f"guidance interval must satisfy 0 <= low <= high <= 1, got {low},{high}")

    @property
    def guidance_record(self) -> float | str:
        """The manifest's ``guidance`` column: the weight, with ``@low-high`` when guidance has an interval."""
        low, high = self.guidance_interval
        return self.guidance if (low, high) == (0.0, 1.0) else f"{self.guidance:g}@{low:g}-{high:g}"
