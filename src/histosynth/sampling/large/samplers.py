"""Denoising a latent larger than the model's window: random patches, and two baselines.

All three run the same DDIM levels (``steps`` timesteps of the denoiser's schedule) with the same
guided model (:class:`~histosynth.sampling.sampler.GuidedDenoiser`) on ``window`` x ``window``
crops, and report the number of window evaluations they needed (classifier-free guidance doubles
each in the batch, equally for all):

- ``random-patch`` (DiffInfinite): per level, windows centred on random still-lagging pixels until
  every pixel advanced exactly once (:func:`~histosynth.sampling.large.windows.random_patch_level`);
  the windows of a level are independent, so they run in batches. ``greedy-patch`` picks, among
  those centres, a window covering the most lagging pixels; ``offset-grid`` tiles the level with a
  grid shifted by a random offset per level (fewer windows, same claims rule: issue K).
- ``multidiffusion``: per level, every window of a regular grid (stride ``stride``) is stepped and the
  overlapping results are averaged.
- ``sliding-window``: windows in raster order, each denoised through all levels while the pixels
  an earlier window already generated are held to their known values (noised to the level, as in
  RePaint); only new pixels are written.

A run is a sequence of units (levels, or windows for sliding-window). The state after each unit is a
:class:`LargeState`, small enough to checkpoint, so a killed run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from histosynth.sampling.large.windows import (
    EdgeCounts,
    greedy_patch_level,
    grid_windows,
    offset_grid_level,
    random_patch_level,
)
from histosynth.sampling.sampler import GuidedDenoiser, build_scheduler

Method = Literal["random-patch", "greedy-patch", "offset-grid", "sliding-window", "multidiffusion"]
METHODS: tuple[str, ...] = ("random-patch", "greedy-patch", "offset-grid", "sliding-window", "multidiffusion")
#: The methods that cover each level once with windows claiming lagging pixels: how each picks its windows.
LEVEL_PLANS = {"random-patch": random_patch_level, "greedy-patch": greedy_patch_level,
               "offset-grid": offset_grid_level}


@dataclass
class LargeSamplingSettings:
    method: Method = "offset-grid"
    steps: int = 20
    guidance: float = 2.0
    eta: float = 0.0
    stride: int | None = None  # grid baselines; default: half the window
    batch_size: int = 16


@dataclass
class LargeState:
    """Where a large run stands: the latent after ``units_done`` units, and what it cost so far."""

    latent: np.ndarray  # C x h x w float32 (random-patch/multidiffusion: at level units_done)
    units_done: int
    evaluations: int
    edges: EdgeCounts
    known: np.ndarray | None = None  # sliding-window: pixels already generated (clean values in latent)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"latent": self.latent, "units_done": np.array(self.units_done), "evaluations": np.array(self.evaluations),
               "edge_rows": self.edges.rows, "edge_cols": self.edges.cols}
        if self.known is not None:
            out["known"] = self.known
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LargeState:
        return cls(np.asarray(arrays["latent"], dtype=np.float32), int(arrays["units_done"]), int(arrays["evaluations"]),
                   EdgeCounts(np.asarray(arrays["edge_rows"]), np.asarray(arrays["edge_cols"])),
                   np.asarray(arrays["known"]) if "known" in arrays else None)


def _noise(shape: tuple[int, ...], seed: int, *stream: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0]))
    return torch.randn(shape, generator=generator).numpy()


class LargeLatentSampler:
    """Sample a ``C x h x w`` latent with a denoiser whose window is ``denoiser.config.latent_size``."""

    def __init__(self, denoiser: torch.nn.Module, settings: LargeSamplingSettings, device: str | torch.device = "cpu"):
        self.denoiser = denoiser.to(device).eval()
        self.settings = settings
        self.device = torch.device(device)
        self.config = denoiser.config
        self.window = self.config.latent_size
        self.stride = settings.stride or max(1, self.window // 2)
        self.scheduler = build_scheduler(self.config, "ddim")
        self.scheduler.set_timesteps(settings.steps)
        self.guided = GuidedDenoiser(self.denoiser, settings.guidance)
        self._initial: tuple[tuple, np.ndarray] | None = None  # (shape, seed) -> the run's initial noise

    def _initial_noise(self, shape: tuple[int, ...], seed: int) -> np.ndarray:
        """The run's starting noise, drawn once (sliding-window needs its crops at every window)."""
        if self._initial is None or self._initial[0] != (shape, seed):
            self._initial = ((shape, seed), _noise(shape, seed, 0).astype(np.float32))
        return self._initial[1]

    def initial_state(self, height: int, width: int, seed: int) -> LargeState:
        if min(height, width) < self.window:
            raise ValueError(f"the latent ({height}x{width}) is smaller than the model window ({self.window})")
        latent = self._initial_noise((self.config.latent_channels, height, width), seed).copy()
        known = np.zeros((height, width), dtype=bool) if self.settings.method == "sliding-window" else None
        return LargeState(latent, 0, 0, EdgeCounts.empty(height, width), known)

    def total_units(self, height: int, width: int) -> int:
        if self.settings.method == "sliding-window":
            return len(grid_windows(height, width, self.window, self.stride))
        return self.settings.steps

    def run(self, state: LargeState, label: int, conditions: np.ndarray, seed: int,
            on_unit: Callable[[LargeState], None] | None = None,
            on_windows: Callable[[int], None] | None = None) -> LargeState:
        """Advance ``state`` to the end; ``conditions`` is K x h x w (K may be 0); returns the clean latent's state."""
        _, height, width = state.latent.shape
        unit = {"multidiffusion": self._multidiffusion_level,
                "sliding-window": self._sliding_window}.get(self.settings.method, self._random_patch_level)
        for index in range(state.units_done, self.total_units(height, width)):
            state = unit(state, index, label, conditions, seed, on_windows)
            if on_unit is not None:
                on_unit(state)
        return state

    # -- one batched, guided DDIM step on crops -------------------------------------------------
    def _step_windows(self, source: np.ndarray, windows: list[tuple[int, int]], level: int, label: int,
                      conditions: np.ndarray, noise: np.ndarray | None, on_windows) -> list[np.ndarray]:
        t = self.scheduler.timesteps[level]
        size, results = self.window, []
        for start in range(0, len(windows), self.settings.batch_size):
            chunk = windows[start:start + self.settings.batch_size]
            x = torch.from_numpy(np.stack([source[:, y:y + size, x0:x0 + size] for y, x0 in chunk])).to(self.device)
            cond = torch.from_numpy(np.stack([conditions[:, y:y + size, x0:x0 + size] for y, x0 in chunk]))
            labels = torch.full((len(chunk),), label, dtype=torch.long, device=self.device)
            with torch.inference_mode():
                out = self.guided(x, t.to(self.device), labels, cond.to(self.device))
                variance = None
                if self.settings.eta > 0 and noise is not None:
                    variance = torch.from_numpy(np.stack([noise[:, y:y + size, x0:x0 + size] for y, x0 in chunk]))
                    variance = variance.to(self.device)
                step = self.scheduler.step(out, t, x, eta=self.settings.eta, variance_noise=variance).prev_sample
            results.extend(step.float().cpu().numpy())
            if on_windows is not None:
                on_windows(len(chunk))
        return results

    def _level_noise(self, shape: tuple[int, ...], seed: int, level: int) -> np.ndarray | None:
        return _noise(shape, seed, 1, level) if self.settings.eta > 0 else None

    def _random_patch_level(self, state: LargeState, level: int, label: int, conditions: np.ndarray, seed: int,
                            on_windows) -> LargeState:
        _, height, width = state.latent.shape
        plan = LEVEL_PLANS[self.settings.method](height, width, self.window, np.random.default_rng([seed, 2, level]))
        noise = self._level_noise(state.latent.shape, seed, level)
        stepped = self._step_windows(state.latent, plan.windows, level, label, conditions, noise, on_windows)
        latent, size = state.latent.copy(), self.window
        for (y, x), claim, values in zip(plan.windows, plan.claims, stepped):
            region = latent[:, y:y + size, x:x + size]
            region[:, claim] = values[:, claim]
        state.edges.add(plan.windows, size)
        return LargeState(latent, level + 1, state.evaluations + len(plan.windows), state.edges)

    def _multidiffusion_level(self, state: LargeState, level: int, label: int, conditions: np.ndarray, seed: int,
                              on_windows) -> LargeState:
        _, height, width = state.latent.shape
        windows, size = grid_windows(height, width, self.window, self.stride), self.window
        noise = self._level_noise(state.latent.shape, seed, level)
        stepped = self._step_windows(state.latent, windows, level, label, conditions, noise, on_windows)
        total = np.zeros_like(state.latent)
        count = np.zeros((height, width), dtype=np.float32)
        for (y, x), values in zip(windows, stepped):
            total[:, y:y + size, x:x + size] += values
            count[y:y + size, x:x + size] += 1
        state.edges.add(windows, size)
        return LargeState(total / count, level + 1, state.evaluations + len(windows), state.edges)

    def _sliding_window(self, state: LargeState, index: int, label: int, conditions: np.ndarray, seed: int,
                        on_windows) -> LargeState:
        _, height, width = state.latent.shape
        size = self.window
        y, x = grid_windows(height, width, size, self.stride)[index]
        initial = self._initial_noise(state.latent.shape, seed)[:, y:y + size, x:x + size]
        known = state.known[y:y + size, x:x + size]
        clean = torch.from_numpy(state.latent[:, y:y + size, x:x + size].copy())
        current = initial[None].copy()
        alphas = self.scheduler.alphas_cumprod
        for level, t in enumerate(self.scheduler.timesteps):
            if known.any():  # hold generated pixels at their clean value, noised to this level
                a = float(alphas[int(t)])
                held = (a ** 0.5) * clean.numpy() + ((1 - a) ** 0.5) * initial
                current[0][:, known] = held[:, known]
            noise = self._level_noise((self.config.latent_channels, size, size), seed + 7919 * (index + 1), level)
            current = np.stack(self._step_windows(current[0], [(0, 0)], level, label,
                                                  conditions[:, y:y + size, x:x + size], noise, on_windows))
        latent, known_all = state.latent, state.known.copy()
        new = ~known
        latent[:, y:y + size, x:x + size][:, new] = current[0][:, new]
        known_all[y:y + size, x:x + size] = True
        state.edges.add([(y, x)], size, times=self.settings.steps)
        return LargeState(latent, index + 1, state.evaluations + self.settings.steps, state.edges, known_all)
