"""The export gate: no synthetic tile leaves closer to a training tile than real new tiles come."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError
from histosynth.evaluation.audit import load_audit_sets
from histosynth.evaluation.privacy import flag_near_copies, near_copy_threshold
from histosynth.io import atomic_dir, write_json


@dataclass
class ExportResult:
    folder: str
    encoder: str
    quantile: float
    threshold: float
    exported: int
    dropped_ids: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def export_gated(
    synthetic: str | Path, real: str | Path, out: str | Path, encoder: FeatureEncoder, drop_near_copies: bool = False,
    quantile: float = 0.01, train_split: str = "train", heldout_split: str = "test",
    cache_dir: str | Path | None = None, on_batch: Callable[[int], None] | None = None,
) -> ExportResult:
    """Copy ``synthetic`` to ``out`` unless tiles are near copies of training tiles.

    Near copies make the export fail (``InputError`` naming how many) unless ``drop_near_copies``,
    which leaves them out. ``out`` appears complete or not at all.
    """
    sets = load_audit_sets(real, synthetic, encoder, train_split, heldout_split, cache_dir, on_batch)
    synth, f_train, f_heldout, f_synth = sets.synthetic, sets.f_train, sets.f_heldout, sets.f_synthetic
    threshold = near_copy_threshold(f_train, f_heldout, quantile)
    flagged, distances = flag_near_copies(f_train, f_synth, threshold)
    dropped = [r.id for r, flag in zip(synth.records, flagged) if flag]
    if dropped and not drop_near_copies:
        raise InputError(f"{len(dropped)} of {len(synth.records)} tiles are near copies of training tiles "
                         f"(closer than {threshold:.4g}, the {quantile:g} quantile of held-out tiles' distances); "
                         "nothing exported; rerun with --drop-near-copies to leave them out", synthetic)
    with atomic_dir(Path(out)) as tmp:
        (tmp / "images").mkdir()
        rows = []
        for record, flag, distance in zip(synth.records, flagged, distances):
            if flag:
                continue
            image = Path("images") / record.image.name
            shutil.copy2(record.image, tmp / image)
            mask = ""
            if record.mask is not None:
                (tmp / "masks").mkdir(exist_ok=True)
                mask = str(Path("masks") / record.mask.name)
                shutil.copy2(record.mask, tmp / mask)
            rows.append({"id": record.id, "image": str(image), "mask": mask, "label": record.label or "",
                         "split": record.split or "", **record.extra,
                         "nearest_train_distance": f"{distance:.6g}"})
        with open(tmp / "manifest.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id", "image", "mask", "label"])
            writer.writeheader()
            writer.writerows(rows)
        if (Path(synthetic) / "classes.json").is_file():
            shutil.copy2(Path(synthetic) / "classes.json", tmp / "classes.json")
        result = ExportResult(str(out), encoder.identity, quantile, threshold, len(rows), dropped)
        write_json(tmp / "export.json", result.to_dict())
    return result
