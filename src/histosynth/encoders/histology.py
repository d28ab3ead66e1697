"""histosynth's own histology encoder (self-supervised on EBHI-Seg train tiles) as a FeatureEncoder."""

from __future__ import annotations

from pathlib import Path

import torch

from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import ModelFolderError


def shipped_histology_encoder() -> Path:
    from histosynth.weights import HISTOLOGY_ENCODER

    return HISTOLOGY_ENCODER


class HistologyEncoder(FeatureEncoder):
    """Features of the SimCLR-trained CNN in ``folder`` (default: the shipped one)."""

    name = "histology"

    def __init__(self, device: str | torch.device = "cpu", folder: str | Path | None = None) -> None:
        from histosynth.models.histology_encoder import WEIGHTS_NAME, HistologyCNN

        super().__init__(device)
        self.folder = Path(folder) if folder is not None else shipped_histology_encoder()
        if folder is None and not self.folder.is_dir():
            raise ModelFolderError("no histology encoder ships with this install; train one with "
                                   "`histosynth train encoder` and pass its folder", self.folder)
        self.model = HistologyCNN.load(self.folder).to(self.device)
        self.dim = self.model.config.feature_dim
        self._weights = self.folder / WEIGHTS_NAME

    @property
    def identity(self) -> str:
        return self.weights_identity(self._weights)

    def encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)
