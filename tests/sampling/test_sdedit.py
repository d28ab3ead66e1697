"""SDEdit sampling (``strength`` below 1): start from reference tiles noised part-way, run the rest of the schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histosynth.errors import InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.masks import procedural_mask
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.sampling.settings import SAMPLERS

from tiny_models import TILE


def _sampler(folder: Path, **settings) -> TileSampler:
    exact = {"steps": 20, "precision": "float32"}
    return TileSampler(LatentDiffusionModel.load(folder), SamplingSettings(**{**exact, **settings}))


def _references(n: int) -> np.ndarray:
    """Smooth colour gradients, different per tile."""
    ramp = np.linspace(0, 1, TILE, dtype=np.float32)
    tiles = [np.stack([np.add.outer(ramp, ramp) * 100 + 20 * k, np.full((TILE, TILE), 60.0 + 30 * k),
                       np.add.outer(ramp, -ramp) * 80 + 120], axis=-1) for k in range(n)]
    return np.clip(np.stack(tiles), 0, 255).astype(np.uint8)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_low_strength_keeps_the_reference_and_runs_only_the_last_steps(tiny_model_dir: Path,
                                                                      sampler_name: str) -> None:
    references = _references(2)
    masks = [procedural_mask(TILE, 0.5, i) for i in range(2)]
    full = _sampler(tiny_model_dir, sampler=sampler_name)
    low = _sampler(tiny_model_dir, sampler=sampler_name, strength=0.1)
    reconstruction = full.decode(low.encode_references(references, 2))
    steps: list[int] = []
    kept = low.sample([0, 1], masks, [3, 4], on_step=lambda: steps.append(1), references=references)
    drawn = full.sample([0, 1], masks, [3, 4], references=references)  # strength 1 ignores references
    assert len(steps) == 2  # 10% of 20 steps
    assert np.array_equal(drawn, full.sample([0, 1], masks, [3, 4]))
    assert _distance(kept, reconstruction) < _distance(drawn, reconstruction)
    assert np.array_equal(kept, low.sample([0, 1], masks, [3, 4], references=references))  # deterministic


def test_higher_strength_moves_further_from_the_reference(tiny_model_dir: Path) -> None:
    references = _references(2)
    masks = [procedural_mask(TILE, 0.5, i) for i in range(2)]
    by_strength = {}
    for strength in (0.1, 0.5, 1.0):
        sampler = _sampler(tiny_model_dir, strength=strength)
        by_strength[strength] = sampler.sample([0, 1], masks, [3, 4], references=references)
    reconstruction = sampler.decode(sampler.encode_references(references, 2))
    distances = [_distance(by_strength[s], reconstruction) for s in (0.1, 0.5, 1.0)]
    assert distances[0] < distances[1] < distances[2]


def test_strength_needs_reference_tiles_of_the_model_size(tiny_model_dir: Path) -> None:
    sampler = _sampler(tiny_model_dir, strength=0.5)
    masks = [procedural_mask(TILE, 0.5, 0)]
    with pytest.raises(InputError, match="needs 1 reference tiles"):
        sampler.sample([0], masks, [1])
    with pytest.raises(InputError, match=r"got \(1, 8, 8, 3\)"):
        sampler.sample([0], masks, [1], references=np.zeros((1, 8, 8, 3), np.uint8))


def test_strength_is_validated_and_recorded() -> None:
    assert SamplingSettings(strength=0.5, precision="float32").sampler_record == "unipc+sdedit0.5"
    assert SamplingSettings(precision="float32").sampler_record == "unipc"
    for bad in (0.0, 1.5):
        with pytest.raises(InputError, match="strength"):
            SamplingSettings(strength=bad)


def test_the_downstream_benchmark_makes_variations_of_each_source_tile(tiny_model_dir: Path, tmp_path: Path) -> None:
    """bench_downstream's generator (bench_quality.generate_from_train) starts each tile from its source tile at
    --strength, records it in the sampler column, and a rerun at another strength is refused."""
    import argparse
    import csv
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_quality import generate_from_train

    from histosynth.training.tensors import TileTensors

    references = _references(2)
    masks = torch.from_numpy(np.stack([procedural_mask(TILE, 0.5, i) for i in range(2)]))
    train = TileTensors(torch.from_numpy(references).permute(0, 3, 1, 2).contiguous(), masks,
                        torch.ones(2, dtype=torch.bool), torch.tensor([0, 1]), ["a", "b"])
    model = LatentDiffusionModel.load(tiny_model_dir)
    items = [("a__0", 0, 5), ("b__0", 1, 6)]

    def args(strength: float) -> argparse.Namespace:
        return argparse.Namespace(steps=10, guidance=1.5, sampler="ddim", batch=2, device="cpu",
                                  precision="float32", strength=strength)

    folders = {s: tmp_path / f"s{s}" for s in (0.2, 1.0)}
    for strength, folder in folders.items():
        generate_from_train(model, train, items, args(strength), folder)
    rows = {s: list(csv.DictReader(open(f / "manifest.csv"))) for s, f in folders.items()}
    assert {r["sampler"] for r in rows[0.2]} == {"ddim+sdedit0.2"} and {r["sampler"] for r in rows[1.0]} == {"ddim"}
    from histosynth.data.images import read_rgb

    def images(strength: float) -> np.ndarray:
        return np.stack([read_rgb(folders[strength] / r["image"]) for r in rows[strength]])

    sampler = TileSampler(model, SamplingSettings(precision="float32"))
    reconstruction = sampler.decode(sampler.encode_references(references, 2))
    assert _distance(images(0.2), reconstruction) < _distance(images(1.0), reconstruction)
    with pytest.raises(InputError):
        generate_from_train(model, train, items, args(0.5), folders[0.2])
