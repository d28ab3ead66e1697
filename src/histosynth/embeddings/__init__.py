"""Tile embeddings (any registered encoder, manifests or slides) and per-group morphological prototypes."""
