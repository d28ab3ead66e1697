"""``histosynth large``: one arbitrarily large image + mask, written as a pyramidal OME-TIFF."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def large(
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder (default: the shipped EBHI model)."),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="Square image side in px (or --width/--height)."),
    width: Optional[int] = typer.Option(None, "--width", min=8, help="Image width in px (multiple of 8)."),
    height: Optional[int] = typer.Option(None, "--height", min=8, help="Image height in px (multiple of 8)."),
    label: str = typer.Option(..., "--label", help="Diagnostic class name or id."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Mask image of exactly width x height (raw values as in "
                                        "the training masks). Without it the mask model generates one."),
    generate_mask: bool = typer.Option(False, "--generate-mask", help="Generate the mask with the model's mask_model/ "
                                       "(the default when --mask is not given)."),
    method: str = typer.Option("offset-grid", "--method", help="offset-grid (a window grid shifted at random per "
                               "level: fewest windows), random-patch (DiffInfinite), greedy-patch (its centres, most "
                               "lagging pixels first), sliding-window (outpainting baseline) or multidiffusion (window "
                               "averaging baseline)."),
    steps: int = typer.Option(20, "--steps", min=1, help="DDIM levels (equal for every method)."),
    guidance: float = typer.Option(2.0, "--guidance", min=0.0, help="Classifier-free guidance weight."),
    eta: float = typer.Option(0.0, "--eta", min=0.0, max=1.0, help="DDIM eta (DiffInfinite used 1)."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Window stride in latent px for the baselines "
                                         "(default: half a window)."),
    seed: int = typer.Option(0, "--seed"),
    mask_steps: int = typer.Option(20, "--mask-steps", min=1, help="DDIM levels of mask generation."),
    decoder: str = typer.Option("hann", "--decoder", help="hann (four shifted grids, Hann-blended), naive (tiles) "
                                "or diffusers (AutoencoderKL tiled decode)."),
    mpp: Optional[float] = typer.Option(None, "--mpp", help="Microns per pixel written into the OME-TIFF "
                                        "(PhysicalSizeX/Y; default: the model's training resolution when its "
                                        "folder records one, else none)."),
    tile: int = typer.Option(256, "--tile", min=16, help="OME-TIFF tile size (multiple of 16)."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    max_memory_gb: Optional[float] = typer.Option(None, "--max-memory-gb", min=0.1,
                                                  help="Refuse sizes whose estimated peak memory exceeds this "
                                                  "(default: physical memory)."),
    out: Path = typer.Option(..., "--out", help="Output .ome.tif; a PNG overview is written beside it. "
                             "Rerunning the same command resumes an interrupted run."),
) -> None:
    """Generate a large image + mask by random-patch latent diffusion (or a baseline sampler), decode
    it seamlessly, and write a tiled pyramidal OME-TIFF (image and mask series) plus a PNG overview."""
    from pydantic import ValidationError

    from histosynth.checks import check_device, check_mpp, check_seed
    from histosynth.cli.progress import progress_bar
    from histosynth.errors import InputError
    from histosynth.io import prepare_output_file
    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.large.image import LargeImageRequest, check_request, generate_large_image
    from histosynth.sampling.large.samplers import METHODS
    from histosynth.weights import default_model_dir

    if size is None and (width is None or height is None):
        raise InputError("give --size, or both --width and --height")
    width, height = width or size, height or size
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    if decoder not in ("hann", "naive", "diffusers"):
        raise InputError(f"unknown decoder {decoder!r}; choose hann, naive or diffusers")
    if mask is not None and generate_mask:
        raise InputError("give --mask or --generate-mask, not both")
    if tile % 16:
        raise InputError(f"--tile {tile} is not a multiple of 16 (TIFF tiles are); try {max(16, tile - tile % 16)}")
    check_mpp(mpp)
    check_seed(seed)
    check_device(device)
    if not str(out).lower().endswith((".ome.tif", ".ome.tiff")):
        raise InputError("the output must end in .ome.tif or .ome.tiff", out)
    prepare_output_file(out)  # before the model loads; check_request repeats it with the sizes
    loaded = LatentDiffusionModel.load(model or default_model_dir())
    try:
        request = LargeImageRequest(width=width, height=height, label=loaded.classes.resolve_label(label),
                                    method=method, steps=steps, guidance=guidance, eta=eta, stride=stride, seed=seed,
                                    mask_file=str(mask) if mask else None, mask_steps=mask_steps, decoder=decoder,
                                    tiff_tile=tile)
    except ValidationError as error:
        first = error.errors()[0]
        option = {"tiff_tile": "tile"}.get(str(first["loc"][0]), str(first["loc"][0])).replace("_", "-")
        raise InputError(f"--{option}: {first['msg']}") from None
    budget = int(max_memory_gb * 2**30) if max_memory_gb else None
    check_request(loaded, request, out, budget)  # before the bar, so a refusal is one line
    with progress_bar("large image", None) as handle:
        def progress(phase: str, done: int, total: int) -> None:
            handle.set_total(total or None)
            handle.set_completed(done)
            handle.set_status(phase)

        result = generate_large_image(loaded, request, out, device, progress, budget, mpp)
    megapixels = result.width * result.height / 1e6
    typer.echo(f"{result.width}x{result.height} px, {result.evaluations} window evaluations "
               f"({result.evaluations / megapixels:.0f} per megapixel) + {result.mask_evaluations} for the mask, "
               f"{sum(result.seconds.values()):.0f} s -> {result.path} (overview {result.overview.name})")
