"""``histosynth transfer``: zero-shot appearance transfer onto target masks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def transfer(
    model: Optional[Path] = typer.Option(None, "--model", help="histosynth model folder (default: the shipped EBHI "
                                         "model) or a local Stable Diffusion 1.x/2.x folder (diffusers layout)."),
    appearance: Path = typer.Option(..., "--appearance", help="Image whose look is transferred, any size (e.g. a "
                                    "512 px IHC field): another size than the model's tile is centre-cropped to a "
                                    "square and resized to the tile, with its mask (only its features are used)."),
    appearance_mask: Path = typer.Option(..., "--appearance-mask", help="Its mask, same size as the image (raw values "
                                         "as in training masks)."),
    target_masks: Path = typer.Option(..., "--target-masks", help="Folder of target masks (.png/.tif): the "
                                      "structures, each of the model's tile size (larger ones are refused: cut "
                                      "them into tiles first)."),
    rounds: int = typer.Option(1, "--rounds", min=1, max=8, help="Tiles per target mask (round k: k-th flip/rotation)."),
    select: Optional[int] = typer.Option(None, "--select", min=1, help="Use only the N target masks whose class "
                                         "fractions are closest to the appearance mask's."),
    adain: str = typer.Option("alternate", "--adain", help="alternate (class-masked, one class per step, seed 002), "
                              "all (every class every step), plain (unmasked, the original method) or none."),
    steps: int = typer.Option(50, "--steps", min=1, help="DDIM steps of inversion and sampling (seed: 100)."),
    swap_guidance: float = typer.Option(3.5, "--swap-guidance", min=0.0, help="w in no_swap + w (swap - no_swap)."),
    label: Optional[str] = typer.Option(None, "--label", help="Class to condition on (default: the null class)."),
    raw_masks: bool = typer.Option(False, "--raw-masks", help="Masks hold their own class ids 0..C-1 (any C, e.g. "
                                   "IHC classes), not the model's mask values; the model then gets no mask condition."),
    prompt: str = typer.Option("", "--prompt", help="Stable Diffusion folders only: the text condition (default: none)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, masks/ (the target masks), manifest.csv; "
                             "rerunning resumes."),
) -> None:
    """Lay the look of one real (image, mask) onto other masks without training: inversion, cross-image
    attention and class-masked AdaIN (seed 002). Writes a synthetic dataset with the target masks."""
    from histosynth.checks import check_device, check_seed
    from histosynth.cli.progress import late_bar
    from histosynth.data.images import read_mask, read_raw_mask, read_rgb
    from histosynth.errors import InputError
    from histosynth.sampling.writer import check_folder
    from histosynth.sampling.transfer.load import is_stable_diffusion_folder, load_backbone
    from histosynth.sampling.transfer.dataset import transfer_dataset
    from histosynth.sampling.transfer.appearance import AppearanceTransfer, TransferSettings, fit_appearance
    from histosynth.weights import default_model_dir

    if adain not in ("alternate", "all", "plain", "none"):
        raise InputError(f"unknown --adain {adain!r}; choose alternate, all, plain or none")
    check_seed(seed)
    check_device(device)
    check_folder(out)  # unwritable, a file, or someone else's files: one line before the model loads
    folder = model or default_model_dir()
    if prompt and not is_stable_diffusion_folder(folder):
        raise InputError("--prompt applies to Stable Diffusion folders only", folder)
    backbone = load_backbone(folder, device, prompt=prompt)
    if backbone.classes is None:
        raw_masks = True  # Stable Diffusion knows no mask classes: masks hold their own class ids
        if label is not None:
            raise InputError("--label needs a model with classes; Stable Diffusion takes --prompt", folder)
    label_id = backbone.classes.resolve_label(label) if label is not None else None
    image = read_rgb(appearance)
    mask = read_raw_mask(appearance_mask) if raw_masks else read_mask(appearance_mask, backbone.classes)
    image, mask = fit_appearance(image, mask, backbone.tile_size, str(appearance_mask))
    runner = AppearanceTransfer(backbone, TransferSettings(steps=steps, swap_guidance=swap_guidance, adain=adain))
    if not target_masks.is_dir():
        raise InputError("target mask folder not found", target_masks)
    with late_bar("transferring") as (on_total, advance):  # drawn once every mask has been read and checked
        result = transfer_dataset(runner, image, mask, target_masks, out, rounds, select, label_id, seed, raw_masks,
                                  on_tile=advance, on_total=on_total)
    typer.echo(f"{result.written} tiles written, {result.skipped_existing} already there "
               f"({len(result.targets)} target masks x {rounds} rounds) -> {result.folder}")
