"""Streaming large-latent decoders: Hann weights, exactness on a local decoder, seams, real autoencoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from histosynth.errors import InputError
from histosynth.evaluation.seams import seam_score
from histosynth.sampling.large.decode import (
    collect_bands,
    decoder_edges,
    diffusers_tiled_decode,
    hann_decode_bands,
    hann_float_bands,
    naive_decode_bands,
)

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "histosynth" / "weights" / "default"


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    images = (128 + 40 * values).clamp(0, 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    return images.permute(0, 2, 3, 1).numpy()


def nearest_decode(z: torch.Tensor) -> np.ndarray:
    """A local, position-independent "decoder": channel mean, nearest-upsampled 8x."""
    return _to_uint8(F.interpolate(z.mean(1, keepdim=True), scale_factor=8, mode="nearest"))


def smooth_decode(z: torch.Tensor) -> np.ndarray:
    return _to_uint8(F.interpolate(z.mean(1, keepdim=True), scale_factor=8, mode="bilinear"))


def rim_decode(z: torch.Tensor) -> np.ndarray:
    """Like ``smooth_decode`` but every tile's top and left 2 px are 40 levels darker (a tile-edge artefact)."""
    images = smooth_decode(z).astype(np.int16)
    images[:, :2] -= 40
    images[:, :, :2] -= 40
    return images.clip(0, 255).astype(np.uint8)


def ones_decode(z: torch.Tensor) -> np.ndarray:
    return np.ones((len(z), 8 * z.shape[2], 8 * z.shape[3], 3), np.float32)


def _latent(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, h, w)).astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 48), (37, 21), (5, 3), (1, 1)])
def test_hann_weights_of_the_four_grids_sum_to_one(shape: tuple[int, int]) -> None:
    h, w = shape
    weights = collect_bands(hann_float_bands(_latent(h, w), ones_decode, tile=8), 8 * h, 8 * w)
    np.testing.assert_allclose(weights, 1.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 48), (37, 21), (3, 5)])
def test_local_decoder_is_reproduced_exactly(shape: tuple[int, int]) -> None:
    h, w = shape
    latent = _latent(h, w, seed=1)
    whole = nearest_decode(torch.from_numpy(latent)[None])[0]
    hann = collect_bands(hann_decode_bands(latent, nearest_decode, tile=8, batch_size=3), 8 * h, 8 * w)
    naive = collect_bands(naive_decode_bands(latent, nearest_decode, tile=8, batch_size=3), 8 * h, 8 * w)
    assert hann.dtype == np.uint8 and hann.shape == whole.shape
    assert np.abs(hann.astype(int) - whole).max() <= 1
    assert np.array_equal(naive, whole)


def test_latent_may_be_a_memmap(tmp_path: Path) -> None:
    latent = _latent(20, 12, seed=2)
    stored = np.memmap(tmp_path / "latent.raw", np.float32, "w+", shape=latent.shape)
    stored[:] = latent
    from_memmap = collect_bands(hann_decode_bands(stored, nearest_decode, tile=8), 160, 96)
    assert np.array_equal(from_memmap, collect_bands(hann_decode_bands(latent, nearest_decode, tile=8), 160, 96))


def test_hann_hides_tile_edge_artefacts_that_naive_tiling_shows() -> None:
    latent = _latent(64, 64, seed=3)
    hann = collect_bands(hann_decode_bands(latent, rim_decode, tile=16), 512, 512)
    naive = collect_bands(naive_decode_bands(latent, rim_decode, tile=16), 512, 512)
    rows, cols = decoder_edges("naive", 512, 512, 16)
    assert 0.7 < seam_score(hann, rows, cols) < 1.4
    assert 0.7 < seam_score(hann, *decoder_edges("hann", 512, 512, 16)) < 1.4
    assert seam_score(naive, rows, cols) > 20


@pytest.mark.parametrize("decoder", [hann_decode_bands, naive_decode_bands])
def test_bands_cover_the_image_once_in_order(decoder) -> None:
    h, w, tile = 21, 10, 8
    seen = np.zeros(8 * h, int)
    next_row = 0
    for y0, band in decoder(_latent(h, w), nearest_decode, tile=tile):
        assert y0 == next_row and band.shape[1:] == (8 * w, 3) and band.dtype == np.uint8
        assert len(band) <= tile * 8
        seen[y0:y0 + len(band)] += 1
        next_row = y0 + len(band)
    assert np.all(seen == 1)


def test_decoder_edges() -> None:
    rows, cols = decoder_edges("hann", 300, 128, 16)
    assert rows.tolist() == [64, 128, 192, 256] and cols.tolist() == [64]
    rows, cols = decoder_edges("naive", 300, 128, 16)
    assert rows.tolist() == [128, 256] and cols.tolist() == []
    rows, _ = decoder_edges("diffusers", 512, 512, 32)  # stride 24 latent = 192 px, cross-fades of 64 px
    assert rows.tolist() == [192, 256, 384, 448]
    assert decoder_edges("diffusers", 256, 256, 32)[0].size == 0  # fits in one tile: decoded whole
    with pytest.raises(InputError):
        decoder_edges("bilinear", 8, 8, 2)


def test_bad_inputs_fail_with_one_line() -> None:
    with pytest.raises(InputError, match="even"):
        next(hann_decode_bands(_latent(8, 8), nearest_decode, tile=7))
    with pytest.raises(InputError, match="channels x height x width"):
        next(naive_decode_bands(np.zeros((8, 8), np.float32), nearest_decode))


@pytest.fixture(scope="module")
def shipped():
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.sampler import SamplingSettings, TileSampler

    if not WEIGHTS.is_dir():
        pytest.skip("shipped weights not present")
    return TileSampler(LatentDiffusionModel.load(WEIGHTS), SamplingSettings(precision="float32"))


def test_shipped_autoencoder_hann_matches_whole_decode_loosely(shipped) -> None:
    """GroupNorm makes the shipped decoder non-local, so tiles differ from the whole decode by colour shifts."""
    latent = _latent(16, 16, seed=4)  # 2 x 2 tiles of 8 latent px
    whole = shipped.decode(torch.from_numpy(latent)[None])[0]
    hann = collect_bands(hann_decode_bands(latent, shipped.decode, tile=8), 128, 128)
    naive = collect_bands(naive_decode_bands(latent, shipped.decode, tile=8), 128, 128)
    assert hann.shape == whole.shape == (128, 128, 3)
    assert np.abs(hann.astype(float) - whole).mean() < 25
    rows, cols = decoder_edges("naive", 128, 128, 8)
    assert seam_score(hann, rows, cols) < 2 < seam_score(naive, rows, cols)


def test_diffusers_tiled_decode_runs_and_restores_the_model(shipped) -> None:
    autoencoder, config = shipped.model.autoencoder, shipped.model.autoencoder_config
    before = (autoencoder.use_tiling, autoencoder.tile_sample_min_size, autoencoder.tile_latent_min_size,
              autoencoder.tile_overlap_factor)
    latent = _latent(16, 12, seed=5)
    tiled = diffusers_tiled_decode(autoencoder, latent, config.scaling_factor, config.latent_shift, tile=8)
    assert tiled.shape == (128, 96, 3) and tiled.dtype == np.uint8
    assert before == (autoencoder.use_tiling, autoencoder.tile_sample_min_size, autoencoder.tile_latent_min_size,
                      autoencoder.tile_overlap_factor)
    # A latent that fits in one tile is decoded whole, exactly like the sampler does.
    one = diffusers_tiled_decode(autoencoder, latent, config.scaling_factor, config.latent_shift, tile=16)
    assert np.array_equal(one, shipped.decode(torch.from_numpy(latent)[None])[0])
