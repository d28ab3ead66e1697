"""A trained latent diffusion model folder: ``autoencoder/`` + ``denoiser/`` + ``classes.json``,
and optionally ``mask_model/`` (the class-conditioned mask generation model for large images)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histosynth.data.classes import CLASS_FILE_NAME, ClassList
from histosynth.errors import InputError, ModelFolderError
from histosynth.models.autoencoder import Autoencoder, AutoencoderConfig
from histosynth.models.denoiser import ConditionalDenoiser

AUTOENCODER_DIR, DENOISER_DIR, MASK_MODEL_DIR = "autoencoder", "denoiser", "mask_model"


@dataclass
class LatentDiffusionModel:
    """Autoencoder, denoiser and the class list that gives label ids their meaning."""

    autoencoder: Autoencoder
    denoiser: ConditionalDenoiser
    classes: ClassList
    folder: Path
    mask_model: ConditionalDenoiser | None = None
    #: Mask pixels per cell of the mask model's output (its ``factor`` at training).
    mask_factor: int = 8
    #: Microns per pixel of the training tiles (``trained_on.mpp`` of ``denoiser/``), None when unrecorded.
    mpp: float | None = None

    @classmethod
    def load(cls, folder: str | Path) -> LatentDiffusionModel:
        """Load a model folder; missing parts or mismatched configs fail with one line."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFolderError("model folder not found", folder)
        for part in (AUTOENCODER_DIR, DENOISER_DIR):
            if not (folder / part).is_dir():
                raise ModelFolderError(f"not a histosynth model folder (no {part}/ inside)", folder)
        if not (folder / CLASS_FILE_NAME).is_file():
            raise ModelFolderError(f"missing model file {CLASS_FILE_NAME}", folder)
        autoencoder = Autoencoder.load(folder / AUTOENCODER_DIR)
        ae_config = autoencoder.autoencoder_config
        denoiser = ConditionalDenoiser.load(folder / DENOISER_DIR)
        classes = ClassList.load(folder / CLASS_FILE_NAME)
        den = denoiser.config
        facts = ConditionalDenoiser.read_manifest(folder / DENOISER_DIR)
        labels, mpp = facts.get("labels"), _recorded_mpp(facts.get("trained_on"))
        if labels is not None and labels != classes.labels:
            raise ModelFolderError("classes.json does not match the labels the denoiser was trained on", folder)
        if (den.latent_channels, den.latent_size) != (ae_config.latent_channels, ae_config.latent_size):
            raise ModelFolderError("denoiser latent shape does not match the autoencoder's", folder)
        if (den.num_labels, den.num_mask_classes) != (len(classes.labels), classes.num_mask_classes):
            raise ModelFolderError("denoiser classes do not match classes.json", folder)
        mask_model, mask_factor = None, 8
        if (folder / MASK_MODEL_DIR).is_dir():
            mask_model = ConditionalDenoiser.load(folder / MASK_MODEL_DIR)
            facts = ConditionalDenoiser.read_manifest(folder / MASK_MODEL_DIR)
            mask_factor = int(facts.get("factor", 8))
            mc = mask_model.config
            if mc.mask_conditioning != "none" or mc.latent_channels != classes.num_mask_classes \
                    or mc.num_labels != len(classes.labels):
                raise ModelFolderError("mask_model/ is not a mask model for these classes", folder)
        return cls(autoencoder, denoiser, classes, folder, mask_model, mask_factor, mpp)

    @property
    def autoencoder_config(self) -> AutoencoderConfig:
        """The autoencoder's typed config: tile size, latent shape and the latent statistics (``scale``/``unscale``)."""
        return self.autoencoder.autoencoder_config

    @property
    def identity(self) -> str:
        """``<folder name>@<12 hex>`` of the denoiser's and the autoencoder's weights, for provenance: a
        folder whose decoder was fine-tuned is a different model, even with the same denoiser."""
        import hashlib

        from histosynth.io import file_digest
        from histosynth.models.autoencoder import WEIGHTS_NAME as AUTOENCODER_WEIGHTS
        from histosynth.models.denoiser import WEIGHTS_NAME

        parts = (file_digest(self.folder / DENOISER_DIR / WEIGHTS_NAME),
                 file_digest(self.folder / AUTOENCODER_DIR / AUTOENCODER_WEIGHTS))
        return f"{self.folder.name}@{hashlib.sha256(':'.join(parts).encode()).hexdigest()[:12]}"

    @property
    def tile_size(self) -> int:
        return self.autoencoder_config.tile_size

    def check_mask(self, mask: np.ndarray, source: str = "mask") -> None:
        """A mask must be tile-sized and hold valid class ids (one line naming ``source`` otherwise)."""
        size, known = self.tile_size, self.classes.num_mask_classes
        if mask.shape != (size, size):
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the model makes {size}x{size} tiles", source)
        if mask.max(initial=0) >= known:
            raise InputError(f"mask holds class id {int(mask.max())} but the model knows {known} mask classes", source)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images N x 3 x H x W in [-1, 1] (on the autoencoder's device) -> the diffusion model's latents:
        posterior means, shifted and scaled."""
        return self.autoencoder_config.scale(self.autoencoder.encode(images).latent_dist.mean)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, precision: str = "float32") -> np.ndarray:
        """The diffusion model's latents -> uint8 images N x H x W x 3 (on the autoencoder's device), decoded in
        ``precision`` (float32 or bfloat16)."""
        latents = latents.to(next(self.autoencoder.parameters()).device)
        with torch.autocast(latents.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            images = self.autoencoder.decode(self.autoencoder_config.unscale(latents)).sample.float()
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def to(self, device: torch.device | str) -> LatentDiffusionModel:
        self.autoencoder.to(device)
        self.denoiser.to(device)
        if self.mask_model is not None:
            self.mask_model.to(device)
        return self


def _recorded_mpp(trained_on: object) -> float | None:
    """A positive finite ``mpp`` from a manifest's ``trained_on`` facts, else None (never an error)."""
    value = trained_on.get("mpp") if isinstance(trained_on, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None
