"""Model folders: ``histosynth.json`` (kind + typed config) beside the model's weights.

Every model histosynth writes is a folder holding ``histosynth.json``::

    {"kind": "autoencoder", "format_version": 1, "config": {...}, ...extra facts}

beside its safetensors weights (and diffusers' ``config.json`` where a diffusers class is the
network). Loading checks the kind first, so a denoiser folder given where an autoencoder is
expected fails with one clear line instead of a shape error deep inside torch.

Every torch model kind inherits :class:`FolderModel`, which gives it the one way to write and read
such a folder (as diffusers' ``ModelMixin``/``ConfigMixin`` give ``save_pretrained``/``from_pretrained``):
``model.save(folder, **facts)`` and ``Kind.load(folder)``. The free functions below are its parts and
serve folders that are not one torch module (the composition model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from histosynth.errors import ModelFolderError
from histosynth.io import MODEL_MANIFEST, write_json

if TYPE_CHECKING:
    from typing import Self

    from torch import nn

    _Module = nn.Module  # type checkers see a torch module; at run time the mixin adds no base
else:
    _Module = object

MANIFEST_NAME = MODEL_MANIFEST
FORMAT_VERSION = 1
ConfigT = TypeVar("ConfigT", bound=BaseModel)


class FolderModel(Generic[ConfigT], _Module):
    """Mixin giving a torch module the model-folder interface: ``save``, ``load`` and ``read_config``.

    A kind names itself and its files in class attributes and is built from its typed config alone::

        class ConditionalDenoiser(FolderModel[DenoiserConfig], nn.Module):
            kind = "denoiser"
            weights_name = "denoiser.safetensors"
            config_type = DenoiserConfig

            def __init__(self, config: DenoiserConfig) -> None: ...

    ``save`` writes the state dict as ``weights_name`` (safetensors, atomically) and ``histosynth.json``
    (kind, config, extra facts); ``load`` checks the kind, validates the config, requires the weights,
    builds ``cls(config)``, loads the weights (a mismatch fails with one line) and returns it in eval mode.
    A kind whose folder holds more (diffusers' files, names beside the config) overrides ``save`` and
    extends ``load``; one whose typed config is not ``self.config`` overrides :meth:`folder_config`.
    """

    #: The ``kind`` its ``histosynth.json`` declares.
    kind: ClassVar[str]
    #: The weights file in its folder.
    weights_name: ClassVar[str]
    #: The pydantic model of its config (``histosynth.json``'s ``config``); a class attribute too, but typed
    #: through ``FolderModel[ConfigT]`` (a ``ClassVar`` may not hold a type variable) so ``read_config`` and
    #: ``folder_config`` return the kind's own config type.
    config_type: type[ConfigT]

    def folder_config(self) -> ConfigT:
        """The typed config ``histosynth.json`` records: ``self.config``."""
        config = getattr(self, "config", None)
        if not isinstance(config, self.config_type):
            raise TypeError(f"{type(self).__name__}.config must be a {self.config_type.__name__}")
        return config

    def save(self, folder: str | Path, **extra: Any) -> None:
        """Write the weights (safetensors, atomically) and ``histosynth.json`` (config + ``extra`` facts)."""
        save_weights(self, Path(folder) / self.weights_name)
        write_folder_manifest(folder, self.kind, self.folder_config(), **extra)

    @classmethod
    def read_config(cls, folder: str | Path) -> ConfigT:
        """The folder's config, checked to declare this kind; no weights are read."""
        return read_folder_config(folder, cls.kind, cls.config_type)

    @classmethod
    def read_manifest(cls, folder: str | Path) -> dict[str, Any]:
        """The folder's whole ``histosynth.json`` (config and recorded facts), checked to declare this kind."""
        return read_folder_manifest(folder, cls.kind)

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """The model in ``folder``, in eval mode; another kind, a mismatched config or missing or
        mismatched weights fail with one line naming the folder."""
        folder = Path(folder)
        config = cls.read_config(folder)
        require_files(folder, cls.weights_name)
        model = cls(config)
        load_weights(model, folder / cls.weights_name)
        return model.eval()


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


def save_weights(module: Any, path: str | Path) -> None:
    """Write ``module``'s state dict to ``path`` as safetensors, atomically (tensors detached, on the CPU)."""
    from safetensors.torch import save_file

    from histosynth.io import atomic_path

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


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


def copy_model_half_precision(source: str | Path, destination: str | Path,
                              keep_run_record: bool = False) -> list[Path]:
    """Copy a model folder, storing every floating-point safetensors tensor as float16.

    Halves the size of shipped weights; loading casts them back to the module's float32
    parameters. Other files are copied unchanged; each rewritten part's ``histosynth.json`` records the
    digest of the float32 weights it was made from (``float16_of``). Training runs (``runs/``, checkpoints)
    stay behind, except, with ``keep_run_record``, each run's ``run.json`` and ``metrics.jsonl`` (what
    trained it, so a copy still says whether it saw labels). Returns the rewritten weight files.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from histosynth.io import atomic_dir, file_digest

    source = Path(source)
    if not source.is_dir():
        raise ModelFolderError("model folder not found", source)
    rewritten = []
    with atomic_dir(Path(destination)) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("runs", "checkpoints"))
        for path in sorted(tmp.rglob("*.safetensors")):
            state = load_file(str(path))
            save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
            facts_path = path.parent / MANIFEST_NAME
            if facts_path.is_file():
                facts = json.loads(facts_path.read_text(encoding="utf-8"))
                facts["float16_of"] = {"weights_sha256": file_digest(source / path.relative_to(tmp))}
                write_json(facts_path, facts)
            rewritten.append(Path(destination) / path.relative_to(tmp))
        if keep_run_record:
            for record in sorted((source / "runs").glob("*/*")):
                if record.name in ("run.json", "metrics.jsonl") and record.is_file():
                    target = tmp / record.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(record, target)
    return rewritten
