"""Zero-shot appearance transfer with a latent diffusion model (seed 002 on cross-image attention).

Inputs: an appearance image with its mask, and a target mask. The target mask is rendered as a grey
image (one value per class, 0.1 ... 0.5, plus tiny Gaussian noise: the seed's best setting) and
encoded like an image; both latents are inverted with edit-friendly DDPM noise maps. Sampling then
runs the batch ``[output, appearance, structure]``: appearance and structure replay their own
inversions exactly, while the output starts from the structure's noise and, in the decoder's
self-attention, attends to the appearance's keys and values (cross-image attention); its prediction
is ``no_swap + w * (swap - no_swap)`` (swap guidance); after chosen steps its latent gets AdaIN toward
the appearance latent, per class between the target and appearance masks (alternating classes by
step, or all classes), or over the whole image (the original method's baseline).

Our denoiser also takes the mask as a condition: each chunk gets its own mask's fractions, when the
transfer masks use the model's mask classes; masks of other classes (e.g. IHC: DAB-positive,
hematoxylin, background) condition on the null mask, and only steer AdaIN and the structure image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from histosynth.errors import InputError
from histosynth.data.classes import ClassList
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.transfer.adain import adain, check_classes, classes_for_step, masked_adain
from histosynth.sampling.transfer.attention import SwapSchedule, cross_image_attention
from histosynth.sampling.transfer.backbones import Conditions, HistosynthBackbone, TransferBackbone, take
from histosynth.sampling.transfer.inversion import edit_friendly_invert

AdainChoice = Literal["alternate", "all", "plain", "none"]


@dataclass
class TransferSettings:
    steps: int = 50
    swap_guidance: float = 3.5
    contrast: float = 1.67
    #: per decoder resolution level (0 = latent resolution), the step range in percent
    swap_ranges: dict[int, tuple[float, float]] = field(
        default_factory=lambda: {0: (10, 90), 1: (10, 70), 2: (10, 70), 3: (10, 70)})
    adain: AdainChoice = "alternate"
    adain_range: tuple[float, float] = (20, 100)
    mask_values: tuple[float, float] = (0.1, 0.5)
    mask_noise_sd: float = 0.01
    transfer: bool = True  # False: no swap, no AdaIN (the output replays the structure's inversion)
    condition_on_mask: bool = True  # give the model the masks as its condition when their classes are its own


def fit_appearance(image: np.ndarray, mask: np.ndarray, size: int,
                   source: str = "appearance mask") -> tuple[np.ndarray, np.ndarray]:
    """The appearance image and its mask at ``size`` x ``size``: a pair of another size is centre-cropped to
    its largest square, then resized (image bicubic, mask nearest). Only the appearance's features are used
    (attention keys and values, AdaIN statistics), so its look is simply taken at the resized scale."""
    from histosynth.data.images import pair_mismatch, resize_tile

    mismatch = pair_mismatch("appearance mask", mask, "the appearance image", image)
    if mismatch:
        raise InputError(mismatch, source)
    height, width = mask.shape
    if (height, width) == (size, size):
        return image, mask
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    crop = (slice(y0, y0 + side), slice(x0, x0 + side))
    fitted, fitted_mask = resize_tile(np.ascontiguousarray(image[crop]), np.ascontiguousarray(mask[crop]), (size, size))
    assert fitted_mask is not None
    return fitted, fitted_mask


def render_mask(mask: np.ndarray, num_classes: int, values: tuple[float, float], noise_sd: float,
                rng: np.random.Generator) -> np.ndarray:
    """A class mask as a grey uint8 image: class c -> evenly spaced values in ``values``, plus noise."""
    levels = np.linspace(values[0], values[1], num_classes)
    grey = levels[np.clip(mask, 0, num_classes - 1)] + rng.normal(0, noise_sd, mask.shape)
    return (np.clip(grey, 0, 1)[..., None].repeat(3, axis=2) * 255).round().astype(np.uint8)


class AppearanceTransfer:
    """Transfer the look of one (image, mask) onto target masks with a latent diffusion model.

    ``model``: a :class:`LatentDiffusionModel` or any :class:`TransferBackbone` (e.g. a local Stable
    Diffusion folder through :func:`load_backbone`).
    """

    def __init__(self, model: LatentDiffusionModel | TransferBackbone, settings: TransferSettings | None = None,
                 device: str = "cpu"):
        self.backbone = model if isinstance(model, TransferBackbone) else HistosynthBackbone(model, device)
        self.settings = settings or TransferSettings()
        self.device = self.backbone.device

    @property
    def classes(self) -> ClassList | None:
        """The model's mask classes (None for models without them, e.g. Stable Diffusion)."""
        return self.backbone.classes

    def encode(self, image: np.ndarray) -> torch.Tensor:
        return self.backbone.encode(image)

    def _model_fn(self, conditions: Conditions):
        return lambda x, t: self.backbone.predict(x, t, conditions)

    def check(self, appearance: np.ndarray, appearance_mask: np.ndarray, target_mask: np.ndarray,
              source: str = "target mask") -> list[int]:
        size = self.backbone.tile_size
        for name, array in (("appearance", appearance), ("appearance mask", appearance_mask), ("target mask", target_mask)):
            if array.shape[:2] != (size, size):
                raise InputError(f"{name} is {array.shape[1]}x{array.shape[0]}, the model works on {size}x{size}", source)
        if max(int(appearance_mask.max()), int(target_mask.max())) >= 16:
            raise InputError(f"holds class id {int(max(appearance_mask.max(), target_mask.max()))}; masks must hold "
                             "class ids 0..C-1 (C <= 16)", source)
        return check_classes(torch.from_numpy(target_mask.astype(np.int64)), torch.from_numpy(appearance_mask.astype(np.int64)),
                             source)

    def _conditions(self, label: int | None, masks: list[np.ndarray], n_classes: int) -> Conditions:
        own = self.backbone.classes
        if self.settings.condition_on_mask and own is not None and n_classes <= own.num_mask_classes:
            return self.backbone.conditions(label, masks)
        return self.backbone.conditions(label, None)  # classes the model does not know: the null mask condition

    @torch.inference_mode()
    def transfer(self, appearance: np.ndarray, appearance_mask: np.ndarray, target_mask: np.ndarray,
                 label: int | None = None, seed: int = 0, source: str = "target mask") -> np.ndarray:
        """One transferred tile (uint8 H x W x 3) with ``target_mask``'s structure and ``appearance``'s look."""
        from histosynth.models.conditioning import mask_fractions

        settings, backbone = self.settings, self.backbone
        appearance, appearance_mask = fit_appearance(appearance, appearance_mask, backbone.tile_size)
        class_ids = self.check(appearance, appearance_mask, target_mask, source)
        backbone.check_label(label)
        rng = np.random.default_rng(seed)
        n_classes = max(2, int(max(appearance_mask.max(), target_mask.max())) + 1)
        structure = render_mask(target_mask, n_classes, settings.mask_values, settings.mask_noise_sd, rng)
        own = mask_fractions(torch.from_numpy(np.stack([target_mask, appearance_mask])).to(torch.uint8),
                             torch.ones(2, dtype=torch.bool), n_classes, backbone.factor)
        latent_masks = own.argmax(1).to(self.device)
        conditions = self._conditions(label, [target_mask, appearance_mask, target_mask], n_classes)
        z_app, z_struct = self.encode(appearance), self.encode(structure)
        generator = torch.Generator().manual_seed(seed)
        schedule_config = backbone.schedule
        inv_app = edit_friendly_invert(self._model_fn(take(conditions, slice(1, 2))), z_app, schedule_config,
                                       settings.steps, generator)
        inv_struct = edit_friendly_invert(self._model_fn(take(conditions, slice(2, 3))), z_struct,
                                          schedule_config, settings.steps, generator)
        scheduler = schedule_config.ddim()
        scheduler.set_timesteps(settings.steps)
        x = torch.cat([inv_struct.start, inv_app.start, inv_struct.start]).to(self.device)
        schedule = SwapSchedule(step_ranges=settings.swap_ranges, contrast=settings.contrast, total_steps=settings.steps,
                                enabled=settings.transfer)
        with cross_image_attention(backbone.unet, schedule, backbone.latent_side):
            for index, t in enumerate(scheduler.timesteps):
                schedule.step, schedule.enabled = index, settings.transfer
                swapped = backbone.predict(x, t.expand(3), conditions)
                out = swapped
                if settings.transfer and settings.swap_guidance != 1.0 and any(
                        schedule.active(level) for level in settings.swap_ranges):
                    schedule.enabled = False
                    plain = backbone.predict(x, t.expand(3), conditions)
                    out = swapped.clone()
                    out[0] = plain[0] + settings.swap_guidance * (swapped[0] - plain[0])
                noise = torch.cat([inv_struct.noise_maps[index], inv_app.noise_maps[index],
                                   inv_struct.noise_maps[index]]).to(self.device)
                x = scheduler.step(out, t, x, eta=1.0, variance_noise=noise).prev_sample
                if index == len(scheduler.timesteps) - 1:  # the last step has no variance: land on the inversions
                    # (the output only when it is a replay: with transfer, the structure's correction
                    # would paste the grey mask rendering back in)
                    own = inv_struct.final_residual if not settings.transfer else torch.zeros_like(inv_struct.start)
                    x = x + torch.cat([own, inv_app.final_residual, inv_struct.final_residual]).to(self.device)
                x = self._adain(x, index, latent_masks, class_ids)
        return backbone.decode(x[:1])[0]

    def _adain(self, x: torch.Tensor, index: int, latent_masks: torch.Tensor, class_ids: list[int]) -> torch.Tensor:
        settings = self.settings
        start, end = settings.adain_range
        percent = 100.0 * index / settings.steps
        if not settings.transfer or settings.adain == "none" or not start <= percent < end:
            return x
        if settings.adain == "plain":
            matched = adain(x[:1], x[1:2])
        else:
            classes = classes_for_step(index, class_ids, "all" if settings.adain == "all" else "alternate")
            matched = masked_adain(x[:1], latent_masks[:1], x[1:2], latent_masks[1:2], classes)
        return torch.cat([matched, x[1:]])
