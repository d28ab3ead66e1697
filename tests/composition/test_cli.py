"""``histosynth composition fit|evaluate|predict`` end to end on tiny synthetic slides (pixels encoder)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from composition_data import DIAMETER, TYPES, Synthetic, abundances, write_h5ad
from PIL import Image

from histosynth.composition.crossval import correlations
from histosynth.errors import HistosynthError

HER2ST = Path(__file__).resolve().parents[3] / "shared" / "data" / "her2st-spots" / "spots.csv"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the composition sub-app as ``histosynth composition ARGS`` does: errors -> one line, exit 2."""
    from histosynth.cli.composition import app

    try:
        app(args=[str(a) for a in args], prog_name="histosynth composition")
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    except HistosynthError as error:
        print(f"error: {error}", file=__import__("sys").stderr)
        code = error.exit_code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _common(synthetic: Synthetic, cache: Path) -> list[str]:
    return ["--data", synthetic.csv, "--targets", "major:*,minor:*", "--encoder", "pixels", "--diameter", DIAMETER,
            "--tile-size", 16, "--cache", cache]


def test_fit_then_predict_round_trips_through_anndata(tmp_path: Path, synthetic: Synthetic, capsys) -> None:
    import anndata

    code, out, err = run(["fit", *_common(synthetic, tmp_path / "cache"), "--out", tmp_path / "model"], capsys)
    assert code == 0, err
    assert "neighbourhood: fitted in" in out and (tmp_path / "model" / "histosynth.json").is_file()
    spots = write_h5ad(tmp_path / "a1.h5ad", synthetic, "A1")
    code, out, err = run(["predict", "--model", tmp_path / "model", "--slide", synthetic.images["A1"],
                          "--spots", spots, "--out", tmp_path / "pred.h5ad"], capsys)
    assert code == 0, err
    original, predicted = anndata.read_h5ad(spots), anndata.read_h5ad(tmp_path / "pred.h5ad")
    assert list(predicted.obs_names) == list(original.obs_names)
    assert np.array_equal(predicted.X, original.X) and "q05_cell_abundance_w_sf" in predicted.obsm
    values = predicted.obsm["histosynth_composition"]
    assert list(values.columns) == TYPES and np.allclose(values.to_numpy().sum(axis=1), 1.0)
    assert np.allclose(predicted.obs["composition:major:red"], values["major:red"])
    with open(tmp_path / "pred.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["spot_id"] for r in rows] == list(original.obs_names)
    assert np.allclose([float(r["major:blue"]) for r in rows], values["major:blue"], atol=1e-6)
    truth = np.array([[r[t] for t in TYPES] for r in synthetic.rows if r["section"] == "A1"], np.float64)
    truth /= truth.sum(axis=1, keepdims=True)
    assert np.nanmean(correlations(truth[:, :3], values.to_numpy()[:, :3])[0]) > 0.9


def test_predict_on_a_tissue_grid_writes_a_scanpy_ready_anndata(tmp_path: Path, synthetic: Synthetic,
                                                                 capsys) -> None:
    import anndata

    assert run(["fit", *_common(synthetic, tmp_path / "cache"), "--models", "mlp,neighbourhood",
                "--out", tmp_path / "model"], capsys)[0] == 0
    code, out, err = run(["predict", "--model", tmp_path / "model", "--slide", synthetic.images["B1"], "--grid",
                          20, "--use", "neighbourhood", "--min-tissue", 0.2, "--out", tmp_path / "grid.h5ad"], capsys)
    assert code == 0, err
    adata = anndata.read_h5ad(tmp_path / "grid.h5ad")
    assert adata.n_obs > 10 and adata.obsm["spatial"].shape == (adata.n_obs, 2)
    library = adata.uns["spatial"]["B1"]
    assert library["images"]["lowres"].shape[2] == 3 and library["scalefactors"]["spot_diameter_fullres"] == DIAMETER
    assert list(adata.var_names) == TYPES and adata.uns["histosynth_composition"]["model"] == "neighbourhood"
    code, _, err = run(["predict", "--model", tmp_path / "model", "--slide", synthetic.images["B1"], "--grid", 20,
                        "--min-tissue", 0.2, "--use", "ridge", "--out", tmp_path / "x.h5ad"], capsys)
    assert code == 2 and "has no 'ridge' model" in err


def test_predict_takes_the_spot_files_fit_takes_and_writes_a_csv(tmp_path: Path, synthetic: Synthetic,
                                                                  capsys) -> None:
    assert run(["fit", *_common(synthetic, tmp_path / "cache"), "--models", "ridge,neighbourhood",
                "--out", tmp_path / "model"], capsys)[0] == 0
    base = ["predict", "--model", tmp_path / "model", "--cache", tmp_path / "cache"]
    code, out, err = run([*base, "--data", synthetic.csv, "--use", "neighbourhood", "--out", tmp_path / "p.csv"],
                         capsys)
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["spot_id", "x", "y", *TYPES]
    assert [r["spot_id"] for r in rows] == [r["spot_id"] for r in synthetic.rows]
    predicted = np.array([[float(r[t]) for t in TYPES] for r in rows])
    truth = np.array([[r[t] for t in TYPES] for r in synthetic.rows], np.float64)
    truth /= truth.sum(axis=1, keepdims=True)
    assert np.allclose(predicted.sum(axis=1), 1.0)
    assert np.nanmean(correlations(truth[:, :3], predicted[:, :3])[0]) > 0.8
    spots = write_h5ad(tmp_path / "a1.h5ad", synthetic, "A1", obsm_key=None)
    code, out, err = run([*base, "--data", spots, "--image", synthetic.images["A1"], "--use", "ridge",
                          "--out", tmp_path / "a1.csv"], capsys)
    assert code == 0, err
    with open(tmp_path / "a1.csv", newline="") as handle:
        assert [r["spot_id"] for r in csv.DictReader(handle)] == [r["spot_id"] for r in rows[:42]]
    for extra, message in ((["--out", tmp_path / "p.h5ad"], "--out must end in .csv with --data"),
                           (["--grid", 20, "--out", tmp_path / "q.csv"], "--spots and --grid go with --slide")):
        code, _, err = run([*base, "--data", synthetic.csv, *extra], capsys)
        assert code == 2 and message in err and err.count("\n") == 1
    code, _, err = run([*base, "--out", tmp_path / "q.csv"], capsys)
    assert code == 2 and "give --slide IMAGE" in err


def test_evaluate_recovers_a_known_function_and_resumes(tmp_path: Path, synthetic: Synthetic, capsys) -> None:
    args = ["evaluate", *_common(synthetic, tmp_path / "cache"), "--out", tmp_path / "eval"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["cv"] == "leave-one-section-out" and metrics["folds"] == ["A1", "A2", "B1"]
    summary = {row["model"]: row for row in metrics["summary"]}
    assert set(summary) == {"ridge", "mlp", "neighbourhood"}
    assert summary["mlp"]["mean_pearson"] > 0.9  # abundances are a known function of the spot colour
    assert sorted(p.name for p in (tmp_path / "eval" / "maps").glob("*.png")) == sorted(
        f"{t.replace(':', '_')}.png" for t in TYPES)
    assert "neighbourhood" in out and "| mlp |" in (tmp_path / "eval" / "summary.md").read_text()
    folds = sorted((tmp_path / "eval" / "folds").iterdir())
    stamps = [p.stat().st_mtime_ns for p in folds]
    assert run(args, capsys)[0] == 0
    assert sorted((tmp_path / "eval" / "folds").iterdir()) == folds
    assert [p.stat().st_mtime_ns for p in folds] == stamps  # resumed: nothing refitted
    code, _, _ = run([*args[:-2], "--out", tmp_path / "eval_p", "--cv", "patient", "--no-maps"], capsys)
    assert code == 0 and json.loads((tmp_path / "eval_p" / "metrics.json").read_text())["folds"] == ["A", "B"]


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[0].update({"pixel_x": "3"}), "1 spot(s) lie outside the 160x140 image"),
    (lambda rows: rows[5].update({"major:red": "-1"}), "'major:red' has 1 negative value"),
    (lambda rows: rows[5].update({"major:red": "nan"}), "'major:red' has 1 missing or non-numeric value"),
])
def test_bad_inputs_fail_with_one_line(tmp_path: Path, synthetic: Synthetic, capsys, change, message) -> None:
    with open(synthetic.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    change(rows)
    with open(synthetic.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, _, err = run(["fit", *_common(synthetic, tmp_path / "cache"), "--out", tmp_path / "m"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_cli_refuses_missing_columns_and_coordinate_free_spots(tmp_path: Path, synthetic: Synthetic, capsys) -> None:
    code, _, err = run(["fit", *_common(synthetic, tmp_path / "c"), "--targets", "major:purple",
                        "--out", tmp_path / "m"], capsys)
    assert code == 2 and "no abundance column matches 'major:purple'" in err
    flat = write_h5ad(tmp_path / "flat.h5ad", synthetic, "A1", spatial=False)
    assert run(["fit", *_common(synthetic, tmp_path / "c"), "--out", tmp_path / "m"], capsys)[0] == 0
    code, _, err = run(["predict", "--model", tmp_path / "m", "--slide", synthetic.images["A1"], "--spots", flat,
                        "--out", tmp_path / "p.h5ad"], capsys)
    assert code == 2 and "obsm['spatial'] is missing" in err
    code, _, err = run(["predict", "--model", tmp_path / "m", "--slide", synthetic.images["A1"], "--out",
                        tmp_path / "p.h5ad"], capsys)
    assert code == 2 and "exactly one of --spots FILE or --grid STEP" in err


def test_her2st_spots_load_with_serial_sections_grouped_by_patient() -> None:
    if not HER2ST.is_file():
        pytest.skip(f"her2st-spots not found: {HER2ST} (internal shared data)")
    from histosynth.composition.crossval import leave_one_group_out
    from histosynth.composition.inputs import load_spots

    table = load_spots(HER2ST, "major:*")
    assert len(table) == 1015 and len(table.target_names) == 8 and np.allclose(table.targets.sum(axis=1), 1.0)
    assert len(load_spots(HER2ST, "minor:*").target_names) == 22
    assert [f.name for f in leave_one_group_out(table.groups("section"))] == ["B4", "C2", "C3", "C4", "C5"]
    assert [f.name for f in leave_one_group_out(table.groups("patient"), "patient")] == ["B", "C"]


def test_tile_files_without_coordinates_fit_everything_but_the_neighbourhood_model(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "tiles").mkdir()
    rows = []
    for i in range(40):
        colour = rng.integers(30, 226, 3)
        Image.fromarray(np.full((16, 16, 3), colour, np.uint8)).save(tmp_path / "tiles" / f"t{i}.png")
        a = abundances(colour[None])[0]
        rows.append({"spot_id": f"t{i}", "section": "s1" if i < 20 else "s2", "tile": f"tiles/t{i}.png",
                     **dict(zip(TYPES, a))})
    manifest = tmp_path / "spots.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base = ["--data", manifest, "--targets", "major:*", "--encoder", "pixels", "--cache", tmp_path / "c"]
    code, _, err = run(["fit", *base, "--out", tmp_path / "m"], capsys)
    assert code == 2 and "neighbourhood model" in err and "--models mlp,ridge" in err and "embeddings" not in err
    code, out, err = run(["fit", *base, "--models", "mlp,ridge", "--out", tmp_path / "m"], capsys)
    assert code == 0, err
    code, out, err = run(["evaluate", *base, "--models", "ridge", "--no-maps", "--out", tmp_path / "e"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["summary"][0]["mean_pearson"] > 0.5
