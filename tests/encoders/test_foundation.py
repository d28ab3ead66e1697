"""Foundation encoders: registry, full-size architectures (on the meta device), reduced-size builds,
deterministic embeddings, checkpoints in timm / Hugging Face / CONCH layouts made on the fly, and
one-line errors for missing, unreadable and mismatched weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from histosynth.encoders.foundation import FOUNDATION_SPECS, FoundationEncoder, build_network
from histosynth.encoders.registry import encoder_names, foundation_names, get_encoder
from histosynth.encoders.vit import VisionTransformer
from histosynth.errors import InputError

# Parameter counts of the full-size networks; timm 1.0.31's VisionTransformer with the authors' settings has
# the same state-dict keys and shapes (checked once beside this repository; timm needs torchvision to import).
FULL_SIZE = {"uni": (303_350_784, 1024), "uni2-h": (681_394_176, 1536), "virchow": (631_229_184, 2560),
             "virchow2": (631_239_424, 2560), "phikon": (85_798_656, 768), "conch": (87_567_104, 512)}


def _tiles(n: int = 3, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _tiny(name: str, seed: int = 0) -> FoundationEncoder:
    return FoundationEncoder(FOUNDATION_SPECS[name].reduced(), seed=seed)


def test_registry_names_and_weights_rules(tmp_path: Path) -> None:
    assert set(foundation_names()) <= set(encoder_names())
    assert {"inception", "efficientnet-lite0", "histology", "pixels"} <= set(encoder_names())
    for name in foundation_names():
        with pytest.raises(InputError, match="needs its weights file: pass --weights"):
            get_encoder(name)
    with pytest.raises(InputError, match="uses its packaged weights"):
        get_encoder("pixels", weights=tmp_path / "w.bin")
    with pytest.raises(InputError, match="unknown encoder 'vit-z'"):
        get_encoder("vit-z")
    assert get_encoder("pixels").dim == 768  # old call form unchanged


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_architectures(name: str) -> None:
    spec = FOUNDATION_SPECS[name]
    with torch.device("meta"):
        net = VisionTransformer(spec.vit)
    params, dim = FULL_SIZE[name]
    assert sum(p.numel() for p in net.parameters()) == params
    assert spec.dim == dim
    with torch.device("meta"):
        out = net(torch.zeros(2, 3, spec.vit.image_size, spec.vit.image_size))
    assert tuple(out.shape) == (2, dim)


def test_uni2h_keys_match_timm_names() -> None:
    """A few of timm's own keys for UNI2-h (vit_giant_patch14_224, SwiGLUPacked, 8 registers, no_embed_class)."""
    with torch.device("meta"):
        state = VisionTransformer(FOUNDATION_SPECS["uni2-h"].vit).state_dict()
    expected = {"cls_token": (1, 1, 1536), "reg_token": (1, 8, 1536), "pos_embed": (1, 256, 1536),
                "patch_embed.proj.weight": (1536, 3, 14, 14), "blocks.0.attn.qkv.weight": (4608, 1536),
                "blocks.0.ls1.gamma": (1536,), "blocks.0.mlp.fc1.weight": (8192, 1536),
                "blocks.0.mlp.fc2.weight": (1536, 4096), "blocks.23.ls2.gamma": (1536,), "norm.bias": (1536,)}
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert len(state) == 343


@pytest.mark.parametrize("name", sorted(FOUNDATION_SPECS))
def test_reduced_builds_are_deterministic(name: str) -> None:
    tiles = _tiles()
    a, b, other = _tiny(name, 0), _tiny(name, 0), _tiny(name, 1)
    fa, fb = a.encode(tiles), b.encode(tiles)
    assert fa.shape == (3, FOUNDATION_SPECS[name].reduced().dim) and np.isfinite(fa).all()
    assert np.array_equal(fa, fb)
    assert not np.allclose(fa, other.encode(tiles))
    assert a.identity == f"{name}-tiny@random0"
    assert not np.allclose(fa[0], fa[1])  # different tiles, different embeddings


def test_preprocessing_resizes_and_crops() -> None:
    enc = _tiny("uni")
    size = enc.spec.vit.image_size
    wide = torch.rand(2, 3, 50, 80)
    assert tuple(enc.preprocess(wide).shape) == (2, 3, size, size)
    square = torch.full((1, 3, size, size), 0.5)
    expected = (0.5 - torch.tensor(enc.spec.mean_std[0])) / torch.tensor(enc.spec.mean_std[1])
    assert torch.allclose(enc.preprocess(square)[0, :, 0, 0], expected)
    assert FOUNDATION_SPECS["conch"].mean_std != FOUNDATION_SPECS["uni"].mean_std  # CLIP vs ImageNet


def _hf_legacy(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our (timm) keys written the way transformers 4 ViTModel saves them (Phikon's files)."""
    out = {f"{prefix}embeddings.cls_token": state["cls_token"],
           f"{prefix}embeddings.position_embeddings": state["pos_embed"],
           f"{prefix}embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
           f"{prefix}embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
           f"{prefix}layernorm.weight": state["norm.weight"], f"{prefix}layernorm.bias": state["norm.bias"],
           f"{prefix}pooler.dense.weight": torch.zeros(4, 4), f"{prefix}pooler.dense.bias": torch.zeros(4)}
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        b, hf = f"blocks.{i}.", f"{prefix}encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[b + f"attn.qkv.{kind}"].chunk(3, dim=0)
            out.update({hf + f"attention.attention.query.{kind}": q, hf + f"attention.attention.key.{kind}": k,
                        hf + f"attention.attention.value.{kind}": v,
                        hf + f"attention.output.dense.{kind}": state[b + f"attn.proj.{kind}"],
                        hf + f"intermediate.dense.{kind}": state[b + f"mlp.fc1.{kind}"],
                        hf + f"output.dense.{kind}": state[b + f"mlp.fc2.{kind}"],
                        hf + f"layernorm_before.{kind}": state[b + f"norm1.{kind}"],
                        hf + f"layernorm_after.{kind}": state[b + f"norm2.{kind}"]})
    return out


def _hf_v5(legacy: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 names: layers.N.attention.{q,k,v,o}_proj, layers.N.mlp.fc1/fc2."""
    renames = (("encoder.layer.", "layers."), ("attention.attention.query", "attention.q_proj"),
               ("attention.attention.key", "attention.k_proj"), ("attention.attention.value", "attention.v_proj"),
               ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
               ("output.dense", "mlp.fc2"))
    out = {}
    for key, value in legacy.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def _state(enc: FoundationEncoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in enc.net.state_dict().items()}


def test_timm_keyed_checkpoints_round_trip(tmp_path: Path) -> None:
    tiles = _tiles()
    for name in ("uni", "uni2-h", "virchow2"):
        source = _tiny(name, seed=3)
        state = _state(source)
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / f"{name}.pth")
        save_file(state, str(tmp_path / f"{name}.safetensors"))
        for file in (f"{name}.pth", f"{name}.safetensors"):
            loaded = FoundationEncoder(source.spec, weights=tmp_path / file)
            assert np.allclose(loaded.encode(tiles), source.encode(tiles), atol=1e-6)
            assert loaded.identity.startswith(f"{name}-tiny@") and "random" not in loaded.identity


def test_hf_keyed_phikon_round_trips(tmp_path: Path) -> None:
    tiles = _tiles()
    source = _tiny("phikon", seed=5)
    legacy = _hf_legacy(_state(source))
    variants = {"legacy": legacy, "prefixed": _hf_legacy(_state(source), "vit."), "v5": _hf_v5(legacy)}
    for label, state in variants.items():
        folder = tmp_path / label
        folder.mkdir()
        save_file(state, str(folder / "model.safetensors"))  # a Hugging Face snapshot folder
        loaded = FoundationEncoder(source.spec, weights=folder)
        assert np.allclose(loaded.encode(tiles), source.encode(tiles), atol=1e-6), label


def test_conch_checkpoint_round_trips(tmp_path: Path) -> None:
    tiles = _tiles()
    source = _tiny("conch", seed=7)
    state = {}
    for key, value in _state(source).items():
        pooled = key.startswith(("attn_pool_contrast.", "ln_contrast."))
        state[f"visual.{key}" if pooled else f"visual.trunk.{key}"] = value
    state.update({"text.token_embedding.weight": torch.zeros(10, 4), "logit_scale": torch.zeros(()),
                  "visual.attn_pool_caption.query": torch.zeros(3, 4), "visual.proj_contrast": torch.zeros(16, 16)})
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = FoundationEncoder(source.spec, weights=tmp_path / "pytorch_model.bin")
    assert np.allclose(loaded.encode(tiles), source.encode(tiles), atol=1e-6)


def test_mismatched_weights_are_rejected_in_one_line(tmp_path: Path) -> None:
    uni = _tiny("uni")
    path = tmp_path / "uni_tiny.bin"
    torch.save(_state(uni), path)
    with pytest.raises(InputError) as error:  # full-size UNI from a tiny file: shapes differ
        get_encoder("uni", weights=path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "weights do not fit uni" in message
    assert "shape: cls_token (1, 1, 32) != (1, 1, 1024)" in message and "more)" in message
    with pytest.raises(InputError, match=r"shape: pos_embed .*; missing: reg_token$"):
        build_network(FOUNDATION_SPECS["uni2-h"].reduced(), path)  # no registers, GELU-sized MLP
    with pytest.raises(InputError, match="weights file not found"):
        get_encoder("virchow", weights=tmp_path / "absent.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read weights"):
        get_encoder("phikon", weights=tmp_path / "junk.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder holds no weights file"):
        get_encoder("conch", weights=tmp_path / "empty")
