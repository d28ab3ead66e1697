"""`histosynth large` end to end on a tiny model: OME-TIFF out, mask aligned, resume after a kill,
and one-line errors for sizes and budgets it cannot make."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from testkit import run_cli
from histosynth.errors import InputError
from histosynth.models.denoiser import ConditionalDenoiser
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.large.image import LargeImageRequest, generate_large_image

from tiny_models import CLASSES, tiny_denoiser_config


@pytest.fixture
def model_dir(tiny_model_dir: Path) -> Path:
    torch.manual_seed(1)
    config = tiny_denoiser_config().model_copy(update={"mask_conditioning": "none", "latent_channels": 2})
    ConditionalDenoiser(config).eval().save(tiny_model_dir / "mask_model", labels=CLASSES.labels, role="mask",
                                            factor=4)
    return tiny_model_dir


def _request(**overrides) -> LargeImageRequest:
    values = dict(width=96, height=64, label=1, steps=2, mask_steps=2, decode_tile=8, tiff_tile=16)
    values.update(overrides)
    return LargeImageRequest(**values)


def _series(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        image, mask = tif.series[0].asarray(), tif.series[1].asarray()
        return image, mask, len(tif.series[0].levels)


@pytest.mark.parametrize("method", ["random-patch", "greedy-patch", "offset-grid", "sliding-window", "multidiffusion"])
def test_large_image_and_generated_mask_land_in_one_ome_tiff(model_dir: Path, tmp_path: Path, method: str) -> None:
    model = LatentDiffusionModel.load(model_dir)
    out = tmp_path / "out" / "slide.ome.tif"
    result = generate_large_image(model, _request(method=method), out)
    image, mask, levels = _series(out)
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8 and mask.shape == (64, 96)
    assert set(np.unique(mask)) <= {0, 1, 2} and levels >= 2
    assert result.evaluations > 0 and result.mask_evaluations > 0
    assert result.overview.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["slide.ome.tif", "slide_overview.png"]  # no work folder left


def test_a_mask_file_conditions_the_image_and_is_stored_aligned(model_dir: Path, tmp_path: Path) -> None:
    mask = np.zeros((64, 96), np.uint8)
    mask[10:40, 20:70] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "slide.ome.tif"
    generate_large_image(LatentDiffusionModel.load(model_dir), _request(mask_file=str(tmp_path / "mask.png")), out)
    _, stored, _ = _series(out)
    np.testing.assert_array_equal(stored, (mask > 0).astype(np.uint8))


def test_a_run_killed_mid_latent_resumes_to_the_same_image(model_dir: Path, tmp_path: Path) -> None:
    model = LatentDiffusionModel.load(model_dir)
    request = _request(steps=3)
    generate_large_image(model, request, tmp_path / "full.ome.tif")

    def kill_after_first_level(phase: str, done: int, total: int) -> None:
        if phase == "latent" and done == 1:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.ome.tif"
    with pytest.raises(KeyboardInterrupt):
        generate_large_image(model, request, out, progress=kill_after_first_level)
    assert not out.exists() and (tmp_path / ".resumed.ome.tif.partial" / "latent_state.npz").exists()
    with pytest.raises(InputError, match="other settings"):
        generate_large_image(model, _request(steps=3, seed=9), out)
    levels_seen = []
    generate_large_image(model, request, out, progress=lambda p, d, t: levels_seen.append(d) if p == "latent" else None)
    assert levels_seen[0] == 1  # continued from the checkpoint, not from scratch
    np.testing.assert_array_equal(_series(out)[0], _series(tmp_path / "full.ome.tif")[0])


def test_sizes_and_budgets_it_cannot_make_fail_in_one_line(model_dir: Path, tmp_path: Path) -> None:
    model = LatentDiffusionModel.load(model_dir)
    out = tmp_path / "x.ome.tif"
    with pytest.raises(InputError, match="not a multiple of the latent pixel"):
        generate_large_image(model, _request(width=98), out)
    with pytest.raises(InputError, match="smaller than one model window"):
        generate_large_image(model, _request(height=16), out)
    with pytest.raises(InputError, match="over the .* budget"):
        generate_large_image(model, _request(), out, max_memory_bytes=2**20)
    import shutil

    shutil.rmtree(model_dir / "mask_model")
    with pytest.raises(InputError, match="no mask_model"):
        generate_large_image(LatentDiffusionModel.load(model_dir), _request(), out)
    assert not out.exists() and not (tmp_path / ".x.ome.tif.partial").exists()


def test_cli_writes_the_slide_and_refuses_bad_sizes(model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.ome.tif"
    args = ["large", "--model", str(model_dir), "--width", "96", "--height", "64", "--label", "Polyp",
            "--steps", "2", "--mask-steps", "2", "--tile", "16", "--out", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "window evaluations" in stdout and out.exists()
    code, _, stderr = run_cli([*args[:3], "--size", "98", *args[7:]], capsys)
    assert code == 2 and "multiple of the latent pixel" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli([*args[:-1], str(tmp_path / "x.png")], capsys)
    assert code == 2 and ".ome.tif" in stderr


def _physical_size(path: Path) -> str | None:
    import xml.etree.ElementTree as ET

    with tifffile.TiffFile(path) as tif:
        pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
    return pixels.get("PhysicalSizeX")


def test_pixel_size_comes_from_the_model_folder_or_mpp(model_dir: Path, tmp_path: Path, capsys) -> None:
    manifest = model_dir / "denoiser" / "histosynth.json"
    facts = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**facts, "trained_on": {"tiles": 4, "mpp": 0.5}}))
    model = LatentDiffusionModel.load(model_dir)
    assert model.mpp == 0.5
    out = generate_large_image(model, _request(), tmp_path / "a.ome.tif").path
    assert _physical_size(out) == "0.5"
    args = ["large", "--model", str(model_dir), "--width", "96", "--height", "64", "--label", "Polyp",
            "--steps", "2", "--mask-steps", "2", "--tile", "16", "--out", str(tmp_path / "b.ome.tif")]
    code, _, _ = run_cli([*args, "--mpp", "0.25"], capsys)
    assert code == 0 and _physical_size(tmp_path / "b.ome.tif") == "0.25"
    code, _, stderr = run_cli([*args, "--mpp", "-1"], capsys)
    assert code == 2 and "--mpp must be a positive number" in stderr


def test_large_defaults_to_the_offset_grid_plan_everywhere(capsys) -> None:
    """`large --help`, the request model and the sampler settings name the same default method (issue K)."""
    import re

    from histosynth.sampling.large.samplers import LargeSamplingSettings

    code, out, _ = run_cli(["large", "--help"], capsys)
    shown = re.search(r"--method\b.*?\[default: ([\w-]+)\]", re.sub(r"[\s│]+", " ", out))
    assert code == 0 and shown is not None
    assert shown.group(1) == LargeImageRequest.model_fields["method"].default == LargeSamplingSettings().method \
        == "offset-grid"
