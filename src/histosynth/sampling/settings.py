"""Tile sampling settings: one validated place for their defaults, which the CLI, the web app and Ray read.

Kept free of torch so that ``histosynth sample --help`` can show the defaults without importing it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from histosynth.errors import InputError

SamplerName = Literal["unipc", "ddim", "dpm", "dpm-sde"]
#: unipc: UniPC multistep (deterministic; the default); ddim: DDIM (deterministic); dpm: DPM-Solver++ 2M;
#: dpm-sde: its stochastic (SDE) variant, whose step noise each tile draws from its own seed. The default comes
#: first, so lists built from this one (the web form's menu) preselect it.
SAMPLERS: tuple[str, ...] = ("unipc", "ddim", "dpm", "dpm-sde")
STOCHASTIC_SAMPLERS: tuple[str, ...] = ("dpm-sde",)
Precision = Literal["auto", "float32", "bfloat16"]
#: auto: bfloat16 where the hardware computes it natively (CPUs with AVX512-BF16 or AMX, GPUs with bf16),
#: float32 elsewhere. The denoiser and the decoder run in it (docs/benchmarks.md, issue K).
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")


#: Largest feature-reuse interval (full denoiser forwards every N steps); beyond it the deep features are stale.
MAX_FEATURE_REUSE = 10

#: Classifier guidance towards a prototype steps through DDIM only, and its hit rates were measured at DDIM 50
#: in float32 (docs/benchmarks.md): what a prototype-guided run gets for each of these it is not given.
CLASSIFIER_GUIDANCE_DEFAULTS: dict[str, Any] = {"sampler": "ddim", "steps": 50, "precision": "float32"}


def check_sampler(name: Any, source: str | None = None) -> str:
    """``name`` if it is a known sampler, else one line listing them (naming ``source``: a file, a form field).

    The echoed name is shortened to 40 characters, so a request cannot fill the error with its own text."""
    if not isinstance(name, str) or name not in SAMPLERS:
        shown = name if not isinstance(name, str) or len(name) <= 40 else name[:40] + "..."
        raise InputError(f"unknown sampler {shown!r}; choose one of {', '.join(SAMPLERS)}", source)
    return name


class SamplingSettings(BaseModel):
    """How tiles are sampled; checked when made (an unknown sampler, a bad interval or value: one line)."""

    model_config = ConfigDict(extra="forbid")

    #: 20 UniPC steps in ``auto`` precision: the fast defaults of issue K (3.5x less time than the diffusers DDIM-50
    #: loop at a better FID on a bf16 CPU; DDIM 50 scores 85.1, UniPC 20 87.1: docs/benchmarks.md).
    steps: int = Field(20, ge=1)
    #: Classifier-free guidance weight; 1.5: best generation FID of the issue-H sweep (docs/benchmarks.md). An
    #: int stays an int, so the manifest records the weight as it was given.
    guidance: int | float = Field(1.5, ge=0)
    sampler: SamplerName = "unipc"
    batch_size: int = Field(16, ge=1)
    #: Guidance weight of the tile embedding (embedding denoisers, ``--like``): 0 ignores it, 1 = plain conditional.
    like_weight: float = Field(2.0, ge=0)
    #: Classifier-guidance weight towards a prototype (0 = off: the unguided code path exactly).
    prototype_guidance: float = Field(0.0, ge=0)
    #: Noise levels, as fractions ``(low, high)`` of the training timesteps, where classifier-free guidance
    #: applies (Kynkaanniemi et al. 2024); elsewhere the plain conditional model runs (one forward, not two).
    #: ``(0, 1)`` guides every step.
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    #: The denoiser's and decoder's arithmetic; ``auto`` is resolved per device before a run
    #: (``sampler.resolve_precision``): bf16 held FID (87.1 vs 87.1 in float32, UniPC 20).
    precision: Precision = "auto"
    #: DeepCache-style feature reuse (issue K): the full denoiser runs at the first step and then every
    #: ``feature_reuse`` steps; the steps between reuse its cached deep features and recompute only the shallow
    #: path (:mod:`histosynth.sampling.feature_cache`, which states the schedule). Approximate and faster; 1 (the
    #: default) = off, the exact path.
    feature_reuse: int = Field(1, ge=1, le=MAX_FEATURE_REUSE, strict=True)
    #: SDEdit (Meng et al. 2022): the fraction of the schedule run, starting from a reference tile's latents noised
    #: to that level; 1 (the default) starts from pure noise and takes no reference. Lower keeps more of the
    #: reference (its layout and class look), higher draws more freely.
    strength: float = Field(1.0, gt=0.0, le=1.0)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            detail = error.errors()[0]
            where = ".".join(str(p) for p in detail["loc"])
            raise InputError(f"invalid sampling setting {where}: {detail['msg']}") from None

    @field_validator("sampler", mode="before")
    @classmethod
    def _known_sampler(cls, name: Any) -> Any:
        return check_sampler(name)

    @model_validator(mode="after")
    def _consistent(self) -> SamplingSettings:
        low, high = self.guidance_interval
        if not 0.0 <= low <= high <= 1.0:
            raise InputError(f"guidance interval must satisfy 0 <= low <= high <= 1, got {low},{high}")
        if self.prototype_guidance and self.sampler != CLASSIFIER_GUIDANCE_DEFAULTS["sampler"]:
            raise InputError(f"prototype guidance runs in the DDIM sampler; got --sampler {self.sampler} (use ddim)")
        return self

    @property
    def sampler_record(self) -> str:
        """The manifest's ``sampler`` column: the sampler, with ``+bf16`` when the denoiser ran in bfloat16 and
        ``+reuseN`` when it reused deep features for N - 1 of every N steps (``feature_reuse``) and ``+sdeditS``
        when it started from reference tiles at strength S."""
        if self.precision == "auto":
            raise ValueError("resolve the precision for a device before recording it")
        return (self.sampler + ("+bf16" if self.precision == "bfloat16" else "")
                + (f"+reuse{self.feature_reuse}" if self.feature_reuse > 1 else "")
                + (f"+sdedit{self.strength:g}" if self.strength < 1 else ""))

    @property
    def guidance_record(self) -> float | str:
        """The manifest's ``guidance`` column: the weight, with ``@low-high`` when guidance has an interval."""
        low, high = self.guidance_interval
        return self.guidance if (low, high) == (0.0, 1.0) else f"{self.guidance:g}@{low:g}-{high:g}"
