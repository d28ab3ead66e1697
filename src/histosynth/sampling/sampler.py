"""Class- and mask-conditioned tile sampling with classifier-free guidance.

Guidance follows diffusers' convention: ``out = uncond + w * (cond - uncond)``, so ``w = 0`` is
the unconditional model and ``w = 1`` the conditional one; both branches run in one batched
forward. Every tile draws its initial noise from its own generator seeded by its own seed, so a
tile's pixels do not depend on the batch it was sampled in.

Two optional conditions sit on top (both off, i.e. the code above exactly, unless asked for):
a tile embedding for a denoiser trained with one (``--like``: its own guidance weight, see
:class:`GuidedDenoiser`), and classifier guidance towards a prototype by a latent classifier
(:mod:`histosynth.sampling.guidance`, DDIM only). ``settings.feature_reuse > 1`` swaps in the approximate,
faster DeepCache-style denoiser (:mod:`histosynth.sampling.feature_cache`); 1 runs the exact path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from histosynth.errors import InputError
from histosynth.models.conditioning import mask_fractions
from histosynth.models.denoiser import DenoiserConfig
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.feature_cache import FeatureReuse, check_reusable
from histosynth.sampling.settings import STOCHASTIC_SAMPLERS, SamplerName, SamplingSettings, check_sampler
from histosynth.training.tensors import to_unit_range

__all__ = ["GuidedDenoiser", "SamplerName", "SamplingSettings", "TileSampler", "build_scheduler"]



def build_scheduler(model: LatentDiffusionModel | DenoiserConfig, name: SamplerName):
    """A diffusers scheduler matching the denoiser's (or a denoiser config's) training noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    config = model if isinstance(model, DenoiserConfig) else model.denoiser.config
    common = {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule,
              "prediction_type": config.prediction_type, "timestep_spacing": "trailing"}
    factories = {
        "ddim": lambda: DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True),
        "dpm": lambda: DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2),
        "dpm-sde": lambda: DPMSolverMultistepScheduler(**common, algorithm_type="sde-dpmsolver++", solver_order=2),
        "unipc": lambda: UniPCMultistepScheduler(**common, solver_order=2),
    }
    return factories[check_sampler(name)]()


def native_bfloat16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (else emulation makes it slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
        return any(check() for check in checks if check is not None)
    return False


def resolve_precision(settings: SamplingSettings, device: str | torch.device) -> SamplingSettings:
    """``settings`` with ``precision: auto`` replaced by what ``device`` runs best (bfloat16 where native)."""
    if settings.precision != "auto":
        return settings
    return settings.model_copy(update={"precision": "bfloat16" if native_bfloat16(device) else "float32"})


def step_noise(seeds: Sequence[int], step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The stochastic samplers' noise at ``step``: each tile's from its own seed, so a tile does not depend
    on the batch it ran in (resume and sharding stay byte-identical)."""
    states = [np.random.SeedSequence([int(s), 1, step]).generate_state(1, dtype=np.uint64)[0] for s in seeds]
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(x))) for x in states])


class GuidedDenoiser:
    """Classifier-free-guided model output, ``uncond + w * (cond - uncond)``, in one batched forward.

    The null condition is the null class with all-zero condition maps (mask fractions, or nothing
    for a model without spatial conditions). With tile ``embeddings`` (an embedding denoiser) the
    output is ``uncond + w (cond - uncond) + w_e (cond_e - cond)``, where ``cond`` has the null
    embedding and ``cond_e`` the given one; when every class and mask is null, ``cond == uncond``
    and only two branches run.
    """

    def __init__(self, denoiser: torch.nn.Module, guidance: float, embedding_guidance: float = 1.0,
                 precision: str = "float32") -> None:
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision {precision!r} must be resolved to float32 or bfloat16 first")
        self.denoiser, self.guidance, self.embedding_guidance = denoiser, guidance, embedding_guidance
        self.null_label = denoiser.config.null_label
        self.precision = precision

    def _run(self, *inputs: torch.Tensor) -> torch.Tensor:
        """One denoiser forward in the chosen precision; the output (and the guidance mix) in float32."""
        device = inputs[0].device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            return self.denoiser(*inputs).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, conditions: torch.Tensor,
                 embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if embeddings is not None:
            return self._with_embeddings(x, t, labels, conditions, embeddings)
        w = self.guidance
        if w == 1.0:
            return self._run(x, t.expand(len(x)), labels, conditions)
        null_labels = torch.full_like(labels, self.null_label)
        if w == 0.0:
            return self._run(x, t.expand(len(x)), null_labels, torch.zeros_like(conditions))
        out = self._run(torch.cat([x, x]), t.expand(2 * len(x)), torch.cat([labels, null_labels]),
                        torch.cat([conditions, torch.zeros_like(conditions)]))
        cond, uncond = out.chunk(2)
        return uncond + w * (cond - uncond)

    def _with_embeddings(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, conditions: torch.Tensor,
                         embeddings: torch.Tensor) -> torch.Tensor:
        n, w, w_e = len(x), self.guidance, self.embedding_guidance
        null_labels = torch.full_like(labels, self.null_label)
        zeros = torch.zeros_like(conditions)
        kept = torch.zeros(n, dtype=torch.bool, device=x.device)  # drop_embedding flags
        dropped = ~kept
        if bool((labels == self.null_label).all()) and not bool(conditions.any()):
            if w_e == 1.0:
                return self._run(x, t.expand(n), labels, conditions, embeddings)
            out = self._run(torch.cat([x, x]), t.expand(2 * n), torch.cat([labels, null_labels]),
                            torch.cat([conditions, zeros]), torch.cat([embeddings, embeddings]),
                            torch.cat([kept, dropped]))
            cond_e, uncond = out.chunk(2)
            return uncond + w_e * (cond_e - uncond)
        out = self._run(torch.cat([x, x, x]), t.expand(3 * n), torch.cat([labels, labels, null_labels]),
                        torch.cat([conditions, conditions, zeros]), torch.cat([embeddings] * 3),
                        torch.cat([kept, dropped, dropped]))
        cond_e, cond, uncond = out.chunk(3)
        return uncond + w * (cond - uncond) + w_e * (cond_e - cond)


class TileSampler:
    """Generate tiles for given labels, masks and seeds from a :class:`LatentDiffusionModel`."""

    def __init__(self, model: LatentDiffusionModel, settings: SamplingSettings, device: str | torch.device = "cpu",
                 classifier: torch.nn.Module | None = None):
        self.model = model.to(device)
        self.settings = resolve_precision(settings, device)
        self.device = torch.device(device)
        self.tile_size = model.autoencoder_config.tile_size
        #: The latent prototype classifier for classifier guidance (``prototypes=`` in :meth:`sample`).
        self.classifier = classifier.to(self.device) if classifier is not None else None
        if self.settings.feature_reuse > 1:
            check_reusable(model.denoiser)  # a denoiser it cannot split: one line now, not mid-run
        #: The last :meth:`denoise`'s feature-reuse wrapper (full/partial forward counts), if one ran.
        self.feature_reuse: FeatureReuse | None = None

    def check_mask(self, mask: np.ndarray, source: str = "mask") -> None:
        """A mask must be tile-sized and hold valid class ids (:meth:`LatentDiffusionModel.check_mask`)."""
        self.model.check_mask(mask, source)

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        config = self.model.denoiser.config
        shape = (config.latent_channels, config.latent_size, config.latent_size)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    @torch.inference_mode()
    def denoise(self, latents: torch.Tensor, labels: torch.Tensor, fractions: torch.Tensor,
                on_step: Callable[[], None] | None = None, embeddings: torch.Tensor | None = None,
                prototypes: torch.Tensor | None = None, seeds: Sequence[int] | None = None,
                start: torch.Tensor | None = None) -> torch.Tensor:
        """Run the reverse process from ``latents`` (already noise) with batched CFG.

        ``embeddings`` (N, D) condition an embedding denoiser; ``prototypes`` (N,) ids are the classifier
        guidance targets (used when ``settings.prototype_guidance`` is not 0); ``seeds`` (one per tile) draw
        the step noise of a stochastic sampler. With ``settings.strength`` below 1, ``start`` (N latents of
        reference tiles) is noised with ``latents`` to the level where the last ``strength`` of the schedule
        begins, and only those steps run (SDEdit).
        """
        stochastic = self.settings.sampler in STOCHASTIC_SAMPLERS
        if stochastic and (seeds is None or len(seeds) != len(latents)):
            raise ValueError(f"sampler {self.settings.sampler} needs one seed per tile")
        scheduler = build_scheduler(self.model, self.settings.sampler)
        scheduler.set_timesteps(self.settings.steps, device=self.device)
        timesteps = scheduler.timesteps
        if self.settings.strength < 1:
            if start is None or start.shape != latents.shape:
                raise ValueError("strength below 1 needs the reference tiles' latents, one per tile")
            skip = len(timesteps) - max(1, round(len(timesteps) * self.settings.strength))
            timesteps = timesteps[skip:]
            if hasattr(scheduler, "set_begin_index"):  # multistep solvers count steps from where they begin
                scheduler.set_begin_index(skip)
            latents = scheduler.add_noise(start.to(self.device), latents.to(self.device),
                                          timesteps[:1].repeat(len(latents)))
        else:
            latents = latents.to(self.device) * scheduler.init_noise_sigma
        precision = self.settings.precision
        denoiser = self.model.denoiser
        reuse = self.feature_reuse = None
        if self.settings.feature_reuse > 1:  # one cache per trajectory, shared by the guided and plain forwards
            denoiser = reuse = self.feature_reuse = FeatureReuse(denoiser, self.settings.feature_reuse)
        guided = GuidedDenoiser(denoiser, self.settings.guidance, self.settings.like_weight, precision)
        unguided = GuidedDenoiser(denoiser, 1.0, self.settings.like_weight, precision)
        low, high = self.settings.guidance_interval
        total = self.model.denoiser.config.num_train_timesteps
        labels, fractions = labels.to(self.device), fractions.to(self.device)
        extra = {} if embeddings is None else {"embeddings": embeddings.to(self.device, torch.float32)}
        steer = self._classifier_guidance(scheduler, prototypes)
        for i, t in enumerate(timesteps):
            model = guided if low <= float(t) / total <= high else unguided
            if reuse is not None:
                reuse.begin_step(i)
            out = model(scheduler.scale_model_input(latents, t), t, labels, fractions, **extra)
            if steer is not None:
                out = steer(out, latents, t)
            noise = {"variance_noise": step_noise(seeds, i, latents.shape[1:]).to(self.device)} if stochastic else {}
            latents = scheduler.step(out, t, latents, **noise).prev_sample
            if on_step is not None:
                on_step()
        return latents

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (scaled, shifted) -> uint8 images N x H x W x 3 (:meth:`LatentDiffusionModel.decode`)."""
        return self.model.decode(latents, self.settings.precision)

    def _classifier_guidance(self, scheduler, prototypes: torch.Tensor | None):
        weight = self.settings.prototype_guidance
        if prototypes is None or weight == 0:
            return None
        from histosynth.sampling.classifier_guidance import ClassifierGuidance

        if self.classifier is None:
            raise ValueError("prototype guidance needs a TileSampler built with a classifier")
        targets = prototypes.to(self.device)
        guidance = ClassifierGuidance(self.classifier, weight, self.model.denoiser.config.prediction_type,
                                      scheduler.alphas_cumprod)
        return lambda out, latents, t: guidance(out, latents, t, targets)

    def sample(self, labels: Sequence[int], masks: Sequence[np.ndarray | None], seeds: Sequence[int],
               on_step: Callable[[], None] | None = None, embeddings: np.ndarray | torch.Tensor | None = None,
               prototypes: Sequence[int] | None = None, references: np.ndarray | None = None) -> np.ndarray:
        """Generate one tile per (label, mask, seed); returns uint8 N x H x W x 3.

        A ``None`` mask is "mask unknown" (all-zero fractions); a label may be the null class.
        ``embeddings`` (N, D) and ``prototypes`` (N ids) are the optional extra conditions; ``references``
        (uint8 N x H x W x 3) are the tiles a run with ``settings.strength`` below 1 starts from.
        """
        if not len(labels) == len(masks) == len(seeds):
            raise ValueError("labels, masks and seeds must have the same length")
        for label in labels:
            if not 0 <= label <= self.model.denoiser.config.null_label:
                raise InputError(f"unknown class id {label}")
        size = self.tile_size
        known = torch.tensor([m is not None for m in masks])
        mask_tensor = torch.from_numpy(np.stack([np.zeros((size, size), np.uint8) if m is None else m for m in masks]))
        fractions = mask_fractions(mask_tensor.to(torch.uint8), known, self.model.classes.num_mask_classes,
                                   self.model.autoencoder_config.downsample)
        if embeddings is not None:
            embeddings = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
            if embeddings.shape != (len(labels), self.model.denoiser.config.embedding_dim):
                raise InputError(f"embeddings are {tuple(embeddings.shape)}, the denoiser takes "
                                 f"({len(labels)}, {self.model.denoiser.config.embedding_dim})")
        if prototypes is not None:
            prototypes = self._check_prototypes(prototypes, len(labels))
        start = None if self.settings.strength == 1 else self.encode_references(references, len(labels))
        latents = self.denoise(self.initial_noise(seeds), torch.tensor(list(labels)), fractions, on_step,
                               embeddings, prototypes, seeds=seeds, start=start)
        return self.decode(latents)

    def encode_references(self, references: np.ndarray | None, n: int) -> torch.Tensor:
        """Reference tiles (uint8 N x H x W x 3, tile-sized) -> the latents SDEdit starts from."""
        size = self.tile_size
        if references is None or np.shape(references) != (n, size, size, 3):
            shape = None if references is None else tuple(np.shape(references))
            raise InputError(f"strength below 1 needs {n} reference tiles of {size}x{size}x3; got {shape}")
        images = to_unit_range(torch.from_numpy(np.ascontiguousarray(references)).permute(0, 3, 1, 2))
        device = next(self.model.autoencoder.parameters()).device
        return self.model.encode(images.to(device))

    def _check_prototypes(self, prototypes: Sequence[int], n: int) -> torch.Tensor:
        if len(prototypes) != n:
            raise ValueError("one prototype id per tile is needed")
        if self.classifier is None:
            raise ValueError("prototypes need a TileSampler built with a prototype classifier")
        known = self.classifier.config.num_prototypes
        for p in prototypes:
            if not 0 <= int(p) < known:
                raise InputError(f"prototype id {int(p)} is out of range: the classifier knows {known} prototypes "
                                 f"(0..{known - 1})")
        return torch.tensor([int(p) for p in prototypes])
