"""Generation steered by a reference tile (``--like``) or by a prototype (classifier guidance).

- :class:`~histosynth.sampling.classifier_guidance.ClassifierGuidance` (the sampler's part) adds
  ``w * grad log C(y | z_t, t)`` of a latent prototype classifier
  to the model output in the DDIM loop: ``eps <- eps - w sqrt(1 - a_t) grad`` (Dhariwal & Nichol),
  converted for v-prediction (``v <- v + d_eps / sqrt(a_t)``, the same step as the guided eps).
- :func:`embed_reference` turns a reference tile into the embedding an embedding denoiser was
  trained on (same registry encoder, checked by weights identity).
- :func:`generate_guided` plans such tiles as manifest rows and hands them to the one dataset writer
  (:mod:`histosynth.sampling.writer`: resumable, refuses other settings). Tiles may have no mask (the
  mask column is then empty, "mask unknown", as in real manifests); the extra ``condition`` and
  ``prototype`` columns record what steered each tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histosynth.errors import ModelFolderError
from histosynth.io import file_digest
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.pipeline import DENOISER_DIR, LatentDiffusionModel
from histosynth.models.prototype_classifier import WEIGHTS_NAME as CLASSIFIER_WEIGHTS
from histosynth.models.prototype_classifier import PrototypeClassifier
from histosynth.sampling.generate import MaskSource, choose_mask_source
from histosynth.sampling.sampler import SamplingSettings, TileSampler, resolve_precision
from histosynth.sampling.writer import MANIFEST_COLUMNS, GenerationResult, SyntheticRow, check_plan, write_dataset

GUIDED_COLUMNS = (*MANIFEST_COLUMNS, "condition", "prototype")
GUIDED_KIND = "sample --like/--prototype or synthesize-balanced"  # how a refused folder names the verb


def load_guidance_classifier(folder: str | Path,
                             model: LatentDiffusionModel) -> tuple[PrototypeClassifier, list[str], str]:
    """Classifier, prototype names and identity; refused unless it matches ``model``'s latents and schedule."""
    folder = Path(folder)
    classifier = PrototypeClassifier.load(folder)
    names = classifier.prototypes
    c, d, ae = classifier.config, model.denoiser.config, model.autoencoder_config
    if (c.latent_channels, c.latent_size) != (d.latent_channels, d.latent_size):
        raise ModelFolderError(f"classifier latents are {c.latent_channels}x{c.latent_size}x{c.latent_size}, the "
                               f"model's {d.latent_channels}x{d.latent_size}x{d.latent_size}", folder)
    if (c.num_train_timesteps, c.beta_schedule) != (d.num_train_timesteps, d.beta_schedule):
        raise ModelFolderError("classifier was trained under another noise schedule than the model's", folder)
    scaling = PrototypeClassifier.read_manifest(folder).get("latent_scaling")
    if scaling is not None and not np.allclose(
            [scaling["scaling_factor"], *scaling["latent_shift"]], [ae.scaling_factor, *ae.latent_shift], rtol=1e-5):
        raise ModelFolderError("classifier was trained on latents of another autoencoder than the model's", folder)
    return classifier, names, f"{folder.name}@{file_digest(folder / CLASSIFIER_WEIGHTS)[:12]}"


def embed_reference(model: LatentDiffusionModel, image_path: str | Path,
                    device: str = "cpu") -> tuple[np.ndarray, str]:
    """The embedding of a reference tile (resized to the model's tile size) and ``<file>@<sha12>``."""
    from PIL import Image

    from histosynth.data.images import read_rgb
    from histosynth.encoders.registry import get_encoder
    config = model.denoiser.config
    if not config.embedding_dim or not config.embedding_encoder:
        raise ModelFolderError("this model is not conditioned on tile embeddings (needed by --like); train one "
                               "with `histosynth train like-model`", model.folder)
    encoder = get_encoder(config.embedding_encoder, device)
    trained_with = ConditionalDenoiser.read_manifest(model.folder / DENOISER_DIR).get("embedding_encoder_identity")
    if trained_with is not None and trained_with != encoder.identity:
        raise ModelFolderError(f"the denoiser was trained on {trained_with} embeddings but this install's encoder is "
                               f"{encoder.identity}", model.folder)
    image = read_rgb(image_path)
    size = model.autoencoder_config.tile_size
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    embedding = encoder.encode([image])[0].astype(np.float32)
    if embedding.shape != (config.embedding_dim,):
        raise ModelFolderError(f"encoder {config.embedding_encoder} gives {embedding.shape[0]}-d features, the "
                               f"denoiser takes {config.embedding_dim}", model.folder)
    return embedding, f"{Path(image_path).name}@{file_digest(image_path)[:12]}"


@dataclass
class GuidedTile:
    """One tile to generate: id, class id (or the null class), optional mask and extra conditions."""

    id: str
    label: int
    seed: int
    mask: np.ndarray | None = None
    mask_source: str = ""
    embedding: np.ndarray | None = None
    prototype: int | None = None
    condition: str = ""
    kind: tuple[bool, bool] = field(init=False)

    def __post_init__(self) -> None:
        self.kind = (self.embedding is not None, self.prototype is not None)


def guided_row(job: GuidedTile, settings: SamplingSettings, names: Sequence[str], identity: str) -> SyntheticRow:
    """The manifest row of a guided tile: no mask file when it has no mask, the class name (empty for the
    null class), and the ``condition`` and ``prototype`` columns."""
    return SyntheticRow.of(job.id, mask=job.mask is not None, label=names[job.label] if job.label < len(names) else "",
                           seed=job.seed, model=identity, sampler=settings.sampler_record, steps=settings.steps,
                           guidance=settings.guidance_record, mask_source=job.mask_source,
                           extra={"condition": job.condition, "prototype": "" if job.prototype is None else
                                  str(job.prototype)})


def guided_plan(model: LatentDiffusionModel, tiles: Sequence[GuidedTile],
                settings: SamplingSettings) -> list[tuple[SyntheticRow, GuidedTile]]:
    """Every tile with its manifest row, in manifest order."""
    identity = model.identity
    return [(guided_row(job, settings, model.classes.labels, identity), job) for job in tiles]


def check_guided_output(model: LatentDiffusionModel, out: str | Path, tiles: Sequence[GuidedTile],
                        settings: SamplingSettings, device: str = "cpu") -> None:
    """Every check :func:`generate_guided` makes before it writes (one line each), for callers that want
    them done before a progress bar starts."""
    rows = [row for row, _ in guided_plan(model, tiles, resolve_precision(settings, device))]
    check_plan(out, rows, model.tile_size, GUIDED_COLUMNS, GUIDED_KIND)


def generate_guided(
    model: LatentDiffusionModel,
    out: str | Path,
    tiles: list[GuidedTile],
    settings: SamplingSettings,
    classifier: PrototypeClassifier | None = None,
    device: str = "cpu",
    on_tile: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Write ``tiles`` into ``out``; ids already written are skipped, so a rerun resumes. A folder of
    someone else's files, or tiles made with other settings, are refused in one line before any work."""
    settings = resolve_precision(settings, device)
    planned = guided_plan(model, tiles, settings)
    sampler = TileSampler(model, settings, device, classifier)

    def make(batch: list[tuple[SyntheticRow, GuidedTile]]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        jobs = [job for _, job in batch]
        embeddings = np.stack([j.embedding for j in jobs]) if jobs[0].embedding is not None else None
        prototypes = [j.prototype for j in jobs] if jobs[0].prototype is not None else None
        images = sampler.sample([j.label for j in jobs], [j.mask for j in jobs], [j.seed for j in jobs],
                                embeddings=embeddings, prototypes=prototypes)
        return list(zip(images, [j.mask for j in jobs]))

    return write_dataset(out, planned, make, tile_size=model.tile_size, batch_size=settings.batch_size,
                         classes=model.classes, columns=GUIDED_COLUMNS, kind=GUIDED_KIND, on_tile=on_tile,
                         key=lambda job: job.kind)


MaskPicker = Callable[[int], tuple[np.ndarray | None, str]]


def mask_picker(model: LatentDiffusionModel, masks: MaskSource | None, seed: int = 0,
                label: int | None = None) -> MaskPicker:
    """``pick(i) -> (mask, source)`` for tile ``i``: none, procedural (seed + i), the mask model's for
    (``label``, seed + i) (``None``: the null class, an unconditional layout), or a folder's PNGs cycled."""
    from histosynth.sampling.masks import load_folder_masks, mask_model_identity, procedural_mask

    if masks is None:
        return lambda i: (None, "")
    if masks.kind == "model":
        source = masks.describe(mask_model_identity(model))
        mask_label = model.denoiser.config.null_label if label is None else label
        return lambda i: (masks.model_masks(model, [mask_label], [seed + i])[0], source)
    if masks.folder is None:
        size = model.autoencoder_config.tile_size
        return lambda i: (procedural_mask(size, masks.foreground, seed + i), masks.describe())
    files = load_folder_masks(masks.folder, model)
    return lambda i: (files[i % len(files)][1], f"{masks.folder.name}/{files[i % len(files)][0]}")


def guided_condition(model: LatentDiffusionModel, label: str | None, masks: str | None, foreground: float,
                     seed: int) -> tuple[int, MaskPicker]:
    """The class id of a ``--like`` / ``--prototype`` run (the null class when no label is given) and its
    mask picker (no mask unless ``masks`` names a source: model, procedural or a folder)."""
    label_id = model.classes.resolve_label(label) if label is not None else model.denoiser.config.null_label
    source = None if masks is None else choose_mask_source(model, masks, foreground)[0]
    return label_id, mask_picker(model, source, seed, label_id)


def like_tiles(n: int, embedding: np.ndarray, reference: str, label: int, pick: MaskPicker, seed: int,
               weight: float) -> list[GuidedTile]:
    """``n`` tiles conditioned on one reference embedding; tile ``i`` uses seed ``seed + i``, id ``like_<i>``."""
    return [GuidedTile(f"like_{i:06d}", label, seed + i, *pick(i), embedding=embedding,
                       condition=f"like {reference} w={weight:g}") for i in range(n)]


def prototype_tiles(prototypes: Sequence[int], names: Sequence[str], per_prototype: int, label: int,
                    pick: MaskPicker, seed: int, weight: float, classifier: str) -> list[GuidedTile]:
    """``per_prototype`` tiles per prototype id: ids ``proto<id>_<i>``; tile ``j`` of the set uses seed ``seed + j``
    (``j = position of the prototype in the list * per_prototype + i``), so every tile has its own noise."""
    tiles = []
    for position, proto in enumerate(prototypes):
        for i in range(per_prototype):
            j = position * per_prototype + i
            tiles.append(GuidedTile(f"proto{proto:03d}_{i:06d}", label, seed + j, *pick(j), prototype=int(proto),
                                    condition=f"prototype {proto} {names[proto]} w={weight:g} {classifier}"))
    return tiles
