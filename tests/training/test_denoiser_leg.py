"""A further denoiser leg (``train denoiser --init``): it starts from the given weights, records them, and
refuses a denoiser whose architecture differs from the configured one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from histosynth.data.manifest import TileManifest
from histosynth.errors import InputError
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.training.objectives import DenoiserLossConfig
from histosynth.training.recipes import train_denoiser
from tiny_models import CLASSES, make_tiles, tiny_denoiser_config, tiny_train_config


def _train(out: Path, model: Path, steps: int, init: Path | None = None, config=None, lr: float = 3e-3):
    torch.set_num_threads(1)
    return train_denoiser(TileManifest(out.parent / "mem.csv", [], CLASSES), make_tiles(), out,
                          model / "autoencoder", config or tiny_denoiser_config(),
                          tiny_train_config(steps=steps, learning_rate=lr, warmup_steps=0, lr_schedule="constant"),
                          DenoiserLossConfig(), init_dir=init)


def _distance(a: Path, b: Path) -> float:
    first, second = (ConditionalDenoiser.load(x / "denoiser").state_dict() for x in (a, b))
    return max((first[k] - second[k]).abs().max().item() for k in first)


def test_a_leg_starts_from_the_weights_it_continues(tiny_model_dir: Path, tmp_path: Path) -> None:
    leg1, fresh, leg2 = tmp_path / "leg1", tmp_path / "fresh", tmp_path / "leg2"
    _train(leg1, tiny_model_dir, steps=20)
    _train(fresh, tiny_model_dir, steps=2, lr=1e-7)
    _train(leg2, tiny_model_dir, steps=2, lr=1e-7, init=leg1)  # a model folder: its denoiser/ is found

    assert _distance(leg2, leg1) < 1e-4 < 1e-2 < _distance(fresh, leg1)  # same seed; only the start differs
    facts = json.loads((leg2 / "denoiser" / "histosynth.json").read_text())
    assert facts["continued_from"]["folder"] == str(leg1)
    assert len(facts["continued_from"]["weights_sha256"]) == 64
    assert ConditionalDenoiser.load(leg2 / "denoiser").config == ConditionalDenoiser.load(leg1 / "denoiser").config


def test_a_leg_refuses_another_architecture(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = tiny_denoiser_config().model_copy(update={"block_out_channels": (8, 16)})
    with pytest.raises(InputError, match="block_out_channels"):
        _train(tmp_path / "leg", tiny_model_dir, steps=1, init=tiny_model_dir / "denoiser", config=other)
    assert not (tmp_path / "leg" / "denoiser").exists()


def test_a_rerun_reads_its_latents_from_the_run_cache(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import histosynth.training.latents as latents
    from histosynth.training.destination import check_training_out

    out = tmp_path / "run"
    _train(out, tiny_model_dir, steps=2)
    cache = out / "runs" / "denoiser" / "latents.safetensors"
    assert cache.is_file()

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(latents, "encode_dihedral", no_encoding)
    first = ConditionalDenoiser.load(out / "denoiser").state_dict()
    _train(out, tiny_model_dir, steps=2)  # the finished run again: same settings, latents from the cache
    assert all(torch.equal(first[k], v) for k, v in ConditionalDenoiser.load(out / "denoiser").state_dict().items())

    cache.write_bytes(cache.read_bytes()[:100])  # truncated: encoded afresh, not a traceback
    monkeypatch.undo()
    _train(out, tiny_model_dir, steps=2)
    assert cache.stat().st_size > 100
    check_training_out(out, "denoiser")  # the cache is the run's own file, not a foreign one


def test_encoding_killed_midway_resumes_from_its_parts_with_the_same_latents(tmp_path: Path, monkeypatch) -> None:
    """A kill during the (hour-long on a CPU) encoding loses at most one part, and the merged latents equal
    an uninterrupted encoding's."""
    import histosynth.training.latents as latents
    from histosynth.models.autoencoder import Autoencoder
    from tiny_models import make_tiles, tiny_autoencoder_config

    torch.manual_seed(0)
    autoencoder = Autoencoder(tiny_autoencoder_config()).eval()
    images = make_tiles(7).images
    whole = latents.encode_dihedral(autoencoder, images, batch_size=2)

    cache, encoded = tmp_path / "latents.safetensors", []

    def killed_after_two_parts(n: int) -> None:
        encoded.append(n)
        if len(encoded) == 4:  # one batch per part: the kill lands in the fourth part, after three were kept
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        latents.encode_dihedral_cached(cache, autoencoder, images, "digest", killed_after_two_parts, batch_size=2,
                                       part_batches=1)
    assert not cache.exists() and len(list(tmp_path.glob(".latents.part*"))) == 3

    calls, original = [], latents.encode_dihedral

    def counting(model, chunk, **kwargs):
        calls.append(len(chunk))
        return original(model, chunk, **kwargs)

    monkeypatch.setattr(latents, "encode_dihedral", counting)
    mean, logvar = latents.encode_dihedral_cached(cache, autoencoder, images, "digest", batch_size=2, part_batches=1)
    assert calls == [1]  # only the last part (tile 7) was still missing
    assert torch.equal(mean, whole[0]) and torch.equal(logvar, whole[1])
    assert cache.is_file() and not list(tmp_path.glob(".latents.part*"))

    reported: list[int] = []
    monkeypatch.setattr(latents, "encode_dihedral", lambda *a, **k: pytest.fail("a cache hit encoded"))
    again = latents.encode_dihedral_cached(cache, autoencoder, images, "digest", reported.append, batch_size=2)
    assert torch.equal(again[0], whole[0]) and reported == [len(images)]  # a hit completes the progress bar
