"""Pathology foundation encoders (UNI, UNI2-h, CONCH, Phikon, Virchow, Virchow2) on local weight files.

Nothing is downloaded: the user passes the weights they obtained from the authors (``--weights``). Each
:class:`FoundationSpec` states the architecture, the key layout of the published checkpoint, the
preprocessing (resize the shorter side to the input size with the stated interpolation, centre-crop,
normalise) and the output, as the authors' model cards use them:

| name | architecture | input | output (dim) |
|---|---|---|---|
| uni | ViT-L/16, LayerScale | 224, bilinear, ImageNet | class token (1024) |
| uni2-h | ViT-g/14 variant: 1536 wide, 24 blocks, SwiGLU, 8 registers | 224, bilinear, ImageNet | class token (1536) |
| virchow | ViT-H/14, packed SwiGLU, LayerScale | 224, bicubic, ImageNet | class + mean patch token (2560) |
| virchow2 | as virchow + 4 registers | 224, bicubic, ImageNet | class + mean patch token (2560) |
| phikon | ViT-B/16 (Hugging Face ViTModel keys) | 224, bicubic, ImageNet | class token (768) |
| conch | ViT-B/16 at 448 + attentional pooler | 448, bicubic, OpenAI CLIP | pooled embedding (512) |

CONCH's output is its ``encode_image(proj_contrast=False, normalize=False)``; ImageNet / OpenAI CLIP
stand for those mean/std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from histosynth.encoders.base import FeatureEncoder
from histosynth.encoders.checkpoints import load_weights, weights_file
from histosynth.encoders.vit import VisionTransformer, ViTConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


@dataclass(frozen=True)
class FoundationSpec:
    """One foundation encoder: architecture, checkpoint key layout, preprocessing, output."""

    name: str
    title: str
    vit: ViTConfig
    key_layout: Literal["timm", "hf-vit", "conch"]
    interpolation: Literal["bilinear", "bicubic"]
    mean_std: tuple[tuple[float, float, float], tuple[float, float, float]] = IMAGENET
    source: str = ""  # where users obtain the weights (never fetched by histosynth)

    @property
    def dim(self) -> int:
        return self.vit.output_dim

    @property
    def output(self) -> str:
        return {"cls": "class token", "cls+mean": "class token + mean patch token",
                "attn": "attentional-pooler embedding (proj_contrast=False)"}[self.vit.pool]

    def reduced(self) -> FoundationSpec:
        """The same architecture family at test size (``<name>-tiny``: width 32, 2 blocks, 2x2 patches)."""
        return replace(self, name=f"{self.name}-tiny", vit=self.vit.reduced())

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts (architecture, preprocessing, output) for embedding files."""
        return {"name": self.name, "title": self.title, "dim": self.dim, "output": self.output,
                "input_size": self.vit.image_size, "interpolation": self.interpolation,
                "mean": list(self.mean_std[0]), "std": list(self.mean_std[1]), "key_layout": self.key_layout,
                "architecture": {k: v for k, v in asdict(self.vit).items() if v is not None}}


FOUNDATION_SPECS: dict[str, FoundationSpec] = {
    spec.name: spec
    for spec in (
        FoundationSpec("uni", "UNI (ViT-L/16)", ViTConfig(patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                                                        layer_scale=1e-5),
                       "timm", "bilinear", source="huggingface.co/MahmoodLab/UNI pytorch_model.bin"),
        FoundationSpec("uni2-h", "UNI2-h (ViT-g/14 variant, SwiGLU, 8 registers)",
                       ViTConfig(patch_size=14, embed_dim=1536, depth=24, num_heads=24, mlp_ratio=2.66667 * 2,
                                 mlp="swiglu-packed", layer_scale=1e-5, reg_tokens=8, no_embed_class=True),
                       "timm", "bilinear", source="huggingface.co/MahmoodLab/UNI2-h pytorch_model.bin"),
        FoundationSpec("virchow", "Virchow (ViT-H/14, SwiGLU)",
                       ViTConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_ratio=5.3375,
                                 mlp="swiglu-packed", layer_scale=1e-5, pool="cls+mean"),
                       "timm", "bicubic", source="huggingface.co/paige-ai/Virchow pytorch_model.bin"),
        FoundationSpec("virchow2", "Virchow2 (ViT-H/14, SwiGLU, 4 registers)",
                       ViTConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_ratio=5.3375,
                                 mlp="swiglu-packed", layer_scale=1e-5, reg_tokens=4, pool="cls+mean"),
                       "timm", "bicubic", source="huggingface.co/paige-ai/Virchow2 pytorch_model.bin"),
        FoundationSpec("phikon", "Phikon (ViT-B/16, iBOT)", ViTConfig(norm_eps=1e-12), "hf-vit", "bicubic",
                       source="huggingface.co/owkin/phikon model.safetensors"),
        FoundationSpec("conch", "CONCH vision tower (ViT-B/16 at 448 + attentional pooler)",
                       ViTConfig(image_size=448, pool="attn", attn_pool_dim=512, attn_pool_heads=8),
                       "conch", "bicubic", OPENAI_CLIP, source="huggingface.co/MahmoodLab/CONCH pytorch_model.bin"),
    )
}


def build_network(spec: FoundationSpec, weights: str | Path | None = None, seed: int = 0) -> VisionTransformer:
    """The spec's network, loaded from ``weights`` (strict; one-line error on mismatch) or random from ``seed``."""
    with torch.device("meta"):
        net = VisionTransformer(spec.vit)
    if weights is not None:
        return load_weights(net, weights, spec.key_layout, f"{spec.name} ({spec.title})")
    return net.to_empty(device="cpu").init_random(torch.Generator().manual_seed(seed))


class FoundationEncoder(FeatureEncoder):
    """A :class:`FoundationSpec` as a :class:`FeatureEncoder`.

    ``weights=None`` gives deterministic random weights from ``seed`` (tests and throughput benchmarks
    only; the identity then says ``@random<seed>``). The registry refuses foundation names without weights.
    """

    def __init__(self, spec: FoundationSpec, device: str | torch.device = "cpu", weights: str | Path | None = None,
                 seed: int = 0) -> None:
        super().__init__(device)
        self.spec, self.name, self.dim, self.seed = spec, spec.name, spec.dim, seed
        self.weights = weights_file(weights) if weights is not None else None
        self.net = build_network(spec, self.weights, seed).requires_grad_(False).eval().to(self.device)
        mean, std = spec.mean_std
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @property
    def identity(self) -> str:
        return self.weights_identity(self.weights) if self.weights is not None else f"{self.name}@random{self.seed}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> shorter side resized to the input size, centre crop, normalised."""
        size = self.spec.vit.image_size
        height, width = images.shape[-2:]
        if (height, width) != (size, size):
            scale = size / min(height, width)
            target = (max(size, round(height * scale)), max(size, round(width * scale)))
            images = F.interpolate(images, size=target, mode=self.spec.interpolation, align_corners=False,
                                   antialias=True).clamp(0.0, 1.0)
            top, left = (target[0] - size) // 2, (target[1] - size) // 2
            images = images[..., top : top + size, left : left + size]
        return (images - self._mean) / self._std

    def encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, dim) of a float batch (N,3,H,W) in [0, 1] on ``self.device``."""
        return self.net(self.preprocess(images))
