"""The model behind ``histosynth serve``: loaded once, with generation modes and request limits.

A *mode* names what a request does with the painted mask: ``generate`` (class + mask conditioned
sampling) or ``transfer`` (zero-shot appearance transfer of an uploaded tile). A mode declares which
common form fields it uses and which extra fields it needs (uploads, numbers); the page builds its
form from :meth:`GenerationService.info`, so a new mode (e.g. a reference tile for embedding
conditioning) is one more :class:`Mode` in :data:`MODES` and needs no page change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from histosynth.data.classes import ClassList
from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.settings import SamplerName, SamplingSettings, check_sampler
from histosynth.serve.uploads import PALETTE, MaskEncoding, decode_mask, decode_rgb

DEFAULTS = SamplingSettings()
CommonField = Literal["label", "steps", "guidance", "sampler", "seed"]


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for."""

    max_upload_bytes: int = 8 * 2**20  # whole request body
    max_side: int = 2048  # pixels a side of any uploaded image, checked before decoding
    max_steps: int = 50
    max_guidance: float = 20.0
    max_waiting: int = 4  # requests queued behind the running one; more get HTTP 429


@dataclass(frozen=True)
class ModeField:
    """A mode-specific form field: an uploaded ``image`` or ``mask`` (raw values, as on disk), or a ``number``."""

    name: str
    title: str
    kind: Literal["image", "mask", "number"]
    default: float | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class GenerateRequest:
    """One request, validated: class id resolved, uploads decoded to tile-sized arrays."""

    mode: str
    mask: np.ndarray
    label: int
    steps: int
    guidance: float
    seed: int
    sampler: SamplerName
    uploads: dict[str, np.ndarray] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Mode:
    name: str
    title: str
    common: tuple[CommonField, ...]
    fields: tuple[ModeField, ...]
    run: Callable[[GenerationService, GenerateRequest], np.ndarray]


@dataclass
class GeneratedTile:
    """One tile the web app made, and how long it took."""

    image: np.ndarray
    seconds: float


def _run_generate(service: GenerationService, request: GenerateRequest) -> np.ndarray:
    from histosynth.sampling.sampler import SamplingSettings, TileSampler

    settings = SamplingSettings(steps=request.steps, guidance=request.guidance, sampler=request.sampler, batch_size=1)
    sampler = TileSampler(service.model, settings, service.device)
    return sampler.sample([request.label], [request.mask], [request.seed])[0]


def _run_transfer(service: GenerationService, request: GenerateRequest) -> np.ndarray:
    from histosynth.sampling.transfer.appearance import AppearanceTransfer, TransferSettings

    settings = TransferSettings(steps=request.steps, swap_guidance=request.numbers["swap_guidance"])
    runner = AppearanceTransfer(service.model, settings, str(service.device))
    label = None if request.label == service.model.classes.null_id else request.label
    return runner.transfer(request.uploads["appearance"], request.uploads["appearance_mask"], request.mask,
                           label, request.seed, source="mask")


MODES: dict[str, Mode] = {
    "generate": Mode("generate", "Generate from class + mask", ("label", "steps", "guidance", "sampler", "seed"), (),
                     _run_generate),
    "transfer": Mode("transfer", "Transfer an appearance onto the mask", ("label", "steps", "seed"), (
        ModeField("appearance", "Appearance tile (model tile size)", "image"),
        ModeField("appearance_mask", "Its mask (values as in training masks)", "mask"),
        ModeField("swap_guidance", "Swap guidance", "number", 3.5, 0.0, 10.0),
    ), _run_transfer),
}


MAX_SEED = 2**31 - 1


def _shown(text: str, most: int = 40) -> str:
    """``repr(text)``, shortened, for echoing a request's value in an error."""
    return repr(text if len(text) <= most else text[:most] + "...")


def resolve_label(classes: ClassList, text: str) -> int:
    """A class name or id from a request -> class id; empty means the null class. One-line ``InputError``."""
    text = text.strip()
    if text == "":
        return classes.null_id
    try:
        return classes.resolve_label(text)
    except ValueError:  # e.g. a digit-like character int() refuses ("²")
        raise InputError(f"unknown class {_shown(text)}", "label") from None


def _number(values: Mapping[str, str], name: str, default: float | None, low: float, high: float,
            whole: bool = False) -> float:
    text = values.get(name, "")
    if text.strip() == "":
        if default is None:
            raise InputError("missing value", name)
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise InputError(f"{_shown(text)} is not a {'whole ' if whole else ''}number", name) from None
    if not low <= value <= high:  # also rejects nan
        raise InputError(f"{value} is outside {low:g}..{high:g}", name)
    return value


class GenerationService:
    """A loaded model plus the modes that run on it. Not thread-safe: the app runs one request at a time."""

    def __init__(self, model: LatentDiffusionModel, device: str = "cpu", limits: ServeLimits | None = None) -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.limits = limits or ServeLimits()
        self.tile_size = model.autoencoder_config.tile_size
        self.identity = model.identity

    def info(self) -> dict:
        """What the page needs to build its form: classes, palette, limits, modes, whether a mask model exists."""
        classes = self.model.classes
        return {
            "model": self.identity, "tile_size": self.tile_size, "labels": classes.labels,
            "mask_model": self.model.mask_model is not None,
            "mask_classes": classes.mask_classes, "mask_values": {str(k): v for k, v in classes.mask_values.items()},
            "palette": [list(c) for c in PALETTE], "limits": asdict(self.limits),
            "modes": [{"name": m.name, "title": m.title, "common": list(m.common),
                       "fields": [asdict(f) for f in m.fields]} for m in MODES.values()],
        }

    def parse(self, values: Mapping[str, str], files: Mapping[str, bytes]) -> GenerateRequest:
        """Validate a submitted form (text fields and uploaded files) into a :class:`GenerateRequest`."""
        limits, classes = self.limits, self.model.classes
        mode = MODES.get(values.get("mode", "generate"))
        if mode is None:
            raise InputError(f"unknown mode {_shown(values.get('mode', ''))}; choose {', '.join(MODES)}", "mode")
        encoding: MaskEncoding = values.get("mask_encoding", "raw")  # type: ignore[assignment]
        if encoding not in ("ids", "raw"):
            raise InputError("must be ids (pixel = class id) or raw (values as in training masks)", "mask_encoding")
        if "mask" not in files:
            raise InputError("missing upload: paint or upload a mask", "mask")
        mask = decode_mask(files["mask"], "mask", limits.max_side, classes, encoding, self.tile)
        label = resolve_label(classes, values.get("label", ""))
        sampler = check_sampler(values.get("sampler", DEFAULTS.sampler) or DEFAULTS.sampler, "sampler")
        request = GenerateRequest(
            mode=mode.name, mask=mask, label=label, sampler=sampler,  # type: ignore[arg-type]
            steps=int(_number(values, "steps", DEFAULTS.steps, 1, limits.max_steps, whole=True)),
            guidance=_number(values, "guidance", DEFAULTS.guidance, 0.0, limits.max_guidance),
            seed=int(_number(values, "seed", 0, 0, MAX_SEED, whole=True)))
        for spec in mode.fields:
            if spec.kind == "number":
                request.numbers[spec.name] = _number(values, spec.name, spec.default, spec.minimum or 0.0,
                                                     spec.maximum if spec.maximum is not None else float("inf"))
                continue
            if spec.name not in files:
                raise InputError(f"missing upload: {spec.title}", spec.name)
            request.uploads[spec.name] = (
                decode_rgb(files[spec.name], spec.name, limits.max_side, self.tile) if spec.kind == "image"
                else decode_mask(files[spec.name], spec.name, limits.max_side, classes, "raw", self.tile))
        return request

    @property
    def tile(self) -> tuple[int, int]:
        """(width, height) every uploaded image must have: the model's tiles."""
        return self.tile_size, self.tile_size

    def run(self, request: GenerateRequest) -> GeneratedTile:
        """Generate one tile (blocking; call it off the event loop)."""
        start = time.perf_counter()
        image = MODES[request.mode].run(self, request)
        return GeneratedTile(image=image, seconds=time.perf_counter() - start)

    def procedural_mask(self, foreground: float, seed: int) -> np.ndarray:
        """A gland-like tile-sized class-id mask with ``foreground`` of its pixels set."""
        from histosynth.sampling.masks import procedural_mask

        if not 0.0 <= foreground <= 1.0:
            raise InputError(f"{foreground} is outside 0..1", "foreground")
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"{seed} is outside 0..{MAX_SEED}", "seed")
        return procedural_mask(self.tile_size, foreground, seed)

    def model_mask_request(self, label: str, seed: int, steps: int | None = None) -> tuple[int, int, int]:
        """Validate a mask-model request: (class id, seed, steps). ``label`` is a name or id; empty means the
        null class (an unconditional layout). One line when the folder has no mask model."""
        from histosynth.sampling.masks import MASK_MODEL_STEPS, require_mask_model

        require_mask_model(self.model)
        label_id = resolve_label(self.model.classes, label)
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"{seed} is outside 0..{MAX_SEED}", "seed")
        steps = MASK_MODEL_STEPS if steps is None else steps
        if not 1 <= steps <= self.limits.max_steps:
            raise InputError(f"{steps} is outside 1..{self.limits.max_steps}", "steps")
        return label_id, seed, steps

    def model_mask(self, label_id: int, seed: int, steps: int) -> np.ndarray:
        """A tile-sized class-id mask from the model folder's mask model (blocking; call it off the event loop)."""
        from histosynth.sampling.masks import generate_tile_masks

        return generate_tile_masks(self.model, [label_id], [seed], steps=steps, device=self.device)[0]
