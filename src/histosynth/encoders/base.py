"""The one interface every feature encoder implements (metrics, privacy, embeddings)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch


class FeatureEncoder(ABC):
    """Maps uint8 RGB tiles (H,W,3, any size) to fixed-length feature vectors.

    ``identity`` names the encoder and its weights (e.g. ``"inception@1a2b3c4d5e6f"``); feature caches
    are keyed by it, so features of different weights never mix.
    """

    name: str
    dim: int

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @property
    @abstractmethod
    def identity(self) -> str: ...

    def weights_identity(self, weights: Path) -> str:
        """``name@<first 12 hex of the weights file's SHA-256>``, hashed once per instance."""
        cached = getattr(self, "_weights_identity", None)
        if cached is None:
            from histosynth.io import file_digest

            cached = self._weights_identity = f"{self.name}@{file_digest(weights)[:12]}"
        return cached

    @abstractmethod
    def encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N,dim) of a float batch (N,3,H,W) in [0, 1] on ``self.device``."""

    @torch.inference_mode()
    def encode(
        self, images: Iterable[np.ndarray], batch_size: int = 32, on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Features (N,dim) float64 of uint8 HxWx3 images; all images in a batch must share a size."""
        features, batch = [], []

        def flush() -> None:
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
            features.append(self.encode_batch(x).float().cpu().numpy())
            if on_batch is not None:
                on_batch(len(batch))
            batch.clear()

        for image in images:
            if batch and image.shape != batch[0].shape:
                flush()
            batch.append(image)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if not features:
            return np.zeros((0, self.dim))
        return np.concatenate(features).astype(np.float64)
