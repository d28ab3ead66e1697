"""A plain-torch Vision Transformer whose parameter names are timm's ``VisionTransformer``'s.

timm itself imports torchvision (its norm layers use ``torchvision.ops``), which does not install beside
this torch, so the architecture is rebuilt here with the same state-dict keys and shapes: real UNI,
UNI2-h and Virchow/Virchow2 checkpoints load strictly, Phikon (Hugging Face ``ViTModel``) and CONCH
(``visual.trunk``) after key remapping (:mod:`histosynth.encoders.checkpoints`).

Covered: patch embedding, class token, optional register tokens (``reg_token``), learned position
embeddings over the patches only (``no_embed_class``) or over class + registers + patches, pre-norm
blocks with optional LayerScale (``ls1.gamma``/``ls2.gamma``), a GELU MLP or timm's packed SwiGLU
(``SwiGLUPacked``: one ``fc1`` holding value and gate halves, SiLU on the first half), final LayerNorm.
Pooling: the class token, class token + mean patch token (Virchow), or CONCH's attentional pooler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MlpKind = Literal["gelu", "swiglu-packed"]
PoolKind = Literal["cls", "cls+mean", "attn"]


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of one ViT; ``mlp_hidden = int(embed_dim * mlp_ratio)`` as in timm."""

    image_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mlp: MlpKind = "gelu"
    layer_scale: float | None = None  # LayerScale init value (timm ``init_values``); None = no LayerScale
    reg_tokens: int = 0
    no_embed_class: bool = False  # position embeddings cover the patches only
    norm_eps: float = 1e-6
    pool: PoolKind = "cls"
    attn_pool_dim: int = 0  # CONCH: width of the attentional pooler's query (its embedding dim)
    attn_pool_heads: int = 8

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image size {self.image_size} is not a multiple of patch size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed dim {self.embed_dim} is not divisible by {self.num_heads} heads")
        if self.mlp == "swiglu-packed" and self.mlp_hidden % 2:
            raise ValueError(f"a packed SwiGLU needs an even hidden width (got {self.mlp_hidden})")
        if self.pool == "attn" and self.attn_pool_dim % self.attn_pool_heads:
            raise ValueError("the attentional pooler's width must be divisible by its heads")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def prefix_tokens(self) -> int:
        return 1 + self.reg_tokens

    @property
    def pos_tokens(self) -> int:
        return self.grid**2 + (0 if self.no_embed_class else self.prefix_tokens)

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def output_dim(self) -> int:
        """Length of the pooled feature vector."""
        return {"cls": self.embed_dim, "cls+mean": 2 * self.embed_dim, "attn": self.attn_pool_dim}[self.pool]

    def reduced(self, embed_dim: int = 32, depth: int = 2, num_heads: int = 2) -> ViTConfig:
        """The same structure (tokens, MLP kind, LayerScale, pooling) at test size: 2x2 patches."""
        pool_dim = 16 if self.pool == "attn" else 0
        return replace(self, image_size=2 * self.patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                       attn_pool_dim=pool_dim, attn_pool_heads=2 if pool_dim else self.attn_pool_heads)


class _PatchEmbed(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.embed_dim, config.patch_size, config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class _Mlp(nn.Module):
    """timm ``Mlp`` (fc1 -> GELU -> fc2) or ``SwiGLUPacked`` (fc1 -> SiLU(first half) * second half -> fc2)."""

    def __init__(self, dim: int, hidden: int, kind: MlpKind) -> None:
        super().__init__()
        self.kind = kind
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden // 2 if kind == "swiglu-packed" else hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.kind == "swiglu-packed":
            value, gate = x.chunk(2, dim=-1)
            x = F.silu(value) * gate
        else:
            x = F.gelu(x)
        return self.fc2(x)


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = _Attention(dim, config.num_heads)
        self.ls1 = _LayerScale(dim, config.layer_scale) if config.layer_scale is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = _Mlp(dim, config.mlp_hidden, config.mlp)
        self.ls2 = _LayerScale(dim, config.layer_scale) if config.layer_scale is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionalPooler(nn.Module):
    """CONCH's ``AttentionalPooler``: learned queries attend over the (normed) tokens; keys ``query``,
    ``attn.*`` (``nn.MultiheadAttention`` with separate k/v widths), ``ln_q``, ``ln_k``."""

    def __init__(self, dim: int, context_dim: int, heads: int, queries: int = 1) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(queries, dim))
        self.attn = nn.MultiheadAttention(dim, heads, kdim=context_dim, vdim=context_dim)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.ln_k(x).transpose(0, 1)  # (L, N, C)
        query = self.ln_q(self.query).unsqueeze(1).expand(-1, x.shape[0], -1)
        return self.attn(query, context, context, need_weights=False)[0].transpose(0, 1)  # (N, Q, dim)


class VisionTransformer(nn.Module):
    """ViT with timm parameter names; ``forward`` returns the pooled (N, output_dim) features."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = _PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if config.reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, config.reg_tokens, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pos_tokens, dim))
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        if config.pool == "attn":
            self.attn_pool_contrast = AttentionalPooler(config.attn_pool_dim, dim, config.attn_pool_heads)
            self.ln_contrast = nn.LayerNorm(config.attn_pool_dim)

    def init_random(self, generator: torch.Generator) -> VisionTransformer:
        """Fill every parameter from ``generator`` (deterministic test/benchmark weights), in place."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith("gamma"):
                    param.fill_(self.config.layer_scale or 1.0)
                elif param.ndim == 1 and ("norm" in name or name.split(".")[-2].startswith("ln_")):
                    param.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    param.zero_()
                else:
                    fan_in = param[0].numel() if param.ndim > 1 else param.shape[-1]
                    std = 0.02 if "token" in name or "pos_embed" in name or "query" in name else fan_in**-0.5
                    param.copy_(torch.randn(param.shape, generator=generator) * std)
        return self

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All output tokens (N, prefix + patches, dim) after the final norm (timm ``forward_features``)."""
        x = self.patch_embed(x)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.config.reg_tokens:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.config.no_embed_class:
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(x)
        if self.config.pool == "cls":
            return tokens[:, 0]
        if self.config.pool == "cls+mean":
            return torch.cat([tokens[:, 0], tokens[:, self.config.prefix_tokens :].mean(dim=1)], dim=-1)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])
