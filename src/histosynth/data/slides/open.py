"""Opening a slide: OpenSlide for vendor formats, tifffile where OpenSlide refuses or misses the pyramid.

The factory sits above both readers (:mod:`~histosynth.data.slides.reader`,
:mod:`~histosynth.data.slides.tiff_reader`), so neither imports the other's module.
"""

from __future__ import annotations

from pathlib import Path

from histosynth.data.slides.reader import OpenSlideReader, SlideReader, one_line
from histosynth.data.slides.tiff_reader import TiffReader
from histosynth.errors import InputError


def open_slide(path: str | Path) -> SlideReader:
    """Open ``path`` with OpenSlide, else tifffile; anything unreadable raises :class:`InputError`.

    A generic TIFF whose pyramid OpenSlide does not see (levels in SubIFDs) is read with tifffile,
    which finds more levels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such slide file", path)
    if not path.is_file():
        raise InputError("not a slide file (a folder?)", path)
    problems = []
    reader: SlideReader | None = None
    try:
        reader = OpenSlideReader(path)
    except Exception as error:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
        problems.append(f"OpenSlide: {one_line(error)}")
    if reader is None or reader.vendor == "generic-tiff":
        try:
            tiff_reader = TiffReader(path)
        except Exception as error:  # TiffFileError, ValueError, codec errors
            problems.append(f"tifffile: {one_line(error)}")
        else:
            if reader is None or tiff_reader.level_count > reader.level_count:
                if reader is not None:
                    reader.close()
                reader = tiff_reader
            else:
                tiff_reader.close()
    if reader is None:
        raise InputError(f"not a readable slide ({'; '.join(problems)})", path)
    if reader.level_count == 0 or min(reader.level_dimensions[0]) <= 0:
        reader.close()
        raise InputError("not a readable slide (no image levels)", path)
    return reader
