"""Trainings run once in one process (by the test) and once per rank under ``torchrun`` (by ``main``).

``python -m torch.distributed.run --standalone --nproc_per_node 2 train_worker.py OUT`` writes
``OUT/<run>/`` (the loop's metrics and checkpoints) and ``OUT/<run>_rank<r>.safetensors`` (each
rank's final weights).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny_models

from tiny_models import make_tiles, tiny_autoencoder_config, tiny_denoiser_config, tiny_train_config  # noqa: E402

from histosynth.training.loop import TrainResult, train  # noqa: E402

STEPS = 12


@dataclass
class RegressionObjective:
    """A deterministic loss (no random draws): two processes must reproduce one process's run exactly."""

    x: torch.Tensor
    y: torch.Tensor

    def num_items(self) -> int:
        return len(self.x)

    def loss(self, model, indices, generator, device):
        prediction = model(self.x[indices].to(device))
        error = prediction - self.y[indices].to(device)
        return (error ** 2).mean(), {"mae": float(error.detach().abs().mean())}


def regression_run(run_dir: Path) -> TrainResult:
    data = torch.Generator().manual_seed(1)
    x = torch.randn(24, 6, generator=data, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    config = tiny_train_config(steps=STEPS, batch_size=8, learning_rate=3e-2, checkpoint_every=100, grad_clip=0.5)
    return train(model, RegressionObjective(x, y), config, run_dir)


def denoiser_objective():
    from diffusers import DDPMScheduler

    from histosynth.models.autoencoder import Autoencoder
    from histosynth.training.latents import encode_dihedral, measure_latent_statistics
    from histosynth.training.objectives import DenoiserLossConfig, DenoiserObjective
    from histosynth.models.conditioning import mask_fractions

    tiles, config = make_tiles(n=8), tiny_denoiser_config()
    torch.manual_seed(0)
    autoencoder = Autoencoder(tiny_autoencoder_config()).eval()
    mean, logvar = encode_dihedral(autoencoder, tiles.images)
    shift, scale = measure_latent_statistics(autoencoder, tiles.images)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type=config.prediction_type)
    return DenoiserObjective(mean, logvar, mask_fractions(tiles.masks, tiles.mask_known, 2, 4), tiles.labels,
                             torch.tensor(shift), scale, config.null_label, scheduler, DenoiserLossConfig())


def denoiser_run(run_dir: Path, on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    from histosynth.models.denoiser import ConditionalDenoiser

    objective = denoiser_objective()
    torch.manual_seed(0)
    model = ConditionalDenoiser(tiny_denoiser_config())
    config = tiny_train_config(steps=STEPS, batch_size=4, checkpoint_every=2, keep_checkpoints=10)
    return train(model, objective, config, run_dir, on_step=on_step)


def autoencoder_run(run_dir: Path) -> TrainResult:
    """An objective that calls ``model.encode``/``model.decode``, not ``model(...)``."""
    from histosynth.models.autoencoder import Autoencoder
    from histosynth.training.objectives import AutoencoderLossConfig, AutoencoderObjective

    torch.manual_seed(0)
    objective = AutoencoderObjective(make_tiles(n=8).images, AutoencoderLossConfig(crop=16))
    config = tiny_train_config(steps=4, batch_size=4, checkpoint_every=100)
    return train(Autoencoder(tiny_autoencoder_config()), objective, config, run_dir)


class Interrupted(Exception):
    pass


def _stop_after_5(step: int, _: dict) -> None:
    if step == 5:  # every rank stops here: checkpoint 4 exists, step 5 is lost
        raise Interrupted


def main(out: Path) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    def dump(name: str, result: TrainResult) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        save_file(weights, str(out / f"{name}_rank{dist.get_rank()}.safetensors"))

    dump("regression", regression_run(out / "regression"))
    dump("autoencoder", autoencoder_run(out / "autoencoder"))
    dump("denoiser", denoiser_run(out / "denoiser"))
    try:
        denoiser_run(out / "resumed", on_step=_stop_after_5)
    except Interrupted:
        pass
    dump("resumed", denoiser_run(out / "resumed"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
