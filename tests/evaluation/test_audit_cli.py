"""The audit commands end to end on tiny on-the-fly datasets, with the weight-free pixel encoder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testkit import run_cli

SIZE = 32


def _tile(rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return np.kron(base, np.ones((SIZE // 4, SIZE // 4, 1), dtype=np.uint8))  # blocky, so 16 px keeps it


def _write(root: Path, tiles: list[np.ndarray], splits: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i, (tile, split) in enumerate(zip(tiles, splits)):
        Image.fromarray(tile).save(root / "images" / f"t{i}.png")
        Image.fromarray(((np.arange(SIZE)[:, None] < SIZE // 2) * 255).astype(np.uint8).repeat(SIZE, 1)).save(
            root / "masks" / f"t{i}.png")
        rows.append({"id": f"t{i}", "image": f"images/t{i}.png", "mask": f"masks/t{i}.png", "label": "Normal",
                     "split": split})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture
def datasets(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A real manifest (40 train, 20 test), a folder of copies of train tiles, a folder of new tiles."""
    rng = np.random.default_rng(0)
    real_tiles = [_tile(rng) for _ in range(60)]
    real = _write(tmp_path / "real", real_tiles, ["train"] * 40 + ["test"] * 20)
    copies = _write(tmp_path / "copies", [np.rot90(t).copy() if i % 2 else t for i, t in enumerate(real_tiles[:30])],
                    [""] * 30).parent
    fresh = _write(tmp_path / "fresh", [_tile(rng) for _ in range(30)], [""] * 30).parent
    return real, copies, fresh


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


FAST_C2ST = ["--c2st-steps", "20", "--c2st-size", "32"]


def test_fidelity_writes_metrics_beside_real_floors(datasets, tmp_path: Path, capsys) -> None:
    real, _, fresh = datasets
    code, out, _ = run_cli(["evaluate", "fidelity", "--real", str(real), "--synthetic", str(fresh), "--encoder", "pixels",
                         "--cache", str(tmp_path / "cache"), *FAST_C2ST, "--c2st-floor"], capsys)
    assert code == 0
    result = json.loads((fresh / "audit" / "fidelity_pixels.json").read_text())
    assert result["n_synthetic"] == 30 and result["n_heldout"] == 20 and result["n_train"] == 40
    for block in ("synthetic_vs_heldout", "train_vs_heldout", "train_subset_vs_heldout"):
        assert set(result[block]) >= {"fid", "kid_x1000", "precision", "recall", "density", "coverage"}
    assert "fid" in out
    assert any((tmp_path / "cache").glob("pixels_16px.npz"))
    # C2ST: 20 held-out real vs 20 of the 30 synthetic tiles, split 10/10 per side; same generator -> chance
    c2st = result["c2st"]
    assert (c2st["n_heldout"], c2st["n_train"], c2st["steps"], c2st["size"]) == (20, 20, 20, 32)
    assert c2st["ci_low"] <= 0.5 <= c2st["ci_high"] and c2st["n_synthetic_available"] == 30
    assert result["c2st_floor"]["n_synthetic_available"] == 40  # real train vs held-out
    assert "C2ST synthetic vs held-out: accuracy" in out and "verdict: " in out


def test_fidelity_c2st_catches_what_the_encoder_misses_and_can_be_skipped(datasets, tmp_path: Path, capsys) -> None:
    real, _, fresh = datasets
    washed = tmp_path / "washed"  # fresh tiles with their colours pulled halfway to grey: fake at a glance
    shutil.copytree(fresh, washed)
    for path in (washed / "images").glob("*.png"):
        Image.fromarray((np.asarray(Image.open(path)) // 2 + 64).astype(np.uint8)).save(path)
    base = ["evaluate", "fidelity", "--real", str(real), "--encoder", "pixels", "--cache", str(tmp_path / "cache")]
    code, out, _ = run_cli(base + ["--synthetic", str(washed), *FAST_C2ST], capsys)
    assert code == 0
    c2st = json.loads((washed / "audit" / "fidelity_pixels.json").read_text())["c2st"]
    assert c2st["accuracy"] >= 0.9 and c2st["p_value"] < 0.01 and "verdict: fail" in out
    code, out, _ = run_cli(base + ["--synthetic", str(fresh), "--no-c2st"], capsys)
    assert code == 0 and "C2ST" not in out and "verdict: warn" in out
    assert json.loads((fresh / "audit" / "fidelity_pixels.json").read_text())["c2st"] is None


def test_privacy_catches_rotated_and_exact_copies(datasets, tmp_path: Path, capsys) -> None:
    real, copies, fresh = datasets
    args = ["evaluate", "privacy", "--train", str(real), "--encoder", "pixels", "--cells", "2",
            "--cache", str(tmp_path / "cache")]
    assert run_cli(args + ["--synthetic", str(copies)], capsys)[0] == 0
    copied = json.loads((copies / "audit" / "privacy_pixels.json").read_text())
    assert run_cli(args + ["--synthetic", str(fresh)], capsys)[0] == 0
    novel = json.loads((fresh / "audit" / "privacy_pixels.json").read_text())
    # exact copies (even ids) are caught in feature space; all copies, rotated too, in pixel space
    assert copied["near_copies"] >= 15 and novel["near_copies"] <= 3
    assert copied["authenticity"] < novel["authenticity"]
    for i, row in enumerate(copied["neighbours"]):
        assert row["pixel_train_ids"][0] == f"t{i}" and row["pixel_rms"][0] < 1e-6


def test_export_refuses_near_copies_then_drops_them(datasets, tmp_path: Path, capsys) -> None:
    real, copies, fresh = datasets
    base = ["export", "--real", str(real), "--encoder", "pixels", "--cache", str(tmp_path / "cache")]
    code, _, err = run_cli(base + [str(copies), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(_error_lines(err)) == 1 and "near copies of training tiles" in _error_lines(err)[0]
    assert not (tmp_path / "out").exists()
    code, out, _ = run_cli(base + [str(copies), "--out", str(tmp_path / "out"), "--drop-near-copies"], capsys)
    assert code == 0
    facts = json.loads((tmp_path / "out" / "export.json").read_text())
    assert len(facts["dropped_ids"]) >= 15 and facts["exported"] == 30 - len(facts["dropped_ids"])
    exported = list(csv.DictReader(open(tmp_path / "out" / "manifest.csv")))
    assert len(exported) == facts["exported"] and all((tmp_path / "out" / r["mask"]).is_file() for r in exported)
    code, _, _ = run_cli(base + [str(fresh), "--out", str(tmp_path / "fresh_out"), "--drop-near-copies"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "fresh_out" / "export.json").read_text())["exported"] >= 27


def test_bad_synthetic_folders_fail_with_one_line(datasets, tmp_path: Path, capsys) -> None:
    real, _, fresh = datasets
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    code, _, err = run_cli(["evaluate", "fidelity", "--real", str(real), "--synthetic", str(empty), "--encoder", "pixels"],
                        capsys)
    assert code == 2 and len(_error_lines(err)) == 1
    code, _, err = run_cli(["evaluate", "fidelity", "--real", str(real), "--synthetic", str(fresh), "--encoder", "vgg"],
                        capsys)
    assert code == 2 and "unknown encoder 'vgg'" in err
    broken = tmp_path / "broken"
    shutil.copytree(fresh, broken)
    (broken / "images" / "t0.png").write_bytes(b"not a png")
    code, _, err = run_cli(["evaluate", "fidelity", "--real", str(real), "--synthetic", str(broken), "--encoder", "pixels",
                         "--cache", str(tmp_path / "c2")], capsys)
    assert code == 2 and len(_error_lines(err)) == 1 and "t0.png" in _error_lines(err)[0]
    few = _write(tmp_path / "few", [np.zeros((SIZE, SIZE, 3), np.uint8)] * 6, [""] * 6).parent
    code, _, err = run_cli(["evaluate", "fidelity", "--real", str(real), "--synthetic", str(few), "--encoder", "pixels",
                         "--cache", str(tmp_path / "c3")], capsys)
    assert code == 2 and _error_lines(err) == [
        "error: C2ST needs at least 10 tiles per side, got 20 real and 6 synthetic (skip it with --no-c2st)"]


def test_report_is_one_self_contained_html_file(datasets, tmp_path: Path, capsys) -> None:
    real, copies, _ = datasets
    cache = str(tmp_path / "cache")
    code, _, _ = run_cli(["report", str(copies), "--real", str(real), "--cache", cache], capsys)
    assert code == 0
    bare = (copies / "audit" / "report.html").read_text()
    assert "Not run: <code>histosynth evaluate fidelity" in bare and "<img src=\"data:image/png;base64," in bare
    assert "<b>No verdict</b>" in bare
    for command in (["evaluate", "fidelity", "--real", str(real), *FAST_C2ST],
                    ["evaluate", "privacy", "--train", str(real), "--cells", "2"]):
        assert run_cli(command + ["--synthetic", str(copies), "--encoder", "pixels", "--cache", cache], capsys)[0] == 0
    assert run_cli(["report", str(copies), "--real", str(real), "--cache", cache, "--gallery", "3"], capsys)[0] == 0
    html = (copies / "audit" / "report.html").read_text()
    assert "Not run: <code>histosynth evaluate fidelity" not in html and "authenticity" in html
    assert html.count("near copy</span>") == 3 and "PCA of pixels@16px features" in html
    assert "<h3>Classifier two-sample test</h3>" in html and "<b>Verdict: " in html and "C2ST accuracy" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing fetched when opened
