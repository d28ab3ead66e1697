"""Whole-slide images: reading through OpenSlide/tifffile, tissue detection, tiling."""
