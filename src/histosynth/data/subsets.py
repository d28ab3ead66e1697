"""A train subset as its own manifest: what a team with a fraction of the labels would hold.

``histosynth data subset`` writes the subset that ``histosynth evaluate downstream`` draws for a
(fraction, seed) cell (the same function draws both). With ``unlabel_rest`` every other train tile is
kept with its label and mask removed, so a generator fine-tuned on the folder (copy ``MODEL/autoencoder``
into ``NEW``, then ``histosynth train denoiser --init MODEL --data DIR --out NEW``) learns that subset's labels
and masks only and sees the other tiles through the null condition (the semi-supervised setting of
DiffInfinite). Val and test tiles are left out.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import replace
from pathlib import Path

from histosynth.data.manifest import MANIFEST_FILE_NAME, STANDARD_COLUMNS, TileManifest, TileRecord, load_manifest
from histosynth.data.splits import Task, draw_subset

SUBSET_FILE_NAME = "subset.json"


def subset_records(manifest: TileManifest, fraction: float, seed: int, task: Task,
                   unlabel_rest: bool) -> tuple[list[TileRecord], list[TileRecord]]:
    """(labelled subset, other train tiles with label and mask removed, or none without ``unlabel_rest``)."""
    train = manifest.select_split("train").records
    subset = draw_subset(train, fraction, seed, task)
    inside = {r.id for r in subset}
    rest = [replace(r, label=None, mask=None) for r in train if r.id not in inside] if unlabel_rest else []
    return subset, rest


def write_subset(real: str | Path, out: str | Path, fraction: float, seed: int, task: Task = "classification",
                 unlabel_rest: bool = False, classes: str | None = None) -> dict:
    """Write ``out/manifest.csv`` (absolute paths, split ``train``, rows in the source's train order),
    ``classes.json`` (the real class list, so label ids match a model trained on all tiles) and ``subset.json``
    (the draw and its counts); returns the last."""
    from histosynth.io import atomic_open, write_json

    manifest = load_manifest(real, classes)
    subset, rest = subset_records(manifest, fraction, seed, task, unlabel_rest)
    # Rows in the source's train order: with --unlabel-rest every (fraction, seed) folder then holds the same
    # tiles in the same order as the whole train split, so a denoiser trained on either has the same latent
    # cache key (training.latents: autoencoder + tile pixels), and a fine-tune can reuse the base's latents.
    position = {r.id: k for k, r in enumerate(manifest.select_split("train").records)}
    rows = sorted(subset + rest, key=lambda r: position[r.id])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = sorted({key for r in rows for key in r.extra})
    with atomic_open(out / MANIFEST_FILE_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*STANDARD_COLUMNS, *extra])
        writer.writeheader()
        for record in rows:
            writer.writerow({"id": record.id, "image": str(record.image.resolve()),
                             "mask": str(record.mask.resolve()) if record.mask else "", "label": record.label or "",
                             "split": "train", **{key: record.extra.get(key, "") for key in extra}})
    manifest.classes.save(out)
    summary = {"source": str(Path(real).resolve()), "fraction": fraction, "seed": seed, "task": task,
               "unlabel_rest": unlabel_rest, "labelled": len(subset), "unlabelled": len(rest),
               "labels": dict(sorted(Counter(r.label or "" for r in subset).items())),
               "masks": sum(r.mask is not None for r in subset), "ids": [r.id for r in subset]}
    write_json(out / SUBSET_FILE_NAME, summary)
    return summary
