"""Sampling: determinism, classifier-free guidance semantics, resume, and one-line errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from histosynth.cli.app import main
from histosynth.errors import InputError, ModelFolderError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.sampling.generate import MaskSource, generate_dataset
from histosynth.sampling.masks import procedural_mask
from histosynth.sampling.sampler import SamplingSettings, TileSampler
from histosynth.sampling.settings import SAMPLERS
from histosynth.models.conditioning import mask_fractions

from tiny_models import TILE


def _sampler(folder: Path, **settings) -> TileSampler:
    """A sampler on the exact path (DDIM, float32) unless ``settings`` say otherwise."""
    exact = {"steps": 4, "sampler": "ddim", "precision": "float32"}
    return TileSampler(LatentDiffusionModel.load(folder), SamplingSettings(**{**exact, **settings}))


def _inputs(n: int):
    masks = [procedural_mask(TILE, 0.5, i) for i in range(n)]
    fractions = mask_fractions(torch.from_numpy(np.stack(masks)), torch.ones(n, dtype=torch.bool), 2, 4)
    return masks, fractions


@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_same_seed_same_image_whatever_the_batch(tiny_model_dir: Path, sampler_name: str) -> None:
    sampler = _sampler(tiny_model_dir, sampler=sampler_name)
    masks, _ = _inputs(3)
    batch = sampler.sample([0, 1, 2], masks, [10, 11, 12])
    alone = sampler.sample([1], masks[1:2], [11])
    again = sampler.sample([0, 1, 2], masks, [10, 11, 12])
    assert batch.dtype == np.uint8 and batch.shape == (3, TILE, TILE, 3)
    assert np.array_equal(batch, again)
    assert np.abs(batch[1].astype(int) - alone[0].astype(int)).max() <= 1  # batch-size-independent up to rounding
    assert not np.array_equal(batch[0], sampler.sample([0], masks[:1], [99])[0])


def test_the_stochastic_sampler_draws_fresh_noise_each_step(tiny_model_dir: Path) -> None:
    masks, _ = _inputs(2)
    stochastic = _sampler(tiny_model_dir, sampler="dpm-sde").sample([0, 1], masks, [10, 11])
    deterministic = _sampler(tiny_model_dir, sampler="dpm").sample([0, 1], masks, [10, 11])
    assert np.abs(stochastic.astype(int) - deterministic.astype(int)).mean() > 1  # same start, other path
    sampler = _sampler(tiny_model_dir, sampler="dpm-sde")
    with pytest.raises(ValueError, match="one seed per tile"):
        sampler.denoise(sampler.initial_noise([1]), torch.tensor([0]), torch.zeros(1, 2, TILE // 4, TILE // 4))


def test_guidance_zero_is_the_unconditional_model(tiny_model_dir: Path) -> None:
    masks, fractions = _inputs(2)
    labels, null = torch.tensor([0, 2]), torch.tensor([3, 3])
    noise = _sampler(tiny_model_dir).initial_noise([1, 2])
    guided_zero = _sampler(tiny_model_dir, guidance=0.0).denoise(noise, labels, fractions)
    unconditional = _sampler(tiny_model_dir, guidance=1.0).denoise(noise, null, torch.zeros_like(fractions))
    assert torch.allclose(guided_zero, unconditional, atol=1e-6)


def test_guidance_interval_guides_only_inside_it(tiny_model_dir: Path) -> None:
    """Outside the interval the plain conditional model runs: an interval no step falls in equals w = 1, the
    full interval equals plain guidance, and an interval holding some steps differs from both."""
    _, fractions = _inputs(2)
    labels = torch.tensor([0, 1])
    noise = _sampler(tiny_model_dir).initial_noise([3, 4])

    def run(**settings):
        return _sampler(tiny_model_dir, **settings).denoise(noise, labels, fractions)

    conditional, guided = run(guidance=1.0), run(guidance=3.0)
    assert torch.equal(run(guidance=3.0, guidance_interval=(0.0, 0.0)), conditional)  # steps 999..249: none at t=0
    assert torch.equal(run(guidance=3.0, guidance_interval=(0.0, 1.0)), guided)
    middle = run(guidance=3.0, guidance_interval=(0.3, 0.8))  # guides t=749 and 499 of 999, 749, 499, 249
    assert not torch.allclose(middle, conditional) and not torch.allclose(middle, guided)
    with pytest.raises(InputError, match="guidance interval"):
        SamplingSettings(guidance_interval=(0.8, 0.3))


def test_batched_guidance_equals_separate_forwards(tiny_model_dir: Path) -> None:
    """One step of w=3 in one batched forward == uncond + 3 (cond - uncond) from two forwards."""
    masks, fractions = _inputs(2)
    labels = torch.tensor([0, 1])
    sampler = _sampler(tiny_model_dir, guidance=3.0, steps=1)
    noise = sampler.initial_noise([5, 6])
    batched = sampler.denoise(noise, labels, fractions)

    from histosynth.sampling.sampler import build_scheduler

    model = sampler.model
    scheduler = build_scheduler(model, "ddim")
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    with torch.no_grad():
        cond = model.denoiser(noise, t.expand(2), labels, fractions)
        uncond = model.denoiser(noise, t.expand(2), torch.tensor([3, 3]), torch.zeros_like(fractions))
    manual = scheduler.step(uncond + 3.0 * (cond - uncond), t, noise).prev_sample
    assert torch.allclose(batched, manual, atol=1e-5)


def test_generation_resumes_without_duplicates(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = LatentDiffusionModel.load(tiny_model_dir)
    settings = SamplingSettings(steps=2, batch_size=2)
    out = tmp_path / "synth"
    generate_dataset(model, out, 3, [0, 1], MaskSource(None, 0.5), settings)
    reference = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    (out / "images" / "normal_000001.png").unlink()  # as if killed before it was written
    (out / "images" / ".x.png.tmp").write_bytes(b"half")
    result = generate_dataset(model, out, 3, [0, 1], MaskSource(None, 0.5), settings)
    assert (result.written, result.skipped_existing) == (1, 5)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == reference
    with open(out / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [f"{c}_{i:06d}" for c in ("normal", "polyp") for i in range(3)]
    assert {"seed", "model", "sampler", "steps", "guidance"} <= set(rows[0])
    assert rows[0]["model"].startswith("model@")


def test_a_smaller_rerun_keeps_the_earlier_tiles_in_the_manifest(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = LatentDiffusionModel.load(tiny_model_dir)
    settings = SamplingSettings(steps=2, batch_size=2)
    out = tmp_path / "synth"
    generate_dataset(model, out, 2, [0], MaskSource(None, 0.5), settings)
    result = generate_dataset(model, out, 1, [1], MaskSource(None, 0.5), settings)
    assert (result.written, result.skipped_existing) == (1, 0)
    with open(out / "manifest.csv") as handle:
        ids = [r["id"] for r in csv.DictReader(handle)]
    assert ids == ["polyp_000000", "normal_000000", "normal_000001"]  # this run's tiles first, none dropped


def test_folder_masks_are_used_and_checked(tiny_model_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    Image.fromarray(procedural_mask(TILE, 0.3, 0) * 255).save(masks_dir / "a.png")
    model = LatentDiffusionModel.load(tiny_model_dir)
    out = tmp_path / "out"
    generate_dataset(model, out, 2, [1], MaskSource(masks_dir), SamplingSettings(steps=2))
    written = np.asarray(Image.open(out / "masks" / "polyp_000000.png"))
    assert np.array_equal(written, procedural_mask(TILE, 0.3, 0))  # 255 -> class id 1
    Image.fromarray(np.full((TILE, TILE), 7, np.uint8)).save(masks_dir / "b.png")
    with pytest.raises(InputError, match="mask values 7 are outside the declared classes"):
        generate_dataset(model, out, 2, [1], MaskSource(masks_dir), SamplingSettings(steps=2))
    (masks_dir / "b.png").unlink()
    Image.fromarray(np.zeros((TILE + 8, TILE), np.uint8)).save(masks_dir / "c.png")
    with pytest.raises(InputError, match=f"the model makes {TILE}x{TILE} tiles"):
        generate_dataset(model, out, 2, [1], MaskSource(masks_dir), SamplingSettings(steps=2))


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err.strip()


def test_cli_bad_inputs_exit_2_with_one_line(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "o")
    code, err = _cli(["sample", "--model", str(tiny_model_dir), "--label", "Unicorn", "--out", out], capsys)
    assert code == 2 and "unknown class 'Unicorn'" in err and len(err.splitlines()) == 1
    code, err = _cli(["sample", "--model", str(tiny_model_dir / "autoencoder"), "--out", out], capsys)
    assert code == 2 and "no autoencoder/ inside" in err
    code, err = _cli(["sample", "--model", str(tmp_path / "nothing"), "--out", out], capsys)
    assert code == 2 and "model folder not found" in err
    code, err = _cli(["sample", "--model", str(tiny_model_dir), "--sampler", "euler", "--out", out], capsys)
    assert code == 2 and "unknown sampler" in err


def test_model_folder_refuses_other_kinds_and_missing_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "autoencoder")
    shutil.copytree(tiny_model_dir / "denoiser", broken / "autoencoder")
    with pytest.raises(ModelFolderError, match="kind 'denoiser', expected 'autoencoder'"):
        LatentDiffusionModel.load(broken)
    missing = tmp_path / "missing"
    shutil.copytree(tiny_model_dir, missing)
    (missing / "denoiser" / "denoiser.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="missing model file denoiser.safetensors"):
        LatentDiffusionModel.load(missing)
    (missing / "classes.json").write_text('{"labels": ["a", "b"]}')
    shutil.copy(tiny_model_dir / "denoiser" / "denoiser.safetensors", missing / "denoiser")
    with pytest.raises(ModelFolderError, match="classes.json does not match"):
        LatentDiffusionModel.load(missing)


def test_sample_help_states_the_sampling_defaults(capsys) -> None:
    """The CLI's defaults are SamplingSettings' (one source, also read by the web app and Ray)."""
    import re

    from testkit import run_cli

    code, out, _ = run_cli(["sample", "--help"], capsys)
    text = re.sub(r"[\s│]+", " ", out)
    defaults = SamplingSettings()
    assert code == 0
    for option, value in (("--steps", defaults.steps), ("--guidance", defaults.guidance),
                          ("--sampler", defaults.sampler), ("--batch-size", defaults.batch_size),
                          ("--guidance-interval", ",".join(f"{v:g}" for v in defaults.guidance_interval))):
        assert re.search(rf"{option} .*?\[default: {re.escape(str(value))}\]", text), option


def test_guidance_interval_is_recorded_in_the_manifest(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from testkit import read_rows, run_cli

    out = tmp_path / "o"
    code, _, err = run_cli(["sample", "--model", str(tiny_model_dir), "--n", "1", "--label", "Normal", "--steps", "2",
                            "--guidance", "3", "--guidance-interval", "0.2,0.8", "--out", str(out)], capsys)
    assert code == 0, err
    assert [row["guidance"] for row in read_rows(out / "manifest.csv")] == ["3@0.2-0.8"]
    code, _, err = run_cli(["sample", "--model", str(tiny_model_dir), "--guidance-interval", "0.8,0.2", "--out",
                            str(tmp_path / "p")], capsys)
    assert code == 2 and "guidance interval" in err and len(err.strip().splitlines()) == 1


def test_bfloat16_is_recorded_close_to_float32_and_not_mixed_on_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    from histosynth.sampling.sampler import native_bfloat16, resolve_precision

    model = LatentDiffusionModel.load(tiny_model_dir)
    masks, _ = _inputs(2)
    fp32 = _sampler(tiny_model_dir, sampler="dpm").sample([0, 1], masks, [10, 11])
    bf16 = _sampler(tiny_model_dir, sampler="dpm", precision="bfloat16").sample([0, 1], masks, [10, 11])
    difference = np.abs(fp32.astype(int) - bf16.astype(int))
    assert 0 < difference.mean() < 8  # other arithmetic, the same tile up to rounding noise

    out = tmp_path / "synth"
    generate_dataset(model, out, 1, [0], MaskSource(None, 0.5),
                     SamplingSettings(steps=2, sampler="ddim", precision="bfloat16"))
    with open(out / "manifest.csv") as handle:
        assert next(csv.DictReader(handle))["sampler"] == "ddim+bf16"
    with pytest.raises(InputError, match="other settings"):
        generate_dataset(model, out, 2, [0], MaskSource(None, 0.5),
                         SamplingSettings(steps=2, sampler="ddim", precision="float32"))

    # The defaults (issue K): UniPC, in bfloat16 exactly where the CPU computes it natively.
    generate_dataset(model, tmp_path / "default", 1, [0], MaskSource(None, 0.5), SamplingSettings(steps=2))
    with open(tmp_path / "default" / "manifest.csv") as handle:
        recorded = next(csv.DictReader(handle))["sampler"]
    assert recorded == ("unipc+bf16" if native_bfloat16("cpu") else "unipc")

    auto = resolve_precision(SamplingSettings(precision="auto"), "cpu")
    assert auto.precision == ("bfloat16" if native_bfloat16("cpu") else "float32")
    with pytest.raises(ValueError, match="resolve"):
        SamplingSettings(precision="auto").sampler_record
    with pytest.raises(InputError, match="precision"):
        SamplingSettings(precision="float16")


def test_an_unknown_sampler_is_named_short_and_with_its_source() -> None:
    from histosynth.errors import InputError
    from histosynth.sampling.settings import check_sampler

    with pytest.raises(InputError) as caught:
        check_sampler("x" * 500, "sampler")
    message = str(caught.value)
    assert message.startswith("sampler: unknown sampler 'xxxx") and "x" * 41 not in message
    assert len(message) < 120 and "unipc" in message
    assert check_sampler("ddim") == "ddim"
