"""Plain TIFF slides (tiled or stripped; pyramid as SubIFDs or pages) read with tifffile.

Used where OpenSlide refuses the file or misses its pyramid. Regions are assembled from the
tiles/strips they touch, so a tiled level is never decoded whole.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.data.slides.reader import SlideReader

# A level-0 resolution outside this range (um/px) is a placeholder (72 dpi, 1 px/cm), not an mpp.
_PLAUSIBLE_MPP = (0.01, 20.0)


class TiffReader(SlideReader):
    """A plain TIFF (tiled or stripped, pyramid as SubIFDs or pages) read segment by segment.

    Only the tiles/strips a region touches are read and decoded (with a small cache), so a
    tiled level is never loaded whole; a TIFF stored as one strip is read whole once.
    """

    kind = "tifffile"
    _CACHE_SEGMENTS = 256

    def __init__(self, path: Path) -> None:
        import tifffile

        super().__init__(path)
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._tiff = tifffile.TiffFile(str(path))
        try:
            self._pages = self._open_levels()
            self._segment(0, 0)  # decode one segment now: a missing codec fails at open
        except Exception:
            self._tiff.close()
            raise
        self.level_dimensions = tuple((p.imagewidth, p.imagelength) for p in self._pages)
        width0, height0 = self.level_dimensions[0]
        self.level_downsamples = tuple(
            (width0 / w + height0 / h) / 2 for w, h in self.level_dimensions
        )
        self.mpp = self._resolution_mpp(self._pages[0])

    def _open_levels(self) -> list[Any]:
        if not self._tiff.series:
            raise ValueError("no image series")
        series = self._tiff.series[0]
        pages = []
        for level in series.levels:
            page = level.keyframe
            axes = level.axes
            if axes not in ("YX", "YXS") or page.planarconfig != 1 and page.samplesperpixel > 1:
                raise ValueError(f"unsupported TIFF layout (axes {axes}, planar {page.planarconfig})")
            if np.dtype(page.dtype) != np.uint8:
                raise ValueError(f"unsupported sample type {page.dtype} (need 8-bit)")
            if page.samplesperpixel not in (1, 3, 4):
                raise ValueError(f"unsupported {page.samplesperpixel} samples per pixel")
            pages.append(page)
        pages.sort(key=lambda p: -p.imagewidth)
        return pages

    @staticmethod
    def _resolution_mpp(page: Any) -> float | None:
        tags = page.tags
        if "XResolution" not in tags or "ResolutionUnit" not in tags:
            return None
        unit = int(tags["ResolutionUnit"].value)
        numerator, denominator = tags["XResolution"].value
        if not numerator or not denominator:
            return None
        per_unit = numerator / denominator
        microns = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre; 1 = no unit
        if microns is None:
            return None
        mpp = microns / per_unit
        return mpp if _PLAUSIBLE_MPP[0] <= mpp <= _PLAUSIBLE_MPP[1] else None

    @staticmethod
    def _grid(page: Any) -> tuple[int, int, int]:
        """Segment width, height and segments per row."""
        if page.is_tiled:
            return page.tilewidth, page.tilelength, math.ceil(page.imagewidth / page.tilewidth)
        return page.imagewidth, page.rowsperstrip or page.imagelength, 1

    def _segment(self, level: int, index: int) -> np.ndarray:
        """Decoded segment ``index`` of ``level`` as ``rows x cols x samples`` (cached)."""
        key = (level, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        page = self._pages[level]
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        seg_w, seg_h, _ = self._grid(page)
        if not count:
            segment = np.full((seg_h, seg_w, page.samplesperpixel), 255, np.uint8)
        else:
            with self._lock:  # one file handle: seek + read must not interleave
                self._tiff.filehandle.seek(offset)
                data = self._tiff.filehandle.read(count)
            kwargs = {"jpegtables": page.jpegtables} if page.jpegtables is not None else {}
            decoded, _, _ = page.decode(data, index, **kwargs)
            if decoded is None:
                raise ValueError(f"segment {index} is empty")
            segment = decoded.reshape(decoded.shape[-3:])
        with self._lock:
            self._cache[key] = segment
            while len(self._cache) > self._CACHE_SEGMENTS:
                self._cache.popitem(last=False)
        return segment

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        page = self._pages[level]
        width, height = self.level_dimensions[level]
        samples = page.samplesperpixel
        out = np.full((h, w, samples), 255, np.uint8)
        seg_w, seg_h, per_row = self._grid(page)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        for row in range(y0 // seg_h, max(y0, y1 - 1) // seg_h + 1) if y1 > y0 else ():
            for col in range(x0 // seg_w, max(x0, x1 - 1) // seg_w + 1) if x1 > x0 else ():
                segment = self._segment(level, row * per_row + col)
                sx0, sy0 = col * seg_w, row * seg_h
                ax0, ay0 = max(x0, sx0), max(y0, sy0)
                ax1 = min(x1, sx0 + seg_w, sx0 + segment.shape[1])
                ay1 = min(y1, sy0 + seg_h, sy0 + segment.shape[0])
                if ax1 > ax0 and ay1 > ay0:
                    out[ay0 - y : ay1 - y, ax0 - x : ax1 - x] = segment[
                        ay0 - sy0 : ay1 - sy0, ax0 - sx0 : ax1 - sx0
                    ]
        if samples == 1:
            return np.repeat(out, 3, axis=2)
        if samples == 4:  # composite alpha over white
            alpha = out[..., 3:4].astype(np.uint16)
            rgb = (out[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
            return rgb.astype(np.uint8)
        return out

    def close(self) -> None:
        self._tiff.close()
