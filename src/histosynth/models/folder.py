"""Model folders: ``histosynth.json`` (kind + typed config) beside diffusers' own files.

Every model histosynth writes is a folder holding ``histosynth.json``::

    {"kind": "autoencoder", "format_version": 1, "config": {...}}

plus diffusers' ``config.json`` and ``diffusion_pytorch_model.safetensors`` where a diffusers class
is the network. Loading checks the kind first, so a denoiser folder given where an autoencoder is
expected fails with one clear line instead of a shape error deep inside torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from histosynth.errors import ModelFolderError
from histosynth.io import MODEL_MANIFEST, write_json

MANIFEST_NAME = MODEL_MANIFEST
FORMAT_VERSION = 1
ConfigT = TypeVar("ConfigT", bound=BaseModel)


def write_folder_manifest(folder: str | Path, kind: str, config: BaseModel, **extra: Any) -> None:
    """Write ``histosynth.json`` declaring the folder's kind and config."""
    payload = {"kind": kind, "format_version": FORMAT_VERSION, "config": config.model_dump(mode="json")}
    payload.update(extra)
    write_json(Path(folder) / MANIFEST_NAME, payload)


def read_folder_manifest(folder: str | Path, expected_kind: str) -> dict[str, Any]:
    """Read and check ``histosynth.json``: it must exist and declare ``expected_kind``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError("model folder not found", folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ModelFolderError(f"not a histosynth model folder (no {MANIFEST_NAME})", folder)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelFolderError(f"{MANIFEST_NAME} is not valid JSON ({error.msg})", folder) from None
    kind = payload.get("kind")
    if kind != expected_kind:
        raise ModelFolderError(f"folder holds a model of kind {kind!r}, expected {expected_kind!r}", folder)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(
            f"format version {payload.get('format_version')} is not supported (expected {FORMAT_VERSION})", folder
        )
    return payload


def read_folder_config(folder: str | Path, expected_kind: str, config_type: type[ConfigT]) -> ConfigT:
    """Read ``histosynth.json`` and validate its config against ``config_type``."""
    payload = read_folder_manifest(folder, expected_kind)
    try:
        return config_type.model_validate(payload.get("config", {}))
    except ValidationError as error:
        detail = error.errors()[0]
        where = ".".join(str(p) for p in detail["loc"])
        raise ModelFolderError(f"config does not match a {expected_kind} ({where}: {detail['msg']})", folder) from None


def require_files(folder: str | Path, *names: str) -> None:
    """Raise a one-line error naming the first missing file."""
    for name in names:
        if not (Path(folder) / name).is_file():
            raise ModelFolderError(f"missing model file {name}", folder)


def save_weights_folder(module: Any, folder: str | Path, weights_name: str, kind: str, config: BaseModel,
                        **extra: Any) -> None:
    """Write ``module``'s state dict as ``weights_name`` (safetensors, atomically) and ``histosynth.json``."""
    from safetensors.torch import save_file

    from histosynth.io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(folder / weights_name) as tmp:
        save_file(state, str(tmp))
    write_folder_manifest(folder, kind, config, **extra)


def load_weights(module: Any, path: str | Path) -> None:
    """Load a safetensors file into ``module``; mismatched tensors fail with one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelFolderError(f"weights are unreadable ({error})", path) from None
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ModelFolderError(f"weights do not match the config ({first})", path) from None


def copy_model_half_precision(source: str | Path, destination: str | Path) -> list[Path]:
    """Copy a model folder, storing every floating-point safetensors tensor as float16.

    Halves the size of shipped weights; loading casts them back to the module's float32
    parameters. Other files are copied unchanged. Returns the rewritten weight files.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from histosynth.io import atomic_dir

    source = Path(source)
    if not source.is_dir():
        raise ModelFolderError("model folder not found", source)
    rewritten = []
    with atomic_dir(Path(destination)) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("runs", "checkpoints"))
        for path in sorted(tmp.rglob("*.safetensors")):
            state = load_file(str(path))
            save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
            rewritten.append(Path(destination) / path.relative_to(tmp))
    return rewritten
