"""Issue I's leak-free generators: the recipes (the base drops every condition; unlabelled tiles train the null
one), the subset `data subset` writes is the one bench_downstream draws, and scripts/issue_i_leakfree.py skips
finished cells, resumes an interrupted fine-tune and hands the grid one model per subset; the GPU bundle comes
back as the same model folders (scripts/gpu/issue_i.py)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import yaml

from histosynth.data.manifest import TileRecord, load_manifest
from histosynth.data.splits import draw_subset
from histosynth.models.denoiser import DenoiserConfig
from histosynth.training.objectives import DenoiserLossConfig, DenoiserObjective
from histosynth.training.recipe_config import load_recipe
from testkit import read_rows, run_cli, write_rows, write_tile_dataset
from tiny_models import CLASSES, tiny_autoencoder_config, tiny_denoiser_config

REPO = Path(__file__).resolve().parents[2]
for folder in ("benchmarks", "scripts", "scripts/gpu"):
    sys.path.insert(0, str(REPO / folder))
import bench_downstream  # noqa: E402
import issue_i_leakfree as driver  # noqa: E402

CONFIGS = REPO / "configs"
BASE_CPU, BASE_GPU = CONFIGS / "ebhi_denoiser_uncond_base_cpu.yaml", CONFIGS / "ebhi_denoiser_uncond_base_gpu.yaml"
FINETUNE = CONFIGS / "ebhi_denoiser_subset_finetune.yaml"
SHIPPED = REPO / "src" / "histosynth" / "weights" / "default" / "denoiser" / "histosynth.json"


# ------------------------------------------------------------------------------------------------ recipes
def _recipe(path: Path, init: dict | None = None):
    """As `train denoiser` assembles it: the latent shape and class counts (or, with --init, the continued
    denoiser's architecture) under the YAML."""
    defaults = init or {"latent_channels": 4, "latent_size": 28, "num_labels": 6, "num_mask_classes": 2}
    return load_recipe(path, DenoiserConfig, DenoiserLossConfig, model_defaults=defaults)


def test_recipes_parse_the_base_is_the_shipped_architecture_and_the_fine_tune_continues_it() -> None:
    shipped = DenoiserConfig.model_validate(json.loads(SHIPPED.read_text())["config"])
    cpu, gpu = _recipe(BASE_CPU), _recipe(BASE_GPU)
    assert cpu.model == shipped and gpu.model == shipped
    assert cpu.objective.condition_dropout == gpu.objective.condition_dropout == 1.0
    assert (cpu.train.steps, cpu.train.batch_size, cpu.train.checkpoint_every, cpu.train.lr_schedule) == \
        (3000, 64, 100, "cosine")
    assert gpu.train.batch_size == 256 and gpu.train.checkpoint_every <= 100
    tune = _recipe(FINETUNE, init=shipped.model_dump())
    assert "model" not in yaml.safe_load(FINETUNE.read_text())  # the architecture comes from --init
    assert tune.model == shipped and tune.objective.condition_dropout == 0.1
    assert tune.train.learning_rate < cpu.train.learning_rate and 100 <= tune.train.steps <= 1000
    oversampled = _recipe(FINETUNE.with_name("ebhi_denoiser_subset_finetune_labelled8.yaml"), init=shipped.model_dump())
    assert oversampled.train == tune.train and oversampled.model == tune.model  # equal compute, same architecture
    assert oversampled.objective.labelled_repeats == 8 and tune.objective.labelled_repeats == 1


class _Spy(torch.nn.Module):
    """Records the condition each sample reaches the denoiser with."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[torch.Tensor] = []
        self.fractions: list[torch.Tensor] = []

    def forward(self, noisy, t, labels, fractions):
        self.labels.append(labels.clone())
        self.fractions.append(fractions.clone())
        return torch.zeros_like(noisy)


def _conditions(settings: DenoiserLossConfig, labels: torch.Tensor, draws: int = 40):
    """(tile index, label, fraction sum) of every sample of ``draws`` batches of 16."""
    from diffusers import DDPMScheduler

    n = len(labels)
    objective = DenoiserObjective(
        latent_mean=torch.zeros(n, 8, 4, 4, 4).half(), latent_logvar=torch.full((n, 8, 4, 4, 4), -10.0).half(),
        fractions=torch.stack([torch.full((2, 4, 4), 0.5) if int(v) < 3 else torch.zeros(2, 4, 4) for v in labels]),
        labels=labels, shift=torch.zeros(4), scale=1.0, null_label=3,
        noise_scheduler=DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction"), settings=settings)
    spy, generator, rows = _Spy(), torch.Generator().manual_seed(0), []
    for _ in range(draws):
        indices = torch.randint(0, n, (16,), generator=generator)
        objective.loss(spy, indices, generator, torch.device("cpu"))
        rows += list(zip(indices.tolist(), spy.labels[-1].tolist(), spy.fractions[-1].sum(dim=(1, 2, 3)).tolist()))
    return rows


def test_the_base_drops_every_condition_and_unlabelled_tiles_train_the_null_one() -> None:
    labels = torch.tensor([0, 1, 2, 3, 3, 3, 3, 3])  # 3 = the null id: tiles the subset left unlabelled
    base = _conditions(_recipe(BASE_CPU).objective, labels)
    assert all(label == 3 and mass == 0 for _, label, mass in base)  # not one label or mask reaches it

    tune = _conditions(_recipe(FINETUNE, init=tiny_denoiser_config().model_dump()).objective, labels)
    unlabelled = [(label, mass) for i, label, mass in tune if i >= 3]
    labelled = [(i, label, mass) for i, label, mass in tune if i < 3]
    assert unlabelled and all(label == 3 and mass == 0 for label, mass in unlabelled)
    kept = [label == i and mass > 0 for i, label, mass in labelled]
    assert 0.75 < sum(kept) / len(kept) < 1  # ~10% dropped for guidance, the rest with their own condition
    assert all(label == 3 and mass == 0 for (i, label, mass), k in zip(labelled, kept) if not k)


# ------------------------------------------------------------------------------------- subset identity
@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_tile_dataset(tmp_path / "real", n=40, size=(32, 32), labels=tuple(CLASSES.labels),
                              splits=("train", "val", "train", "test", "train"), cases=[f"c{k}" for k in range(16)])


def test_data_subset_writes_the_subset_bench_downstream_draws(dataset: Path, tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    drawn: dict[str, list[str]] = {}

    def generate(args, model_path, subsets, config, folder):  # what the grid would generate from
        drawn[model_path] = [r.id for r in subsets[0]]
        return 0

    monkeypatch.setattr(bench_downstream, "generate", generate)
    template = str(tmp_path / "out" / "models" / driver.CELL_TEMPLATE)
    bench_downstream.run(bench_downstream.parse_args([
        "--model", template, "--data", str(dataset), "--task", "classification", "--fractions", "0.2,0.5",
        "--seeds", "3", "--arms", "real,synthetic", "--generate-only", "--out", str(tmp_path / "bench")]), "test")
    assert len(drawn) == 6
    train_order = [r.id for r in load_manifest(dataset).select_split("train").records]
    for fraction in (0.2, 0.5):
        for seed in range(3):
            cell = driver.Cell(fraction, seed, tmp_path / "out")
            code, _, err = run_cli(["data", "subset", str(dataset), "--fraction", repr(fraction), "--seed", str(seed),
                                    "--unlabel-rest", "--out", str(cell.subset)], capsys)
            assert code == 0, err
            bench_ids = drawn[template.format(fraction=fraction, seed=seed)]  # the cell's own model folder
            assert str(cell.model) == template.format(fraction=fraction, seed=seed)
            rows = read_rows(cell.subset / "manifest.csv")
            assert sorted(r["id"] for r in rows if r["label"]) == sorted(bench_ids)
            assert [r["id"] for r in rows] == train_order  # every cell: the train split's tiles, in its order
            assert driver.check_subset(cell, dataset)["ids"] == bench_ids
            assert bench_ids == [r.id for r in draw_subset(load_manifest(dataset).select_split("train").records,
                                                            fraction, seed, "classification")]
    assert len({tuple(ids) for ids in drawn.values()}) > 1  # the seeds draw different subsets


# ------------------------------------------------------------------------------------------------ driver
def _cli_runner(calls: list[list[str]]):
    """The driver's runner, in-process: the project's CLI through its main(), other commands recorded only."""
    from histosynth.cli.app import main

    def run(argv: Sequence[str], log: Path | None) -> int:
        prefix = driver.histosynth_command()
        if list(argv[:len(prefix)]) != prefix:
            calls.append(["other", *argv])
            return 0
        args = list(argv[len(prefix):])
        calls.append(args[:2] + [args[args.index("--out") + 1]])
        try:
            main(args)
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny leak-free base (condition dropout 1.0) and a driver run of two cells, shared by the tests below
    (each copies what it changes)."""
    from histosynth.cli.app import main
    from histosynth.models.autoencoder import Autoencoder

    root = tmp_path_factory.mktemp("issue_i")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    parts = root / "parts"
    Autoencoder(tiny_autoencoder_config()).save(parts / "autoencoder")
    CLASSES.save(parts / "classes.json")
    data = write_tile_dataset(root / "real", n=40, size=(32, 32), labels=tuple(CLASSES.labels),
                              splits=("train", "val", "train", "test", "train"), cases=[f"c{k}" for k in range(16)])
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in tiny_denoiser_config().model_dump().items()
             if k in ("block_out_channels", "attention_levels", "norm_num_groups", "attention_head_dim")}
    train = {"batch_size": 4, "warmup_steps": 0, "lr_schedule": "constant", "log_every": 1, "checkpoint_every": 2}
    (root / "base.yaml").write_text(yaml.safe_dump({"train": {**train, "steps": 2}, "model": model,
                                                    "objective": {"condition_dropout": 1.0}}))
    (root / "tune.yaml").write_text(yaml.safe_dump({"train": {**train, "steps": 4},
                                                    "objective": {"condition_dropout": 0.1}}))
    try:
        main(["train", "denoiser", "--data", str(data), "--classes", str(parts / "classes.json"), "--out",
              str(root / "base"), "--autoencoder", str(parts / "autoencoder"), "--config", str(root / "base.yaml")])
    except SystemExit as exit_:
        assert not exit_.code
    paths = {"root": root, "data": data, "parts": parts, "base": root / "base", "tune": root / "tune.yaml",
             "out": root / "out"}
    calls: list[list[str]] = []
    assert driver.main(_args(paths, "--train-only"), runner=_cli_runner(calls)) == 0
    assert [c[:2] for c in calls] == [["data", "subset"], ["train", "denoiser"]] * 2
    return paths


def _args(paths: dict[str, Path], *extra: str, out: Path | None = None) -> list[str]:
    return ["--base", str(paths["base"]), "--parts", str(paths["parts"]), "--data", str(paths["data"]),
            "--fractions", "0.3", "--seeds", "2", "--out", str(out or paths["out"]), "--finetune-config",
            str(paths["tune"]), "--threads", "1", *extra]


def test_each_cell_gets_a_complete_model_folder_recording_its_subset_and_base(trained: dict[str, Path]) -> None:
    from histosynth.io import file_digest

    base_sha = file_digest(trained["base"] / "denoiser" / "denoiser.safetensors")
    for seed in (0, 1):
        cell = driver.Cell(0.3, seed, trained["out"])
        assert sorted(p.name for p in cell.model.iterdir()) == ["autoencoder", "classes.json", "denoiser"]
        facts = json.loads((cell.model / "denoiser" / "histosynth.json").read_text())
        record = facts[driver.RECORD_KEY]
        assert facts["continued_from"]["weights_sha256"] == base_sha == record["base"]["weights_sha256"]
        assert record["base"]["leak_free"] and record["base"]["objective"]["condition_dropout"] == 1.0
        ids = driver.downstream_draw(trained["data"], 0.3, seed)
        assert record["subset"]["ids_sha256"] == driver.ids_digest(ids)
        assert (record["subset"]["fraction"], record["subset"]["seed"]) == (0.3, seed)
        assert facts["trained_on"]["manifest"].startswith(str(cell.subset))  # the subset folder it saw
        # the base's latents were linked in, not encoded again (same tiles in the same order)
        cache = cell.train / "runs" / "denoiser" / "latents.safetensors"
        assert cache.stat().st_ino == (trained["base"] / "runs" / "denoiser" / "latents.safetensors").stat().st_ino


def test_a_rerun_skips_finished_cells_and_resumes_an_interrupted_fine_tune(trained: dict[str, Path], tmp_path: Path,
                                                                          capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained["out"], out)
    calls: list[list[str]] = []
    capsys.readouterr()
    assert driver.main(_args(trained, "--train-only", out=out), runner=_cli_runner(calls)) == 0
    assert calls == [] and capsys.readouterr().out.count("done already") == 2

    first, second = driver.Cell(0.3, 0, out), driver.Cell(0.3, 1, out)
    shutil.rmtree(first.model)  # killed after training, before the model folder was written
    shutil.rmtree(second.model)  # killed mid fine-tune: the step-2 checkpoint is all there is
    shutil.rmtree(second.train / "denoiser")
    shutil.rmtree(second.train / "runs" / "denoiser" / "checkpoints" / "step_0000004")
    assert driver.main(_args(trained, "--train-only", out=out), runner=_cli_runner(calls)) == 0
    assert calls == [["train", "denoiser", str(second.train)]]  # no new subset, no second training of the first
    printed = capsys.readouterr().out
    assert "resuming the fine-tune from step 2" in printed and "fine-tune finished earlier" in printed
    assert first.model.is_dir() and second.model.is_dir()
    logged = [json.loads(line)["step"] for line in
              (second.train / "runs" / "denoiser" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]  # resumed at step 3: nothing trained twice

    # stopped by the GPU script's time budget and finalised from step 2: a rerun trains it to its end
    shutil.rmtree(second.model)
    shutil.rmtree(second.train / "runs" / "denoiser" / "checkpoints" / "step_0000004")
    finalised = second.train / "denoiser" / "histosynth.json"
    finalised.write_text(json.dumps({**json.loads(finalised.read_text()),
                                     "stopped_early": {"planned_steps": 4, "checkpoint": "step_0000002"}}))
    calls.clear()
    assert driver.main(_args(trained, "--train-only", out=out), runner=_cli_runner(calls)) == 0
    assert calls == [["train", "denoiser", str(second.train)]]
    assert "stopped_early" not in json.loads((second.model / "denoiser" / "histosynth.json").read_text())

    facts_path = first.model / "denoiser" / "histosynth.json"
    facts = json.loads(facts_path.read_text())
    facts["continued_from"]["weights_sha256"] = "0" * 64
    facts_path.write_text(json.dumps(facts))
    with pytest.raises(SystemExit, match="another base"):
        driver.main(_args(trained, "--train-only", out=out), runner=_cli_runner(calls))


def test_the_grid_gets_each_subsets_own_model_and_issue_is_arms(trained: dict[str, Path]) -> None:
    calls: list[list[str]] = []
    assert driver.main(_args(trained, "--train-steps", "7", "--size", "16", "--checkpoint", "val"),
                       runner=_cli_runner(calls)) == 0
    (bench,) = calls
    assert bench[1:3] == [sys.executable, str(driver.BENCH)]
    options = dict(zip(bench[3::2], bench[4::2]))
    assert options["--model"] == str(trained["out"] / "models" / "f{fraction}_s{seed}")
    assert all(Path(options["--model"].format(fraction=0.3, seed=s)).is_dir() for s in (0, 1))
    assert options["--arms"] == "real,real-noaug,synthetic,extra-real" and options["--modes"] == "balanced"
    assert (options["--fractions"], options["--seeds"], options["--task"]) == ("0.3", "2", "classification")
    assert (options["--train-steps"], options["--size"], options["--checkpoint"]) == ("7", "16", "val")
    args = bench_downstream.parse_args(bench[3:])  # bench_downstream takes every option
    assert args.model == options["--model"]


def test_a_segmentation_grid_reuses_the_cells_whose_subsets_hold_its_draw(trained: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained["out"], out)
    for seed in (0, 1):  # every tile has a label and a mask: the two tasks draw the same tiles
        assert driver.downstream_draw(trained["data"], 0.3, seed, "segmentation") == \
            driver.downstream_draw(trained["data"], 0.3, seed)
    calls: list[list[str]] = []
    assert driver.main(_args(trained, "--task", "segmentation", out=out), runner=_cli_runner(calls)) == 0
    (bench,) = calls  # no new subset and no fine-tune: the classification cells' generators serve
    options = dict(zip(bench[3::2], bench[4::2]))
    assert options["--task"] == "segmentation" and options["--model"] == str(out / "models" / driver.CELL_TEMPLATE)

    # where the segmentation draw differs (train tiles without a mask), a cell is refused, never silently reused
    fewer_masks = shutil.copytree(trained["data"].parent, tmp_path / "real") / "manifest.csv"
    rows = read_rows(fewer_masks)
    for row in rows[:12]:
        if row["split"] == "train":
            row["mask"] = ""
    write_rows(fewer_masks, rows)
    assert any(driver.downstream_draw(fewer_masks, 0.3, s, "segmentation") != driver.downstream_draw(fewer_masks, 0.3, s)
               for s in (0, 1))
    args = _args(trained, "--task", "segmentation", out=out)
    args[args.index("--data") + 1] = str(fewer_masks)
    with pytest.raises(SystemExit, match="not the subset bench_downstream draws for segmentation"):
        driver.main(args, runner=_cli_runner(calls))


def test_a_base_that_may_have_seen_labels_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not known to be leak-free"):
        driver.resolve_base(REPO / "src" / "histosynth" / "weights" / "default", trained["parts"], False)
    leaky = tmp_path / "leaky"
    shutil.copytree(trained["base"], leaky)
    run = leaky / "runs" / "denoiser" / "run.json"
    settings = json.loads(run.read_text())
    settings["objective"]["condition_dropout"] = 0.1
    run.write_text(json.dumps(settings))
    with pytest.raises(SystemExit, match="condition_dropout 0.1"):
        driver.resolve_base(leaky, trained["parts"], False)
    assert not driver.resolve_base(leaky, trained["parts"], True).facts["leak_free"]


def test_the_gpu_bundle_comes_back_as_the_drivers_model_folders(trained: dict[str, Path], tmp_path: Path) -> None:
    """The device's WORK (base + the driver's cells) -> ship float16 -> bundle -> receive here: the same cells'
    model folders, which the driver then skips (the float16 base is recognised as their base)."""
    import issue_h
    import issue_i

    work = tmp_path / "work"
    shutil.copytree(trained["base"], work / "base")
    shutil.copytree(trained["out"], work / "leakfree", ignore=shutil.ignore_patterns("models"))
    shutil.copy2(trained["tune"], work / "finetune.yaml")
    bundle, files = work / "bundle" / "issue_i", tmp_path / "files"
    issue_i.main(["ship", "--work", str(work), "--bundle", str(bundle)])
    issue_i.main(["summary", "--work", str(work), "--bundle", str(bundle), "--t0", "0", "--budget", "480"])
    issue_h.main(["bundle", "--root", str(bundle), "--out", str(files), "--name", "issue_i", "--max-parts", "7"])
    dest = tmp_path / "dest"
    issue_i.main(["receive", str(files), "--dest", str(dest), "--data", str(trained["data"]),
                  "--parts", str(trained["parts"])])

    for seed in (0, 1):
        cell = driver.Cell(0.3, seed, dest)
        facts = json.loads((cell.model / "denoiser" / "histosynth.json").read_text())
        assert facts[driver.RECORD_KEY]["subset"]["ids_sha256"] == driver.ids_digest(
            driver.downstream_draw(trained["data"], 0.3, seed))
        weights = (cell.model / "denoiser" / "denoiser.safetensors").read_bytes()
        assert len(weights) < 0.6 * len((trained["out"] / "models" / cell.name / "denoiser" /
                                         "denoiser.safetensors").read_bytes())  # float16
    calls: list[list[str]] = []
    assert driver.main(["--base", str(dest / "base"), "--parts", str(trained["parts"]), "--data",
                        str(trained["data"]), "--fractions", "0.3", "--seeds", "2", "--out", str(dest),
                        "--train-only"], runner=_cli_runner(calls)) == 0
    assert calls == []


def test_filtered_mode_makes_a_pool_larger_than_the_top_up_it_keeps() -> None:
    subset = [TileRecord(f"p{i}", Path("p.png"), label="Polyp") for i in range(6)] + \
             [TileRecord(f"n{i}", Path("n.png"), label="Normal") for i in range(2)]
    balanced = bench_downstream.tiles_per_source(subset, 1, True)
    assert balanced == {**{f"p{i}": 1 for i in range(6)}, "n0": 2, "n1": 2}  # 4 more Normal: 2 per tile
    pooled = bench_downstream.tiles_per_source(subset, 1, True, pool=3)
    assert pooled == {**{f"p{i}": 1 for i in range(6)}, "n0": 6, "n1": 6}
    assert bench_downstream.tiles_per_source(subset, 4, False, pool=3) == {r.id: 4 for r in subset}


def test_a_new_fraction_links_the_latents_an_earlier_grids_cell_left(trained: dict[str, Path], tmp_path: Path) -> None:
    """The committed base ships without its latent cache: cells of a new fraction take an earlier cell's."""
    base = tmp_path / "base"
    shutil.copytree(trained["base"], base)
    (base / "runs" / "denoiser" / "latents.safetensors").unlink()
    out = tmp_path / "out"
    shutil.copytree(trained["out"], out)
    args = _args({**trained, "base": base}, "--train-only", out=out)
    args[args.index("--fractions") + 1] = "0.2"
    assert driver.main(args, runner=_cli_runner([])) == 0
    earlier = sorted((out / "train").glob("f0.3_s*/runs/denoiser/latents.safetensors"))[0].stat().st_ino
    for seed in (0, 1):
        cache = driver.Cell(0.2, seed, out).train / "runs" / "denoiser" / "latents.safetensors"
        assert cache.stat().st_ino == earlier
