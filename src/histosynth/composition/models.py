"""Light regressors from spot embeddings to cell-type abundances.

- ``ridge``: standardised embeddings -> multi-output ridge (alpha by leave-one-out over a grid).
- ``mlp``: one hidden layer; softmax outputs for proportions (rows sum to 1), softplus for raw
  abundances (non-negative); MSE with each type weighted by 1/its variance so rare types count.
- ``neighbourhood``: the same MLP on ``[x_i, mean of x_j over spots adjacent to i]`` (Hist2Cell's
  graph idea, one hop of mean aggregation): adjacent = same section, within ``neighbour_radius``
  times the section's median nearest-neighbour spacing.

Every model is deterministic given ``seed`` and leaves the global torch RNG untouched.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from histosynth.errors import InputError

MODEL_KINDS = ("ridge", "mlp", "neighbourhood")


class RegressorSettings(BaseModel):
    """Hyper-parameters shared by the models (fixed, not tuned per data set)."""

    hidden: int = Field(256, ge=1)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0)
    balance_types: bool = True
    seed: int = 0
    ridge_alphas: tuple[float, ...] = (1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
    neighbour_radius: float = Field(1.5, gt=1.0)


def parse_kinds(text: str) -> list[str]:
    """``'mlp,ridge'`` -> validated model kinds (``all`` = every kind)."""
    kinds = list(MODEL_KINDS) if text.strip() == "all" else [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in MODEL_KINDS]
    if unknown or not kinds:
        raise InputError(f"unknown model {', '.join(unknown) or '(none)'}; choose from {', '.join(MODEL_KINDS)} or all")
    return list(dict.fromkeys(kinds))


def neighbour_matrix(coords: np.ndarray, sections: np.ndarray, radius: float = 1.5) -> Any:
    """Row-normalised sparse adjacency (N, N): spots of one section within ``radius`` x its median spacing.

    A spot without neighbours is its own neighbour, so its aggregated feature is its own.
    """
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for section in np.unique(sections):
        index = np.flatnonzero(sections == section)
        pairs = np.zeros((0, 2), np.int64)
        if len(index) > 1:
            tree = cKDTree(coords[index])
            spacing = float(np.median(tree.query(coords[index], k=2)[0][:, 1]))
            if spacing > 0:
                pairs = tree.query_pairs(radius * spacing, output_type="ndarray")
        both = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else pairs
        alone = np.setdiff1d(np.arange(len(index)), both[:, 0]) if len(both) else np.arange(len(index))
        rows += [index[both[:, 0]], index[alone]]
        cols += [index[both[:, 1]], index[alone]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    adjacency = csr_matrix((np.ones(len(r)), (r, c)), shape=(len(coords), len(coords)))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return csr_matrix(adjacency.multiply(1.0 / degree[:, None]))


def model_inputs(kind: str, features: np.ndarray, neighbours: Any | None) -> np.ndarray:
    """What a model of ``kind`` sees: the embedding, plus the neighbours' mean for ``neighbourhood``."""
    if kind != "neighbourhood":
        return features
    if neighbours is None:
        raise InputError("the neighbourhood model needs spot coordinates (to find adjacent spots)")
    return np.hstack([features, neighbours @ features])


def _finish(pred: np.ndarray, normalised: bool) -> np.ndarray:
    """Non-negative outputs; rows renormalised to proportions (uniform when all zero)."""
    pred = np.clip(pred, 0.0, None)
    if not normalised:
        return pred
    sums = pred.sum(axis=1, keepdims=True)
    uniform = np.full_like(pred, 1.0 / max(pred.shape[1], 1))
    return np.where(sums > 0, pred / np.where(sums > 0, sums, 1.0), uniform)


class RidgeRegressor:
    """Standardised inputs -> ridge (one alpha for all types, picked by efficient leave-one-out)."""

    kind = "ridge"

    def __init__(self, settings: RegressorSettings, normalised: bool) -> None:
        self.settings, self.normalised = settings, normalised
        self.state: dict[str, torch.Tensor] = {}

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeRegressor:
        from sklearn.linear_model import RidgeCV

        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        ridge = RidgeCV(alphas=list(self.settings.ridge_alphas)).fit((x - mean) / scale, y)
        self.state = {"x_mean": torch.from_numpy(mean), "x_scale": torch.from_numpy(scale),
                      "coef": torch.from_numpy(np.atleast_2d(ridge.coef_)),
                      "intercept": torch.from_numpy(np.atleast_1d(ridge.intercept_)),
                      "alpha": torch.tensor([float(ridge.alpha_)], dtype=torch.float64)}
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        s = {k: v.double().numpy() for k, v in self.state.items()}
        return _finish((x - s["x_mean"]) / s["x_scale"] @ s["coef"].T + s["intercept"], self.normalised)


class _Net(nn.Module):
    def __init__(self, dim: int, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MLPRegressor:
    """Standardised inputs -> one hidden layer -> softmax (proportions) or softplus (raw abundances)."""

    kind = "mlp"

    def __init__(self, settings: RegressorSettings, normalised: bool) -> None:
        self.settings, self.normalised = settings, normalised
        self.net: _Net | None = None
        self.buffers: dict[str, torch.Tensor] = {}

    def _output(self, logits: torch.Tensor) -> torch.Tensor:
        if self.normalised:
            return torch.softmax(logits, dim=1)
        return nn.functional.softplus(logits) * self.buffers["y_scale"].float()

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLPRegressor:
        s = self.settings
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        y_scale = np.ones(y.shape[1]) if self.normalised else np.maximum(y.mean(axis=0), 1e-12)
        variance = np.maximum((y / y_scale).var(axis=0), 1e-8) if s.balance_types else np.ones(y.shape[1])
        weights = (1.0 / variance) / np.mean(1.0 / variance)
        self.buffers = {"x_mean": torch.from_numpy(mean), "x_scale": torch.from_numpy(scale),
                        "y_scale": torch.from_numpy(y_scale)}
        xt = torch.from_numpy((x - mean) / scale).float()
        yt = torch.from_numpy(y).float()
        wt = torch.from_numpy(weights).float()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            net = _Net(x.shape[1], s.hidden, y.shape[1], s.dropout)
            optimiser = torch.optim.AdamW(net.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
            per_epoch = -(-len(xt) // s.batch_size)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=s.epochs * per_epoch)
            order = torch.Generator().manual_seed(s.seed)
            net.train()
            self.net = net
            for _ in range(s.epochs):
                for batch in torch.randperm(len(xt), generator=order).split(s.batch_size):
                    scaled = self._output(net(xt[batch])) / self.buffers["y_scale"].float()
                    loss = (((scaled - yt[batch] / self.buffers["y_scale"].float()) ** 2) * wt).mean()
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    schedule.step()
        net.eval()
        return self

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.net is not None, "fit or load the model first"
        b = {k: v.double().numpy() for k, v in self.buffers.items()}
        out = self._output(self.net(torch.from_numpy((x - b["x_mean"]) / b["x_scale"]).float()))
        return _finish(out.double().numpy(), self.normalised)

    @property
    def state(self) -> dict[str, torch.Tensor]:
        assert self.net is not None
        return {**{f"net.{k}": v for k, v in self.net.state_dict().items()}, **self.buffers}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        dim, n_out = state["net.layers.0.weight"].shape[1], state["net.layers.3.weight"].shape[0]
        self.net = _Net(dim, self.settings.hidden, n_out, self.settings.dropout)
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.net.eval()
        self.buffers = {k: v for k, v in state.items() if not k.startswith("net.")}


Regressor = RidgeRegressor | MLPRegressor


def build_regressor(kind: str, settings: RegressorSettings, normalised: bool) -> Regressor:
    """An unfitted model of ``kind`` (``neighbourhood`` is an MLP on neighbourhood inputs)."""
    if kind not in MODEL_KINDS:
        raise InputError(f"unknown model {kind!r}; choose from {', '.join(MODEL_KINDS)}")
    return RidgeRegressor(settings, normalised) if kind == "ridge" else MLPRegressor(settings, normalised)


def fit_model(kind: str, features: np.ndarray, targets: np.ndarray, neighbours: Any | None,
              settings: RegressorSettings, normalised: bool) -> tuple[Regressor, float]:
    """Fit one model; returns it and its fit time in CPU seconds of this process (input assembly included).

    CPU time, not wall time: it does not grow when other jobs share the machine (with one thread it
    equals the wall time on an idle core; with several threads it is their sum).
    """
    start = time.process_time()
    model = build_regressor(kind, settings, normalised).fit(model_inputs(kind, features, neighbours), targets)
    return model, time.process_time() - start


def predict_model(kind: str, model: Regressor, features: np.ndarray, neighbours: Any | None) -> np.ndarray:
    """Predictions (N, T) of a fitted model for spots with ``features`` (and their adjacency)."""
    return model.predict(model_inputs(kind, features, neighbours))


def model_state(model: Regressor) -> dict[str, torch.Tensor]:
    """Tensors that restore ``model`` (for safetensors)."""
    return dict(model.state)


def load_regressor(kind: str, state: dict[str, torch.Tensor], settings: RegressorSettings,
                   normalised: bool) -> Regressor:
    """A fitted model of ``kind`` from :func:`model_state` tensors."""
    model = build_regressor(kind, settings, normalised)
    if isinstance(model, RidgeRegressor):
        model.state = dict(state)
    else:
        model.load_state(state)
    return model
