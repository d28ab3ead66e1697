"""A resumed guided (``--like``, ``--prototype``, ``synthesize-balanced``) or ``transfer`` run into a folder
made with other settings is refused in one line (exit 2), before anything is written, as ``sample`` is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from testkit import run_cli
from guided_models import classifier_dir, like_model_dir  # noqa: F401  (fixtures)
from tiny_models import TILE, make_tiles

REFUSED = "made with another model or other settings"


def _refused(args: list[str], out: Path, capsys, change: str) -> None:
    before = sorted(p.name for p in (out / "images").iterdir()), (out / "manifest.csv").read_bytes()
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert REFUSED in err and change in err, err
    assert (sorted(p.name for p in (out / "images").iterdir()), (out / "manifest.csv").read_bytes()) == before


def _ok(args: list[str], capsys) -> None:
    code, _, err = run_cli(args, capsys)
    assert code == 0, err


def test_like_resume_with_other_settings_is_refused(like_model_dir: Path, tmp_path: Path, capsys) -> None:
    ref = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (TILE, TILE, 3), dtype=np.uint8)).save(ref)
    out = tmp_path / "out"
    base = ["sample", "--model", str(like_model_dir), "--like", str(ref), "--n", "2", "--out", str(out)]
    _ok([*base, "--steps", "1"], capsys)
    _refused([*base, "--steps", "2"], out, capsys, "steps 1 -> 2")
    _refused([*base, "--steps", "1", "--like-weight", "3"], out, capsys, "w=2 -> like ref.png@")
    _refused([*base, "--steps", "1", "--label", "Polyp"], out, capsys, "label  -> Polyp")
    _ok([*base, "--steps", "1", "--n", "3"], capsys)  # the same settings: resumes


def test_prototype_and_balanced_resume_with_other_settings_is_refused(tiny_model_dir: Path,  # noqa: F811
                                                                      classifier_dir: Path, tmp_path: Path,
                                                                      capsys) -> None:
    out = tmp_path / "out"
    base = ["sample", "--model", str(tiny_model_dir), "--prototype", "1", "--prototype-classifier",
            str(classifier_dir), "--n", "1", "--steps", "1", "--out", str(out)]
    _ok(base, capsys)
    _refused([*base, "--prototype-guidance", "5"], out, capsys, "w=3 ")
    _refused([*base, "--guidance", "2"], out, capsys, "guidance 1.5 -> 2")
    balanced = tmp_path / "balanced"
    args = ["synthesize-balanced", "--model", str(tiny_model_dir), "--prototype-classifier", str(classifier_dir),
            "--per-prototype", "1", "--steps", "1", "--out", str(balanced)]
    _ok(args, capsys)
    _refused([*args, "--seed", "4"], balanced, capsys, "seed 0 -> 4")


def test_transfer_resume_with_other_settings_is_refused(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    tiles = make_tiles(4)
    Image.fromarray(tiles.images[0].permute(1, 2, 0).numpy()).save(tmp_path / "app.png")
    Image.fromarray(tiles.masks[0].numpy() * 255).save(tmp_path / "app_mask.png")
    targets = tmp_path / "targets"
    targets.mkdir()
    Image.fromarray(tiles.masks[1].numpy() * 255).save(targets / "m1.png")
    out = tmp_path / "out"
    base = ["transfer", "--model", str(tiny_model_dir), "--appearance", str(tmp_path / "app.png"),
            "--appearance-mask", str(tmp_path / "app_mask.png"), "--target-masks", str(targets), "--steps", "1",
            "--out", str(out)]
    _ok(base, capsys)
    _refused([*base, "--adain", "plain"], out, capsys, "sampler transfer-alternate -> transfer-plain")
    _refused([*base, "--seed", "3"], out, capsys, "seed 0 -> 3")
    _refused([*base, "--label", "Polyp"], out, capsys, "label  -> Polyp")
    _ok([*base, "--rounds", "2"], capsys)  # the same settings: resumes

