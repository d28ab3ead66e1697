"""Shard plans and the manifest merge (no Ray needed), and ``--ray`` without Ray installed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from testkit import read_rows, run_cli

from histosynth.distributed.shards import SHARD_DIR, make_shards, merge_manifest, part_path
from histosynth.io import save_png
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.generate import MaskSource, generate_dataset, plan_rows
from histosynth.sampling.sampler import SamplingSettings
from histosynth.sampling.writer import SyntheticDatasetWriter, read_finished


def _jobs(model: LatentDiffusionModel, n: int = 3, seed: int = 7):
    settings = SamplingSettings(steps=2, batch_size=2, precision="float32")
    return plan_rows(model, n, [2, 0], MaskSource(None, 0.5), settings, seed=seed)


def test_plan_has_the_plain_samplers_ids_seeds_and_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = LatentDiffusionModel.load(tiny_model_dir)
    masks = tmp_path / "masks"
    for i in range(2):
        save_png(masks / f"m{i}.png", np.full((32, 32), 255 * i, np.uint8))
    settings = SamplingSettings(steps=2, guidance=1.5, sampler="dpm", batch_size=2, precision="float32")
    source = MaskSource(masks)
    generate_dataset(model, tmp_path / "plain", 3, [1, 2], source, settings, seed=5)
    jobs = plan_rows(model, 3, [1, 2], source, settings, seed=5, mask_names=["m0.png", "m1.png"])
    assert [job.row.record() for job in jobs] == read_rows(tmp_path / "plain" / "manifest.csv")
    assert [job.mask_index for job in jobs] == [0, 1, 0, 0, 1, 0]


def test_plan_with_mask_model_masks_has_the_plain_samplers_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tiny_models import save_tiny_mask_model

    model = LatentDiffusionModel.load(save_tiny_mask_model(tiny_model_dir))
    settings = SamplingSettings(steps=1, batch_size=2, precision="float32")
    source = MaskSource(None, model=True, model_steps=2)
    generate_dataset(model, tmp_path / "plain", 2, [0, 2], source, settings, seed=3)
    jobs = plan_rows(model, 2, [0, 2], source, settings, seed=3)
    assert [job.row.record() for job in jobs] == read_rows(tmp_path / "plain" / "manifest.csv")
    assert [job.mask_index for job in jobs] == [None] * 4  # generated from (label, seed) by the worker


def test_shards_are_deterministic_consecutive_slices_of_the_plan(tiny_model_dir: Path) -> None:
    model = LatentDiffusionModel.load(tiny_model_dir)
    jobs = _jobs(model, n=3)
    shards = make_shards(jobs, 4)
    assert [s.id for s in shards] == ["shard_000000", "shard_000001"]
    assert [j.row.id for s in shards for j in s.jobs] == [j.row.id for j in jobs]
    assert [j.row.id for j in shards[0].jobs] == [f"adenocarcinoma_{i:06d}" for i in range(3)] + ["normal_000000"]
    assert [j.row.seed for j in shards[1].jobs] == [8, 9]
    assert make_shards(_jobs(model, n=3), 4) == shards
    with pytest.raises(ValueError):
        make_shards(jobs, 0)


def _write_tile(folder: Path, row) -> None:
    save_png(folder / row.image, np.zeros((4, 4, 3), np.uint8))
    save_png(folder / row.mask, np.zeros((4, 4), np.uint8))


def test_merge_orders_by_plan_drops_unfinished_rows_and_is_idempotent(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [job.row for job in _jobs(LatentDiffusionModel.load(tiny_model_dir), n=3)]
    order = [r.id for r in rows]
    shards = make_shards(_jobs(LatentDiffusionModel.load(tiny_model_dir), n=3), 2)
    out = tmp_path / "out"
    # shard 2 finished, shard 0 half finished; one row of the old manifest lost its mask file
    for row in rows[4:6] + rows[0:1] + rows[3:4]:
        _write_tile(out, row)
    for shard, done in ((shards[2], rows[4:6]), (shards[0], rows[0:1])):
        SyntheticDatasetWriter(out, rows={r.id: r for r in done}, part=shard.id).flush()
    SyntheticDatasetWriter(out, rows={r.id: r for r in (rows[3], rows[2])}, part=None).flush()  # rows[2]: no files
    assert part_path(out, shards[0].id).is_file()
    assert merge_manifest(SyntheticDatasetWriter(out), order) == 4
    first = (out / "manifest.csv").read_bytes()
    assert [r["id"] for r in read_rows(out / "manifest.csv")] == [order[0], order[3], order[4], order[5]]
    assert (out / SHARD_DIR).is_dir()  # not finished: parts kept
    assert merge_manifest(SyntheticDatasetWriter(out), order) == 4
    assert (out / "manifest.csv").read_bytes() == first
    assert set(read_finished(out)) == {order[0], order[3], order[4], order[5]}
    # the rest arrives (as rows the driver holds): complete, so the parts go
    for row in rows[1:3]:
        _write_tile(out, row)
    assert merge_manifest(SyntheticDatasetWriter(out), order, {r.id: r for r in rows[1:3]}) == 6
    assert read_rows(out / "manifest.csv") == [r.record() for r in rows]
    assert not (out / SHARD_DIR).exists()


def test_ray_option_without_ray_says_how_to_install(tiny_model_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if not installed
    code, out, err = run_cli(["sample", "--model", str(tiny_model_dir), "--n", "1", "--steps", "1", "--ray", "local",
                              "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "needs Ray" in err and "pip install" in err
    assert not (tmp_path / "out").exists()


def test_bad_ray_address_fails_in_one_line_before_writing(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("ray")
    for address, message in (("nonsense", "expected local, auto or host:port"), ("127.0.0.1:1", "cannot reach")):
        code, _, err = run_cli(["sample", "--model", str(tiny_model_dir), "--n", "1", "--steps", "1", "--ray", address,
                                "--out", str(tmp_path / "out")], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()
