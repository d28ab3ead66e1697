"""Sampling: schedulers and guidance, procedural masks, and writing synthetic datasets."""
