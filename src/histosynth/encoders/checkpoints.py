"""Reading foundation-model weight files and mapping their keys onto :class:`VisionTransformer`.

Accepted files: ``.safetensors``, or a torch pickle (``.bin``/``.pt``/``.pth``, read with
``weights_only=True``), or a folder holding ``model.safetensors`` / ``pytorch_model.bin`` (a Hugging Face
snapshot). A checkpoint wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped and a
``module.`` prefix (DistributedDataParallel) is dropped. Key layouts:

- ``timm``: timm ``VisionTransformer`` names (UNI, UNI2-h, Virchow, Virchow2); a classifier ``head.*`` is ignored.
- ``hf-vit``: Hugging Face ``ViTModel`` (Phikon), legacy ``encoder.layer.N.attention.attention.query`` names
  and the transformers 5 ``layers.N.attention.q_proj`` names, with or without a ``vit.`` prefix; query, key
  and value are fused into timm's ``qkv``; ``pooler.*``, ``classifier.*`` and ``embeddings.mask_token`` are ignored.
- ``conch``: the CONCH CoCa checkpoint: ``visual.trunk.*`` (a timm ViT-B/16 at 448 px),
  ``visual.attn_pool_contrast.*`` and ``visual.ln_contrast.*``; the text towers and caption pooler are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from histosynth.errors import InputError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
KEY_LAYOUTS = ("timm", "hf-vit", "conch")
_SHOWN = 3  # mismatches named per kind in an error message

_HF_RENAMES = (  # (pattern, replacement) applied in order, after the optional "vit." prefix is dropped
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.query|q_proj)\.", r"blocks.\1.attn.q."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.key|k_proj)\.", r"blocks.\1.attn.k."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.value|v_proj)\.", r"blocks.\1.attn.v."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
    (r"^(?:encoder\.layer\.(\d+)\.intermediate\.dense|layers\.(\d+)\.mlp\.fc1)\.", r"blocks.\1\2.mlp.fc1."),
    (r"^(?:encoder\.layer\.(\d+)\.output\.dense|layers\.(\d+)\.mlp\.fc2)\.", r"blocks.\1\2.mlp.fc2."),
    (r"^layernorm\.", "norm."),
)
_HF_IGNORED = re.compile(r"^(pooler\.|classifier\.|embeddings\.mask_token$)")
_CONCH_KEPT = (("visual.trunk.", ""), ("visual.attn_pool_contrast.", "attn_pool_contrast."),
               ("visual.ln_contrast.", "ln_contrast."))
_CONCH_IGNORED = re.compile(r"^(text\.|text_decoder\.|logit_scale$|visual\.(attn_pool_caption|ln_caption|"
                            r"proj_contrast|head)\b|visual\.trunk\.(head|fc_norm)\.)")


def weights_file(path: str | Path) -> Path:
    """The weights file at ``path`` (or inside the folder ``path``); missing -> InputError."""
    path = Path(path)
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise InputError(f"folder holds no weights file ({' or '.join(WEIGHT_FILES)})", path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring), on the CPU."""
    path = weights_file(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as error:  # corrupt, truncated, a pickle with code in it, not a checkpoint at all
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot read weights ({first})", path) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state:
        raise InputError("weights file holds no state dict (a mapping of names to tensors)", path)
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError("weights file holds no tensors", path)
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _from_hf_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("vit.") for k in state if not k.startswith("classifier.")):
        state = {k[len("vit."):] if k.startswith("vit.") else k: v for k, v in state.items()}
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _HF_IGNORED.match(key):
            continue
        for pattern, replacement in _HF_RENAMES:
            new = re.sub(pattern, replacement, key)
            if new != key:
                key = new
                break
        renamed[key] = value
    out: dict[str, torch.Tensor] = {}
    for key, value in renamed.items():
        match = re.match(r"^(blocks\.\d+\.attn)\.([qkv])\.(weight|bias)$", key)
        if match is None:
            out[key] = value
        elif match.group(2) == "q":
            prefix, kind = match.group(1), match.group(3)
            parts = [renamed.get(f"{prefix}.{p}.{kind}") for p in "qkv"]
            if all(p is not None for p in parts):
                out[f"{prefix}.qkv.{kind}"] = torch.cat(parts, dim=0)
            else:  # keep the pieces so the mismatch report names them
                out.update({f"{prefix}.{p}.{kind}": t for p, t in zip("qkv", parts) if t is not None})
        elif f"{match.group(1)}.q.{match.group(3)}" not in renamed:
            out[key] = value
    return out


def _from_conch(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix, target in _CONCH_KEPT:
            if key.startswith(prefix):
                if not _CONCH_IGNORED.match(key):
                    out[target + key[len(prefix):]] = value
                break
        else:
            if not _CONCH_IGNORED.match(key):
                out[key] = value  # reported as unexpected
    return out


def remap_keys(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """``state`` renamed onto :class:`~histosynth.encoders.vit.VisionTransformer` keys (``layout``: see module doc)."""
    if layout == "timm":
        return {k: v for k, v in state.items() if not k.startswith("head.")}
    if layout == "hf-vit":
        return _from_hf_vit(state)
    if layout == "conch":
        return _from_conch(state)
    raise ValueError(f"unknown key layout {layout!r}; known: {', '.join(KEY_LAYOUTS)}")


def mismatches(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """Readable differences between a state dict and a model's: missing, unexpected, wrong shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    for label, items in (("shape", shapes), ("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            problems.append(f"{label}: {', '.join(items[:_SHOWN])}{more}")
    return problems


def load_weights(model: torch.nn.Module, path: str | Path, layout: str, what: str) -> torch.nn.Module:
    """Load ``path`` into ``model`` (which may live on the meta device) strictly, as float32.

    Any missing, unexpected or mis-shaped key raises one :class:`InputError` naming the file, ``what``
    the model is, and the first mismatches of each kind.
    """
    file = weights_file(path)
    state = remap_keys(read_state_dict(file), layout)
    expected = model.state_dict()
    problems = mismatches(state, expected)
    if problems:
        raise InputError(f"weights do not fit {what}: {'; '.join(problems)}", file)
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model
