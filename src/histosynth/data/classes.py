"""Class lists: how diagnostic labels and mask pixel values map to integer ids.

A class list is saved as ``classes.json`` (beside a manifest, and in every model folder) so that
ids mean the same thing in training, sampling and evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator

from histosynth.errors import InputError
from histosynth.io import write_json

CLASS_FILE_NAME = "classes.json"

#: The six EBHI-Seg diagnostic classes, in a fixed order (ids 0..5).
EBHI_LABELS = (
    "Normal",
    "Polyp",
    "Low-grade IN",
    "High-grade IN",
    "Serrated adenoma",
    "Adenocarcinoma",
)


class ClassList(BaseModel):
    """Image-level labels and mask classes of a tile dataset.

    ``labels[i]`` has id ``i``; an unlabelled tile (empty label) gets the null id
    ``len(labels)``, which classifier-free guidance uses as its unconditional class.
    ``mask_values`` maps a raw mask pixel value to a mask class id (index into
    ``mask_classes``); 0 must be background.
    """

    labels: list[str] = Field(min_length=1)
    mask_classes: list[str] = Field(default_factory=lambda: ["background", "foreground"])
    mask_values: dict[int, int] = Field(default_factory=lambda: {0: 0, 1: 1, 255: 1})

    @model_validator(mode="after")
    def _check(self) -> ClassList:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        for value, class_id in self.mask_values.items():
            if not 0 <= value <= 255:
                raise ValueError(f"mask value {value} is not a uint8")
            if not 0 <= class_id < len(self.mask_classes):
                raise ValueError(f"mask value {value} maps to unknown mask class id {class_id}")
        return self

    @property
    def null_id(self) -> int:
        """The id of the null (unconditional / unlabelled) class."""
        return len(self.labels)

    @property
    def num_mask_classes(self) -> int:
        return len(self.mask_classes)

    def label_id(self, label: str | None) -> int:
        """Id of ``label``; the null id for an empty label; ``InputError`` if unknown."""
        if label is None or label == "":
            return self.null_id
        try:
            return self.labels.index(label)
        except ValueError:
            raise InputError(
                f"unknown class {label!r}; known classes: {', '.join(self.labels)}"
            ) from None

    def resolve_label(self, label: str | int) -> int:
        """Accept a class name, or an id given as int or digit string (CLI convenience)."""
        if isinstance(label, int) or (isinstance(label, str) and label.isdigit()):
            class_id = int(label)
            if not 0 <= class_id < len(self.labels):
                raise InputError(f"unknown class id {class_id}; valid ids are 0..{len(self.labels) - 1}")
            return class_id
        return self.label_id(label)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / CLASS_FILE_NAME
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> ClassList:
        """Load a class list file, or the preset name ``ebhi``."""
        if str(path).lower() == "ebhi":
            return cls.ebhi()
        path = Path(path)
        if path.is_dir():
            path = path / CLASS_FILE_NAME
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise InputError("class list file not found", path) from None
        except (json.JSONDecodeError, ValidationError) as error:
            first = str(error).splitlines()[0] if isinstance(error, json.JSONDecodeError) else (
                f"{error.errors()[0]['loc']}: {error.errors()[0]['msg']}"
            )
            raise InputError(f"not a valid class list ({first})", path) from None

    @classmethod
    def ebhi(cls) -> ClassList:
        """EBHI-Seg: six diagnostic classes, binary gland masks stored as 0/255."""
        return cls(labels=list(EBHI_LABELS), mask_classes=["background", "gland"])

    @classmethod
    def infer(cls, labels: list[str | None]) -> ClassList:
        """Build a class list from the labels seen in a manifest.

        If they are exactly EBHI-Seg's six classes, EBHI's fixed order is used; otherwise sorted
        order. A subset of EBHI (say, five classes) gets sorted order too: pass ``--classes ebhi``
        (or save a ``classes.json``) so its ids match a model trained on all of EBHI.
        Masks default to binary (0 background; 1 or 255 foreground).
        """
        seen = sorted({label for label in labels if label})
        if not seen:
            raise InputError("no labels to build a class list from; give one with --classes")
        if set(seen) == set(EBHI_LABELS):
            return cls.ebhi()
        return cls(labels=seen)
