"""A local Stable Diffusion 1.x / 2.x folder (diffusers layout) as an appearance-transfer backbone.

Nothing is downloaded: every part is read from the folder (``local_files_only``), and a folder that
lacks a part fails with one line listing what is missing. Text conditions every sample with the same
prompt (empty by default, as zero-shot transfer needs no text); masks steer only AdaIN and the
structure image, since Stable Diffusion takes no mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from histosynth.data.classes import ClassList
from histosynth.errors import InputError, ModelFolderError
from histosynth.sampling.transfer.backbones import Conditions, NoiseSchedule, TransferBackbone

#: part -> (config file, accepted weight files)
REQUIRED_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "unet": ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                             "diffusion_pytorch_model.bin")),
    "vae": ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                            "diffusion_pytorch_model.bin")),
    "text_encoder": ("config.json", ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin")),
    "tokenizer": ("vocab.json", ("merges.txt",)),
    "scheduler": ("scheduler_config.json", ()),
}


def missing_parts(folder: Path) -> list[str]:
    """Files a Stable Diffusion folder lacks (``part/file``; ``part/a|b`` when any of several would do)."""
    missing = []
    for part, (config, weights) in REQUIRED_PARTS.items():
        if not (folder / part / config).is_file():
            missing.append(f"{part}/{config}")
        if weights and not any((folder / part / name).is_file() for name in weights):
            missing.append(f"{part}/{'|'.join(weights)}")
    return missing


def _variant(folder: Path, part: str) -> str | None:
    names = REQUIRED_PARTS[part][1]
    return "fp16" if not (folder / part / names[0]).is_file() and (folder / part / names[1]).is_file() else None


class StableDiffusionBackbone(TransferBackbone):
    """UNet2DConditionModel + AutoencoderKL + CLIP text encoder read from a local folder."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", prompt: str = "",
                 classes: ClassList | None = None, tile_size: int | None = None) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        super().__init__(device)
        folder = Path(folder)
        missing = missing_parts(folder)
        if missing:
            raise ModelFolderError(f"Stable Diffusion folder is missing {', '.join(missing)}", folder)
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ModuleNotFoundError:
            raise ModelFolderError("Stable Diffusion folders need the 'transformers' package "
                                   "(pip install 'histosynth[sd]')", folder) from None
        try:
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True,
                                                        variant=_variant(folder, "unet"))
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True,
                                                variant=_variant(folder, "vae"))
            text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True,
                                                         variant=_variant(folder, "text_encoder"))
            tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelFolderError(f"not a loadable Stable Diffusion folder ({first})", folder) from None
        import json

        self.unet = unet.to(self.device).eval().float()
        self.vae = vae.to(self.device).eval().float()
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.tile_size = tile_size or int(unet.config.sample_size) * self.factor
        levels = 2 ** (len(unet.config.block_out_channels) - 1)
        if self.tile_size % (self.factor * levels):
            raise InputError(f"tile size {self.tile_size} is not a multiple of {self.factor * levels}, which this "
                             "UNet needs", folder)
        self.schedule = NoiseSchedule.of(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
        self.classes = classes
        self.prompt = prompt
        self.identity = f"{folder.name}@stable-diffusion"
        with torch.inference_mode():
            tokens = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                               return_tensors="pt").input_ids
            self.prompt_embedding = text_encoder.float()(tokens)[0].to(self.device)

    def encode(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().to(self.device) / 127.5 - 1
        with torch.inference_mode():
            return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        images = self.vae.decode(latents.to(self.device) / self.vae.config.scaling_factor).sample
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def conditions(self, label: int | None, masks: list[np.ndarray] | None) -> Conditions:
        n = len(masks) if masks is not None else 3
        return (self.prompt_embedding.expand(n, -1, -1),)

    def predict(self, x: torch.Tensor, t: torch.Tensor, conditions: Conditions) -> torch.Tensor:
        return self.unet(x, t.to(self.device), encoder_hidden_states=conditions[0]).sample

    def check_label(self, label: int | None) -> None:
        if label is not None:
            raise InputError("Stable Diffusion backbones take no class label (give --prompt instead)")
