"""Hostile output locations: every verb that writes refuses a bad --out in one line (exit 2) before any work;
someone else's folder is never overwritten or half-filled; a resumed run of another model or settings is refused
and truncated tiles are made again; out-of-range values fail up front. Each refusal leaves the disk as it was."""

from __future__ import annotations

import csv
import errno
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import histosynth.cli.app as app_module
from histosynth.errors import InputError
from histosynth.models.autoencoder import Autoencoder
from histosynth.models.denoiser import ConditionalDenoiser
from testkit import run_cli, write_tile_dataset
from tiny_models import CLASSES, TILE, save_tiny_mask_model, tiny_autoencoder_config, tiny_denoiser_config

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
TILER_HEADER = "id,image,mask,label,split,x,y,level,mpp,tissue_fraction\n"
SAMPLE_HEADER = "id,image,mask,label,split,seed,model,sampler,steps,guidance,mask_source\n"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def refused(args: list[str], capsys, root: Path, *named: object) -> str:
    """Run ``args``: exit 2, one stderr line ``error: ...`` naming every item of ``named``, ``root`` unchanged."""
    before = snapshot(root)
    code, _, err = run_cli([str(a) for a in args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(str(name) in lines[0] for name in named), lines[0]
    assert snapshot(root) == before
    return lines[0]


def save_model(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    Autoencoder(tiny_autoencoder_config()).save(folder / "autoencoder")
    ConditionalDenoiser(tiny_denoiser_config()).eval().save(folder / "denoiser", labels=CLASSES.labels)
    CLASSES.save(folder / "classes.json")
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Read-only inputs: a tiny model, a real tile dataset, a small slide, an image, a mask, target masks."""
    root = tmp_path_factory.mktemp("inputs")
    manifest = write_tile_dataset(root / "real", n=6, size=(TILE, TILE), splits=("train", "test"))
    rng = np.random.default_rng(0)
    slide = root / "slide.tif"
    tifffile.imwrite(slide, rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), photometric="rgb")
    mask = np.zeros((TILE, TILE), np.uint8)
    mask[:, : TILE // 2] = 255
    Image.fromarray(mask).save(root / "mask.png")
    (root / "targets").mkdir()
    Image.fromarray(mask).save(root / "targets" / "t0.png")
    Image.fromarray(rng.integers(0, 256, (TILE, TILE, 3), dtype=np.uint8)).save(root / "image.png")
    return SimpleNamespace(root=root, model=save_model(root / "model"), manifest=manifest, dataset=manifest.parent,
                           slide=slide, image=root / "image.png", mask=root / "mask.png", targets=root / "targets",
                           missing=root / "missing")


def _model(i: SimpleNamespace) -> list[object]:
    return ["--model", i.model]


# Verbs that write a folder, and verbs that write a file (with the suffix their --out needs): args for OUT.
DIR_VERBS = {
    "data tile": lambda i, out: ["data", "tile", i.slide, "--out", out],
    "sample": lambda i, out: ["sample", *_model(i), "--n", "1", "--steps", "1", "--out", out],
    "sample --like": lambda i, out: ["sample", *_model(i), "--like", i.image, "--out", out],
    "synthesize-balanced": lambda i, out: ["synthesize-balanced", "--per-prototype", "1", "--prototype-classifier",
                                           i.missing, *_model(i), "--out", out],
    "transfer": lambda i, out: ["transfer", *_model(i), "--appearance", i.image, "--appearance-mask", i.mask,
                                "--target-masks", i.targets, "--out", out],
    "demo": lambda i, out: ["demo", "--out", out],
    "export": lambda i, out: ["export", i.dataset, "--real", i.manifest, "--encoder", "pixels", "--out", out],
    "prototypes": lambda i, out: ["prototypes", i.missing / "x.h5ad", "--out", out],
    **{f"train {verb}": (lambda verb: lambda i, out: ["train", verb, "--data", i.manifest, "--out", out])(verb)
       for verb in ("autoencoder", "denoiser", "decoder", "mask-model", "encoder", "like-model")},
    "train prototype-classifier": lambda i, out: ["train", "prototype-classifier", "--prototypes", i.missing,
                                                  "--out", out],
    "composition fit": lambda i, out: ["composition", "fit", "--data", i.missing, "--targets", "a", "--out", out],
    "composition evaluate": lambda i, out: ["composition", "evaluate", "--data", i.missing, "--targets", "a",
                                            "--out", out],
}
FILE_VERBS = {
    "data classes": (".json", lambda i, out: ["data", "classes", i.manifest, "--out", out]),
    "data stats --json": (".json", lambda i, out: ["data", "stats", i.manifest, "--json", out]),
    "large": (".ome.tif", lambda i, out: ["large", *_model(i), "--size", "32", "--label", "Polyp", "--tile", "16",
                                          "--out", out]),
    "report": (".html", lambda i, out: ["report", i.dataset, "--real", i.manifest, "--out", out]),
    "embed": (".h5ad", lambda i, out: ["embed", i.manifest, "--encoder", "pixels", "--out", out]),
    "evaluate fidelity": (".json", lambda i, out: ["evaluate", "fidelity", "--real", i.manifest, "--synthetic",
                                                   i.dataset, "--encoder", "pixels", "--out", out]),
    "evaluate privacy": (".json", lambda i, out: ["evaluate", "privacy", "--train", i.manifest, "--synthetic",
                                                  i.dataset, "--encoder", "pixels", "--out", out]),
    "evaluate downstream": (".json", lambda i, out: ["evaluate", "downstream", "--real", i.manifest, "--synthetic",
                                                     i.dataset, "--out", out]),
    "composition predict": (".h5ad", lambda i, out: ["composition", "predict", "--model", i.missing, "--slide",
                                                     i.slide, "--grid", "10", "--out", out]),
}


@pytest.fixture
def _unlock(tmp_path: Path):
    """Give ``locked/`` its permissions back after the test, so that pytest can remove it."""
    yield
    if (tmp_path / "locked").exists():
        (tmp_path / "locked").chmod(0o755)


def _bad_location(tmp_path: Path, problem: str, name: str, monkeypatch) -> Path:
    """An output path with ``problem``: under a regular file, a file or folder already there, or unwritable."""
    if problem == "under a file":
        (tmp_path / "blocker.txt").write_text("a regular file")
        return tmp_path / "blocker.txt" / "sub" / name
    if problem == "exists as the other kind":
        out = tmp_path / name
        if out.suffix:  # a file output that is a folder
            out.mkdir()
            (out / "keep.txt").write_text("mine")
        else:
            out.write_text("precious")
        return out
    locked = tmp_path / "locked"
    locked.mkdir()
    if problem == "chmod 555":
        if os.geteuid() == 0:
            pytest.skip("root writes through chmod 555")
        locked.chmod(0o555)
    else:  # the same refusal for root: os.access says no below locked/
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: not Path(p).is_relative_to(locked) and real(p, mode))
    return locked / name


PROBLEMS = ["under a file", "exists as the other kind", "os.access denies", "chmod 555"]


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("verb", sorted(DIR_VERBS))
def test_folder_verbs_refuse_a_bad_out(verb, problem, inputs, tmp_path, capsys, monkeypatch, _unlock) -> None:
    out = _bad_location(tmp_path, problem, "out", monkeypatch)
    refused(DIR_VERBS[verb](inputs, out), capsys, tmp_path, out)


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("verb", sorted(FILE_VERBS))
def test_file_verbs_refuse_a_bad_out(verb, problem, inputs, tmp_path, capsys, monkeypatch, _unlock) -> None:
    if verb == "data classes" and problem == "exists as the other kind":
        pytest.skip("data classes --out FOLDER writes FOLDER/classes.json")
    suffix, args = FILE_VERBS[verb]
    out = _bad_location(tmp_path, problem, "out" + suffix, monkeypatch)
    refused(args(inputs, out), capsys, tmp_path, out)


# --- someone else's folder -----------------------------------------------------------------------------------

FOREIGN = {
    "a real dataset": lambda folder: write_tile_dataset(folder, n=2),
    "another header": lambda folder: (folder / "manifest.csv").write_text("a,b\n1,2\n"),
    "an empty manifest": lambda folder: (folder / "manifest.csv").write_bytes(b""),
    "a binary manifest": lambda folder: (folder / "manifest.csv").write_bytes(bytes(range(256))),
    "a stray file": lambda folder: (folder / "notes.txt").write_text("mine"),
    "a non-PNG in images/": lambda folder: ((folder / "images").mkdir(), (folder / "images" / "a.txt").write_text("x")),
    "a tiler manifest without slide.json": lambda folder: (folder / "manifest.csv").write_text(TILER_HEADER),
}
WRITERS = ["data tile", "sample", "sample --like", "synthesize-balanced", "transfer"]


@pytest.mark.parametrize("content", sorted(FOREIGN))
@pytest.mark.parametrize("verb", WRITERS)
def test_someone_elses_folder_is_left_alone(verb, content, inputs, tmp_path, capsys) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    FOREIGN[content](out)
    line = refused(DIR_VERBS[verb](inputs, out), capsys, tmp_path, out)
    assert "not written by `histosynth" in line


@pytest.mark.parametrize("verb, header", [("data tile", SAMPLE_HEADER), ("sample --like", SAMPLE_HEADER),
                                          ("sample", TILER_HEADER), ("transfer", TILER_HEADER)])
def test_another_verbs_output_is_someone_elses(verb, header, inputs, tmp_path, capsys) -> None:
    out = tmp_path / "other"
    out.mkdir()
    (out / "manifest.csv").write_text(header)
    (out / "slide.json").write_text("{}")
    refused(DIR_VERBS[verb](inputs, out), capsys, tmp_path, out, "not written by")


@pytest.mark.parametrize("verb", ["export", "composition fit", "demo"])
def test_folders_replaced_or_filled_as_a_whole_must_be_theirs(verb, inputs, tmp_path, capsys) -> None:
    out = tmp_path / "docs"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    refused(DIR_VERBS[verb](inputs, out), capsys, tmp_path, out, "choose an empty or new --out")


TRAIN_VERBS = sorted(verb for verb in DIR_VERBS if verb.startswith("train "))


def _model_json(folder: Path, kind: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "histosynth.json").write_text(f'{{"kind": "{kind}", "format_version": 1, "config": {{}}}}')


#: Folders no `histosynth train` recipe wrote (each refused by every train verb).
NOT_A_TRAINING_FOLDER = {
    "a real dataset": FOREIGN["a real dataset"],
    "a foreign manifest.csv": FOREIGN["another header"],
    "a stray file": FOREIGN["a stray file"],
    "a stray file in runs/": lambda folder: ((folder / "runs").mkdir(),
                                             (folder / "runs" / "notes.txt").write_text("x")),
    "runs as a file": lambda folder: (folder / "runs").write_text("x"),
    "a part without histosynth.json": lambda folder: ((folder / "denoiser").mkdir(),
                                                      (folder / "denoiser" / "weights.bin").write_bytes(b"x")),
    "a corrupt part histosynth.json": lambda folder: ((folder / "mask_model").mkdir(),
                                                      (folder / "mask_model" / "histosynth.json").write_text("{")),
}


@pytest.mark.parametrize("content", sorted(NOT_A_TRAINING_FOLDER))
@pytest.mark.parametrize("verb", TRAIN_VERBS)
def test_training_into_someone_elses_folder_is_refused(verb, content, inputs, tmp_path, capsys) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    NOT_A_TRAINING_FOLDER[content](out)
    refused(DIR_VERBS[verb](inputs, out), capsys, tmp_path, out, "not written by `histosynth train",
            "choose an empty or new --out")


@pytest.mark.parametrize("verb", TRAIN_VERBS)
def test_a_model_folder_of_the_other_family_is_refused(verb, inputs, tmp_path, capsys) -> None:
    out = tmp_path / "other"
    if verb == "train prototype-classifier":
        shutil.copytree(inputs.model, out)  # a diffusion model folder
    else:
        _model_json(out, "prototype-classifier")
        (out / "classifier.safetensors").write_bytes(b"weights")
    wanted = "a prototype classifier" if verb == "train prototype-classifier" else "a diffusion model folder"
    refused(DIR_VERBS[verb](inputs, out), capsys, tmp_path, out, f", not {wanted} (what `histosynth {verb}` writes)")


def test_earlier_training_folders_still_pass_the_check(inputs, tmp_path) -> None:
    """Folders that earlier (interrupted, or other recipes') runs made, and fresh ones, are accepted."""
    from histosynth.models.histology_encoder import KIND as ENCODER_KIND
    from histosynth.training.destination import check_training_out

    model = shutil.copytree(inputs.model, tmp_path / "model")  # autoencoder + denoiser + classes.json
    for run in ("autoencoder", "denoiser", "decoder", "mask_model", "encoder", "like"):
        (model / "runs" / run / "checkpoint-00000002").mkdir(parents=True)
    save_tiny_mask_model(model)
    _model_json(model / "encoder", ENCODER_KIND)
    (model / ".denoiser.x1y2.tmp").mkdir()  # an atomic write a kill interrupted
    (model / "runs" / ".classes.json.z.tmp").write_text("")
    interrupted = tmp_path / "interrupted" / "runs" / "denoiser"
    interrupted.mkdir(parents=True)
    (interrupted / "run.json").write_text("{}")
    classifier = tmp_path / "classifier"
    (classifier / "runs" / "prototype-classifier").mkdir(parents=True)
    (classifier / "classifier.safetensors").write_bytes(b"weights")  # killed before its histosynth.json
    (tmp_path / "empty").mkdir()
    for folder in (model, interrupted.parent.parent, tmp_path / "empty", tmp_path / "new" / "sub"):
        check_training_out(folder, "denoiser")
    _model_json(classifier, "prototype-classifier")
    for folder in (classifier, tmp_path / "empty", tmp_path / "new"):
        check_training_out(folder, "prototype-classifier")
    with pytest.raises(InputError, match="holds a model of kind 'prototype-classifier', not 'composition-model'"):
        from histosynth.io import prepare_output_dir

        prepare_output_dir(classifier, kind="x", models={".": "composition-model"})


def test_the_library_refuses_too_before_creating_anything(inputs, tmp_path) -> None:
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.generate import MaskSource, generate_dataset
    from histosynth.sampling.sampler import SamplingSettings

    write_tile_dataset(tmp_path / "theirs", n=2)
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="not written by"):
        generate_dataset(LatentDiffusionModel.load(inputs.model), tmp_path / "theirs", 1, [0], MaskSource(),
                         SamplingSettings(steps=1))
    assert snapshot(tmp_path) == before


# --- resuming ------------------------------------------------------------------------------------------------

def _sample(model: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run_cli(["sample", "--model", str(model), "--n", "1", "--label", "Polyp", "--steps", "1",
                    "--batch-size", "1", "--out", str(out), *extra], capsys)


@pytest.fixture
def sampled(inputs, tmp_path, capsys) -> Path:
    out = tmp_path / "synthetic"
    assert _sample(inputs.model, out, capsys)[0] == 0
    return out


@pytest.mark.parametrize("change", [["--steps", "2"], ["--guidance", "1"], ["--seed", "3"], ["--sampler", "dpm"],
                                    ["--foreground", "0.3"], ["--guidance-interval", "0.2,0.8"], "another model"])
def test_resuming_with_another_model_or_settings_is_refused(change, sampled, inputs, tmp_path, capsys) -> None:
    model = save_model(tmp_path / "other", seed=7) if change == "another model" else inputs.model
    args = ["sample", "--model", model, "--n", "1", "--label", "Polyp", "--steps", "1", "--batch-size", "1",
            "--out", sampled, *([] if change == "another model" else change)]
    refused(args, capsys, sampled, sampled, "other settings")


def test_resuming_with_the_same_weights_in_a_renamed_folder_or_more_tiles_is_fine(sampled, inputs, tmp_path,
                                                                                  capsys) -> None:
    renamed = shutil.copytree(inputs.model, tmp_path / "renamed")
    code, stdout, err = _sample(renamed, sampled, capsys)
    assert code == 0 and "0 tiles written, 1 already there" in stdout, err
    code, stdout, _ = _sample(inputs.model, sampled, capsys, "--label", "Normal")
    assert code == 0 and "1 tiles written, 1 already there" in stdout  # --label Polyp --label Normal
    with open(sampled / "manifest.csv", newline="") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == ["polyp_000000", "normal_000000"]


@pytest.mark.parametrize("damage", ["truncated image", "truncated mask", "missing image", "garbage image"])
def test_tiles_that_do_not_decode_are_made_again(damage, sampled, inputs, capsys) -> None:
    kind = "masks" if "mask" in damage else "images"
    path = sampled / kind / "polyp_000000.png"
    if damage.startswith("truncated"):
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "missing image":
        path.unlink()
    else:
        path.write_bytes(b"not a png at all")
    code, stdout, _ = _sample(inputs.model, sampled, capsys)
    assert code == 0 and "1 tiles written, 0 already there" in stdout
    Image.open(path).load()
    with open(sampled / "manifest.csv", newline="") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == ["polyp_000000"]


def test_large_refuses_an_unfinished_run_of_other_settings_before_the_bar(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "slide.ome.tif"
    (tmp_path / ".slide.ome.tif.partial").mkdir()
    (tmp_path / ".slide.ome.tif.partial" / "request.json").write_text('{"width": 64, "seed": 5}')
    refused(FILE_VERBS["large"][1](inputs, out) + ["--mask", inputs.mask], capsys, tmp_path, out, "other settings")


def test_large_redoes_a_stage_whose_checkpoint_is_truncated(inputs, tmp_path) -> None:
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.large.image import LargeImageRequest, generate_large_image

    model = LatentDiffusionModel.load(inputs.model)
    request = LargeImageRequest(width=32, height=32, label=1, steps=2, mask_file=str(inputs.mask), decode_tile=8,
                                tiff_tile=16)
    full = generate_large_image(model, request, tmp_path / "full.ome.tif")

    def kill(phase: str, done: int, total: int) -> None:
        if phase == "latent" and done == 1:
            raise KeyboardInterrupt

    out = tmp_path / "again.ome.tif"
    with pytest.raises(KeyboardInterrupt):
        generate_large_image(model, request, out, progress=kill)
    for name in ("latent_state.npz", "mask.npy"):
        state = tmp_path / ".again.ome.tif.partial" / name
        state.write_bytes(state.read_bytes()[:50])
    generate_large_image(model, request, out)
    assert tifffile.imread(out).tobytes() == tifffile.imread(full.path).tobytes()


# --- feature caches ------------------------------------------------------------------------------------------

CACHE_VERBS = ["evaluate fidelity", "evaluate privacy", "embed", "export", "composition fit", "composition evaluate",
               "composition predict"]


@pytest.mark.parametrize("problem", ["a file", "missing parent", "under a file", "os.access denies"])
@pytest.mark.parametrize("verb", CACHE_VERBS + ["report"])
def test_a_bad_cache_folder_is_one_line_before_any_work(verb, problem, inputs, tmp_path, capsys, monkeypatch,
                                                        _unlock) -> None:
    cache = tmp_path / "cache"
    if problem == "a file":
        cache.write_text("not a folder")
    elif problem == "missing parent":
        cache = tmp_path / "typo" / "cache"
    else:
        cache = _bad_location(tmp_path, "under a file" if problem == "under a file" else problem, "cache",
                              monkeypatch)
    if verb == "report" and problem != "a file":  # report only reads the cache: a missing one has no vectors
        from histosynth.encoders.features import prepare_cache_dir

        assert prepare_cache_dir(cache, read_only=True) == cache
        return
    refused([*args_for(verb, inputs, tmp_path), "--cache", cache], capsys, tmp_path, cache, "--cache")


def test_a_bad_default_cache_is_one_line(inputs, tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "blocker").write_text("a file")
    monkeypatch.setenv("HISTOSYNTH_CACHE", str(tmp_path / "blocker"))
    refused(args_for("evaluate privacy", inputs, tmp_path), capsys, tmp_path, "the feature cache ($HISTOSYNTH_CACHE)")


def test_corrupt_cache_files_are_computed_again_and_other_files_left_alone(inputs, tmp_path, capsys) -> None:
    cache, out = tmp_path / "cache", tmp_path / "fidelity.json"
    args = ["evaluate", "fidelity", "--real", inputs.manifest, "--synthetic", inputs.dataset, "--split", "test",
            "--encoder", "pixels", "--no-c2st", "--k", "1", "--cache", cache, "--out", out]
    cache.mkdir()
    theirs = {"notes.txt": b"mine", "pixels.npz.bak": b"not ours", "sub/x.npy": b"\x93NUMPY"}
    for name, content in theirs.items():
        (cache / name).parent.mkdir(exist_ok=True)
        (cache / name).write_bytes(content)
    assert run_cli([str(a) for a in args], capsys)[0] == 0
    first = out.read_bytes()
    (ours,) = [p for p in cache.glob("*.npz")]
    for damage in (lambda p: p.write_bytes(p.read_bytes()[:100]), lambda p: p.write_bytes(b"")):
        damage(ours)
        (cache / f"{ours.stem}.part-0123456789ab.npz").write_bytes(b"PK\x03\x04 truncated")
        code, _, err = run_cli([str(a) for a in args], capsys)
        assert code == 0 and "Traceback" not in err, err
        assert out.read_bytes() == first
        assert sorted(p.name for p in cache.glob("*.npz")) == [ours.name]  # the corrupt part is gone
        np.load(ours).close()  # rewritten whole
    assert {name: (cache / name).read_bytes() for name in theirs} == theirs
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) == sorted([*theirs, "sub", ours.name])


# --- values out of range -------------------------------------------------------------------------------------

DEVICE_VERBS = ["sample", "sample --like", "large", "transfer", "synthesize-balanced", "embed", "export",
                "evaluate fidelity", "evaluate privacy", "composition fit", "composition evaluate", "composition predict"]


def args_for(verb: str, i: SimpleNamespace, folder: Path) -> list[object]:
    """The arguments of ``verb`` writing to ``folder/out`` (with the suffix a file output needs)."""
    if verb in DIR_VERBS:
        return DIR_VERBS[verb](i, folder / "out")
    suffix, args = FILE_VERBS[verb]
    return args(i, folder / f"out{suffix}")


@NO_CUDA
@pytest.mark.parametrize("verb", DEVICE_VERBS)
def test_cuda_without_cuda_is_one_line(verb, inputs, tmp_path, capsys) -> None:
    refused([*args_for(verb, inputs, tmp_path), "--device", "cuda"], capsys, tmp_path, "--device cuda", "not available")


@pytest.mark.parametrize("device", ["cdua", "cuda:x", "tpu"])
def test_unknown_devices_are_one_line(device, inputs, tmp_path, capsys) -> None:
    refused([*DIR_VERBS["sample"](inputs, tmp_path / "out"), "--device", device], capsys, tmp_path, device)


@pytest.mark.parametrize("tile", ["100", "24", "40"])
def test_large_tiles_must_be_multiples_of_16(tile, inputs, tmp_path, capsys) -> None:
    args = FILE_VERBS["large"][1](inputs, tmp_path / "x.ome.tif")
    refused([*args[:-4], "--tile", tile, "--out", tmp_path / "x.ome.tif"], capsys, tmp_path, f"--tile {tile}",
            "multiple of 16")


@pytest.mark.parametrize("verb", ["sample", "sample --like", "large", "transfer", "synthesize-balanced"])
def test_negative_seeds_are_one_line(verb, inputs, tmp_path, capsys) -> None:
    refused([*args_for(verb, inputs, tmp_path), "--seed", "-1"], capsys, tmp_path, "--seed -1")


@pytest.mark.parametrize("n", ["1000001", "99999999999"])
def test_sample_n_beyond_the_id_range_is_one_line(n, inputs, tmp_path, capsys) -> None:
    refused(["sample", "--model", inputs.model, "--n", n, "--out", tmp_path / "out"], capsys, tmp_path, f"--n {n}")


def test_sample_that_would_fill_the_disk_is_refused_up_front(inputs, tmp_path, capsys, monkeypatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10_000))
    line = refused(["sample", "--model", inputs.model, "--n", "5", "--out", tmp_path / "out"], capsys, tmp_path,
                   tmp_path / "out", "of disk")
    assert "15 tiles" in line


@pytest.mark.parametrize("args", [["--tile-size", "128"], ["--tile-size", "4096"],
                                  ["--level", "0", "--tile-size", "97"]])
def test_data_tile_larger_than_the_slide_is_one_line(args, inputs, tmp_path, capsys) -> None:
    refused(["data", "tile", inputs.slide, "--out", tmp_path / "out", *args], capsys, tmp_path, inputs.slide,
            "larger than the slide")


# --- help, FID, overview names, the last resort --------------------------------------------------------------

def test_sample_help_shows_the_ray_extra(capsys) -> None:
    code, stdout, _ = run_cli(["sample", "--help"], capsys)
    assert code == 0 and "histosynth[ray]" in stdout.replace("\n", " ").replace("│", "").replace(" ", "")


@pytest.mark.parametrize("n_synthetic, n_real, n", [(50, 412, 50), (5000, 412, 412), (2048, 4096, None)])
def test_fid_warns_below_the_feature_dimension(n_synthetic, n_real, n) -> None:
    from histosynth.cli.evaluate import fid_warning

    warning = fid_warning(n_synthetic, n_real)
    assert warning is None if n is None else f"FID with n={n} is strongly biased" in warning and ">= 412" in warning


def test_fidelity_warns_in_one_line_and_still_runs(tmp_path, capsys) -> None:
    real = write_tile_dataset(tmp_path / "real", n=12, size=(TILE, TILE), splits=("train", "test"))
    synthetic = write_tile_dataset(tmp_path / "synthetic", n=3, size=(TILE, TILE), splits=("",)).parent
    out = tmp_path / "fidelity.json"
    code, _, err = run_cli(["evaluate", "fidelity", "--real", str(real), "--synthetic", str(synthetic), "--encoder",
                            "pixels", "--no-c2st", "--k", "1", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                           capsys)
    assert code == 0 and out.exists(), err
    assert [line for line in err.splitlines() if "FID with n=" in line] == [
        "warning: FID with n=3 is strongly biased (fewer tiles than the 2048 Inception features); compare FIDs only "
        "at equal n, and use >= 412 tiles for the figures in docs"]


@pytest.mark.parametrize("name, overview", [("case1.a.ome.tif", "case1.a_overview.png"),
                                            ("case1.b.OME.TIFF", "case1.b_overview.png"),
                                            ("x.tif", "x_overview.png"), ("v1.2.tiff", "v1.2_overview.png"),
                                            ("plain", "plain_overview.png")])
def test_overview_names_keep_every_dot_but_the_known_suffix(name, overview) -> None:
    from histosynth.sampling.large.image import overview_path

    assert overview_path(Path("/d") / name) == Path("/d") / overview


def test_two_large_images_with_one_stem_keep_their_own_overviews(inputs, tmp_path, capsys) -> None:
    for name in ("case1.a.ome.tif", "case1.b.ome.tif"):
        code, _, err = run_cli(["large", "--model", str(inputs.model), "--size", "32", "--label", "Polyp", "--steps",
                                "1", "--mask", str(inputs.mask), "--tile", "16", "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case1.a.ome.tif", "case1.a_overview.png",
                                                          "case1.b.ome.tif", "case1.b_overview.png"]


@pytest.mark.parametrize("error, line", [
    (PermissionError(errno.EACCES, "Permission denied", "/x/out"), "error: /x/out: permission denied"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/f/out"), "error: /x/f/out: not a directory"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/x/o.json"), "error: /x/o.json: is a directory"),
    (OSError(errno.ENOSPC, "No space left on device"), "error: no space left on device"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/out"), "error: /ro/out: read-only file system"),
])
def test_stray_os_errors_about_files_are_one_line(error, line, monkeypatch, capsys) -> None:
    def run(*_, **__):
        raise error

    monkeypatch.setattr(app_module, "app", run)
    with pytest.raises(SystemExit) as exit_info:
        app_module.main(["sample", "--out", "x"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines() == [line]


def test_other_os_errors_stay_tracebacks(monkeypatch) -> None:
    def run(*_, **__):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(app_module, "app", run)
    with pytest.raises(OSError):
        app_module.main(["sample", "--out", "x"])
