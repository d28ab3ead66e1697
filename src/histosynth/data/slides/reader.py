"""Slide readers: OpenSlide for vendor formats, tifffile for plain (tiled) TIFFs it refuses.

Both expose the same small interface (:class:`SlideReader`): level dimensions and downsamples,
mpp when the file records it, and ``read_region(level, x, y, w, h)`` in *that level's* pixel
coordinates, returning RGB uint8 with anything outside the image painted white.

Only an allow-list of facts leaves a reader (:meth:`SlideReader.facts`): dimensions, levels,
mpp, vendor, objective power. Associated images (label, macro, thumbnail), barcodes, file
names, dates and users are never read out.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from histosynth.errors import InputError

#: OpenSlide properties that may be copied out of a slide (everything else is dropped).
ALLOWED_PROPERTIES = (
    "openslide.vendor",
    "openslide.mpp-x",
    "openslide.mpp-y",
    "openslide.objective-power",
    "openslide.level-count",
    "openslide.bounds-x",
    "openslide.bounds-y",
    "openslide.bounds-width",
    "openslide.bounds-height",
)


def one_line(error: BaseException) -> str:
    """An exception's message on one line (for InputError texts)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def _float_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


class SlideReader(ABC):
    """A whole-slide image open for reading; use as a context manager."""

    kind: str = ""
    vendor: str | None = None
    objective_power: float | None = None
    mpp: float | None = None  # microns per pixel at level 0, None when unknown
    level_dimensions: tuple[tuple[int, int], ...] = ()
    level_downsamples: tuple[float, ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @abstractmethod
    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 ``h x w x 3`` from ``level`` at level pixel ``(x, y)``; corrupt data -> InputError."""
        if not 0 <= level < self.level_count:
            raise InputError(f"level {level} does not exist (levels 0-{self.level_count - 1})", self.path)
        if w <= 0 or h <= 0:
            raise ValueError(f"empty region {w}x{h}")
        try:
            return self._read(level, x, y, w, h)
        except InputError:
            raise
        except Exception as error:  # codec / file errors from either library
            raise InputError(
                f"slide data could not be read at level {level} ({x}, {y}, {w}x{h}): {one_line(error)}",
                self.path,
            ) from error

    def facts(self) -> dict[str, Any]:
        """Non-identifying facts about the slide (allow-listed; safe to write next to tiles)."""
        return {
            "reader": self.kind,
            "vendor": self.vendor,
            "objective_power": self.objective_power,
            "mpp": self.mpp,
            "dimensions": list(self.level_dimensions[0]),
            "levels": [
                {
                    "width": w,
                    "height": h,
                    "downsample": round(ds, 6),
                    "mpp": round(self.mpp * ds, 6) if self.mpp else None,
                }
                for (w, h), ds in zip(self.level_dimensions, self.level_downsamples)
            ],
            "properties": self.allowed_properties(),
        }

    def allowed_properties(self) -> dict[str, str]:
        return {}

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the file."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class OpenSlideReader(SlideReader):
    """Any format OpenSlide reads (Aperio, Hamamatsu, MIRAX, generic tiled TIFF, ...)."""

    kind = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        super().__init__(path)
        self._slide = openslide.OpenSlide(str(path))
        props = self._slide.properties
        self._properties = {k: str(props[k]) for k in ALLOWED_PROPERTIES if k in props}
        self.vendor = props.get("openslide.vendor")
        self.objective_power = _float_or_none(props.get("openslide.objective-power"))
        mpp_x = _float_or_none(props.get("openslide.mpp-x"))
        mpp_y = _float_or_none(props.get("openslide.mpp-y"))
        known = [m for m in (mpp_x, mpp_y) if m is not None]
        self.mpp = sum(known) / len(known) if known else None
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        from PIL import Image

        ds = self.level_downsamples[level]
        region = self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h))
        white = Image.new("RGB", region.size, (255, 255, 255))
        white.paste(region, mask=region.getchannel("A"))  # transparent (outside the scan) -> white
        return np.asarray(white)

    def allowed_properties(self) -> dict[str, str]:
        return dict(self._properties)

    def close(self) -> None:
        self._slide.close()
