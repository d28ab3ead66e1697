"""Where a training recipe may write: which family of model a folder holds, checked before any work.

Every model folder histosynth writes declares itself in ``histosynth.json`` (``kind``; a mask model is a
``denoiser`` with ``role: mask``). The families:

* a **diffusion model folder** (what ``sample``, ``large`` and ``serve`` load): the parts ``autoencoder/``,
  ``denoiser/``, ``mask_model/`` and ``encoder/`` (a histology encoder), each declaring its own kind, plus
  ``classes.json`` and ``runs/<recipe>/``. Every ``histosynth train`` recipe but one trains a part of it,
  so they share a folder, and a rerun resumes from ``runs/``;
* a **prototype classifier** folder (``train prototype-classifier``), declared at its top;
* a **composition model** folder (``composition fit``), and a standalone histology encoder
  (``weights/histology``), declared at their top.

A recipe refuses, in one line naming the folder and what it holds, a folder of another family, a part
folder given instead of its model folder, or a part of the wrong kind (a mask model in ``denoiser/``);
anything else that is not a training output is refused by :func:`histosynth.io.prepare_output_dir`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histosynth.errors import InputError
from histosynth.io import MODEL_MANIFEST, prepare_output_dir
from histosynth.models.autoencoder import KIND as AUTOENCODER
from histosynth.models.denoiser import KIND as DENOISER
from histosynth.models.histology_encoder import KIND as HISTOLOGY_ENCODER
from histosynth.models.pipeline import AUTOENCODER_DIR, DENOISER_DIR, MASK_MODEL_DIR
from histosynth.models.prototype_classifier import KIND as PROTOTYPE_CLASSIFIER
from histosynth.models.prototype_classifier import WEIGHTS_NAME as CLASSIFIER_WEIGHTS
from histosynth.training.like import LIKE_RUN
from histosynth.training.prototypes import CLASSIFIER_RUN
from histosynth.training.recipes import DECODER_RUN, ENCODER_DIR, RUNS_DIR

#: The recipes of ``histosynth train``; all but ``prototype-classifier`` write into a diffusion model folder.
RECIPES = ("autoencoder", "denoiser", "decoder", "mask-model", "encoder", "like-model", "prototype-classifier")
DIFFUSION_MODEL = "a diffusion model folder"
COMPOSITION_MODEL = "composition-model"  # histosynth.composition.modelfolder.KIND (a stage above training)
MASK_ROLE = "mask"


@dataclass(frozen=True)
class Declared:
    """What a ``histosynth.json`` declares: the model's ``kind`` and, for a mask model, its ``role``."""

    kind: str
    role: str | None = None


#: The parts of a diffusion model folder and what each must declare.
PARTS = {AUTOENCODER_DIR: Declared(AUTOENCODER), DENOISER_DIR: Declared(DENOISER),
         MASK_MODEL_DIR: Declared(DENOISER, MASK_ROLE), ENCODER_DIR: Declared(HISTOLOGY_ENCODER)}
_NAMES = {Declared(AUTOENCODER): "an autoencoder", Declared(DENOISER): "an image denoiser",
          Declared(DENOISER, MASK_ROLE): "a mask model", Declared(HISTOLOGY_ENCODER): "a histology encoder",
          Declared(PROTOTYPE_CLASSIFIER): "a prototype classifier", Declared(COMPOSITION_MODEL): "a composition model"}


def declared_model(folder: str | Path) -> Declared | None:
    """What ``folder/histosynth.json`` declares; None when it is missing, unreadable or declares no kind."""
    try:
        payload = json.loads((Path(folder) / MODEL_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("kind"), str):
        return None
    role = payload.get("role")
    return Declared(payload["kind"], role if role == MASK_ROLE else None)


def describe(declared: Declared) -> str:
    """A model family in words, e.g. ``a mask model``."""
    return _NAMES.get(declared, f"a model of kind {declared.kind!r}")


def folder_holds(folder: str | Path) -> str | None:
    """What model ``folder`` holds, in words: the model its ``histosynth.json`` declares (a part of a model
    folder says so), :data:`DIFFUSION_MODEL` when it holds declared parts, else None."""
    folder = Path(folder)
    declared = declared_model(folder)
    if declared is not None:
        part = next((name for name, kind in PARTS.items() if kind == declared and name != ENCODER_DIR), None)
        return describe(declared) + (f" (the {part}/ part of a model folder)" if part else "")
    if any(declared_model(folder / part) is not None for part in PARTS):
        return DIFFUSION_MODEL
    return None


def _layout(recipe: str) -> dict[str, Any]:
    """``prepare_output_dir`` rules for the folder ``recipe`` writes: the parts (with their kinds), the
    files and the ``runs/`` folders that training runs leave there."""
    if recipe == "prototype-classifier":
        return {"kind": "train prototype-classifier", "models": {".": PROTOTYPE_CLASSIFIER},
                "layout": (CLASSIFIER_WEIGHTS, MODEL_MANIFEST, f"{RUNS_DIR}/{CLASSIFIER_RUN}")}
    runs = (AUTOENCODER_DIR, DENOISER_DIR, DECODER_RUN, MASK_MODEL_DIR, ENCODER_DIR, LIKE_RUN)
    return {"kind": "train", "models": {name: part.kind for name, part in PARTS.items()},
            "layout": (*PARTS, "classes.json", *(f"{RUNS_DIR}/{run}" for run in runs))}


def check_training_out(out: str | Path, recipe: str) -> Path:
    """Check, before any work and creating nothing, that ``histosynth train <recipe>`` may write into ``out``.

    Accepted: a new or empty folder, or one that earlier runs made for the same family (a diffusion model
    folder for every recipe but ``prototype-classifier``, whose folder is a prototype classifier's), so an
    interrupted run resumes and the recipes of one model share its folder. Refused in one line naming
    ``out``: a folder of another family, a part folder (``model/denoiser``), a part of the wrong kind, and
    whatever :func:`histosynth.io.prepare_output_dir` refuses (a file, unwritable, stray files).
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}")
    out = Path(out)
    wanted = describe(Declared(PROTOTYPE_CLASSIFIER)) if recipe == "prototype-classifier" else DIFFUSION_MODEL
    if os.path.isdir(out):
        holds = folder_holds(out)
        if holds is not None and holds != wanted:
            raise InputError(f"holds {holds}, not {wanted} (what `histosynth train {recipe}` writes); "
                             "choose an empty or new --out", out)
        for name, expected in PARTS.items() if wanted == DIFFUSION_MODEL else ():
            declared = declared_model(out / name)
            if declared is not None and declared != expected:
                raise InputError(f"its {name}/ holds {describe(declared)}, not {describe(expected)}; "
                                 "choose an empty or new --out", out)
    return prepare_output_dir(out, **_layout(recipe))
