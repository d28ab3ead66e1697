"""Tile datasets, manifests, class lists, validation, statistics and slide tiling."""

from histosynth.data.classes import ClassList
from histosynth.data.manifest import TileManifest, TileRecord, load_manifest

__all__ = ["ClassList", "TileManifest", "TileRecord", "load_manifest"]
