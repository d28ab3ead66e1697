"""Synthetic tiles made from real ones (``histosynth sample --from-manifest``): each takes its source tile's class and
mask and, at ``--strength`` below 1, starts from the tile itself (SDEdit)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.data.images import read_rgb
from histosynth.training.tensors import TileTensors
from histosynth.sampling.variations import plan_variations

from testkit import run_cli
from tiny_models import TILE


def _tiles(n: int, known: list[bool] | None = None) -> TileTensors:
    return TileTensors(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.zeros(n, 4, 4, dtype=torch.uint8),
                       torch.tensor(known or [True] * n), torch.zeros(n, dtype=torch.long), [f"t{j}" for j in range(n)])


def test_plan_names_each_tile_by_its_source_and_round() -> None:
    planned = plan_variations(_tiles(3), 2, seed=10)
    assert planned == [("t0__r0", 0, 10), ("t1__r0", 1, 11), ("t2__r0", 2, 12),
                       ("t0__r1", 0, 13), ("t1__r1", 1, 14), ("t2__r1", 2, 15)]
    assert len({s for _, _, s in planned}) == len(planned)  # no two tiles share a seed
    assert plan_variations(_tiles(3, [True, False, True]), 1) == [("t0__r0", 0, 0), ("t2__r0", 2, 2)]
    assert plan_variations(_tiles(3), {"t1": 2, "t2": 1}) == [("t1__r0", 1, 1), ("t2__r0", 2, 2), ("t1__r1", 1, 4)]
    assert plan_variations(_tiles(3), 1, sources=[2]) == [("t2__r0", 2, 2)]


@pytest.fixture
def sources(tmp_path: Path, make_tile_dataset) -> Path:
    return make_tile_dataset(tmp_path / "real", n=4, size=(TILE, TILE), labels=("Normal", "Polyp"),
                             splits=("train", "train", "train", "val"))


def test_sample_from_manifest_makes_and_resumes_variations(tiny_model_dir: Path, sources: Path, tmp_path: Path,
                                                          capsys) -> None:
    out = tmp_path / "synth"
    args = ["sample", "--model", str(tiny_model_dir), "--from-manifest", str(sources), "--per-tile", "2",
            "--strength", "0.3", "--steps", "10", "--precision", "float32", "--out", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "6 tiles written" in stdout
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert sorted(r["id"] for r in rows) == sorted(f"tile_{j}__r{k}" for j in range(3) for k in range(2))
    assert {r["sampler"] for r in rows} == {"unipc+sdedit0.3"}
    for row in rows:
        source = row["id"].split("__")[0]
        assert row["mask_source"] == f"train:{source}"
        assert row["label"] == ("Normal" if source in ("tile_0", "tile_2") else "Polyp")
        mask = np.array(read_rgb(out / row["mask"]))[..., 0] if row["mask"].endswith(".png") else None
        assert mask is not None and (mask[: TILE // 2] > 0).all() and (mask[TILE // 2:] == 0).all()
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "0 tiles written, 6 already there" in stdout
    code, _, err = run_cli([*args[:-2], "--strength", "0.6", "--out", str(out)], capsys)
    assert code == 2 and "another model or other settings" in err


def test_low_strength_stays_closer_to_the_source_than_noise(tiny_model_dir: Path, sources: Path,
                                                           tmp_path: Path, capsys) -> None:
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.sampler import SamplingSettings, TileSampler

    source = read_rgb(sources.parent / "images" / "tile_3.png")
    sampler = TileSampler(LatentDiffusionModel.load(tiny_model_dir), SamplingSettings(precision="float32"))
    reconstruction = sampler.decode(sampler.encode_references(source[None], 1))[0].astype(float)  # random weights
    distances = {}
    for strength in ("0.1", "1"):
        out = tmp_path / f"s{strength}"
        code, _, _ = run_cli(["sample", "--model", str(tiny_model_dir), "--from-manifest", str(sources), "--split",
                              "val", "--strength", strength, "--steps", "10", "--precision", "float32", "--out",
                              str(out)], capsys)
        assert code == 0
        row = next(csv.DictReader(open(out / "manifest.csv")))
        distances[strength] = float(np.abs(read_rgb(out / row["image"]).astype(float) - reconstruction).mean())
    assert distances["0.1"] < distances["1"]


def test_bad_requests_are_one_line(tiny_model_dir: Path, sources: Path, tmp_path: Path, make_tile_dataset,
                                   capsys) -> None:
    base = ["sample", "--model", str(tiny_model_dir), "--steps", "2", "--out", str(tmp_path / "o")]
    for alone in (["--strength", "0.5"], ["--per-tile", "3"], ["--split", "val"]):
        code, _, err = run_cli([*base, *alone], capsys)
        assert code == 2 and "give --from-manifest" in err
    code, _, err = run_cli([*base, "--from-manifest", str(sources), "--label", "Polyp"], capsys)
    assert code == 2 and "drop --label" in err
    code, _, err = run_cli([*base, "--from-manifest", str(sources), "--split", "test"], capsys)
    assert code == 2 and "'test' has no tiles" in err
    small = make_tile_dataset(tmp_path / "small", n=2, size=(8, 8), splits=("train",))
    code, _, err = run_cli([*base, "--from-manifest", str(small)], capsys)
    assert code == 2 and [line for line in err.splitlines() if "error" in line] == [err.strip().splitlines()[-1]]
    assert "tile_0.png: image is 8x8 px, expected 32x32" in err
    unknown = make_tile_dataset(tmp_path / "unknown", n=2, size=(TILE, TILE), labels=("Mystery",), splits=("train",))
    code, _, err = run_cli([*base, "--from-manifest", str(unknown)], capsys)
    assert code == 2 and "Mystery" in err
    assert not (tmp_path / "o" / "manifest.csv").exists()
