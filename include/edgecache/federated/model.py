"""The model every edge trains: the scorer's weights and intercept as one vector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecache.pipeline.scorer import LinearModel


def to_vector(model: LinearModel) -> np.ndarray:
    """The model's parameters, intercept last, as float64."""
    return np.array([*model.weights, model.intercept], dtype=np.float64)


def from_vector(vector: np.ndarray, features: tuple[str, ...], link: str) -> LinearModel:
    """The LinearModel of a parameter vector made by ``to_vector``."""
    v = np.asarray(vector, dtype=np.float64)
    if v.shape != (len(features) + 1,):
        raise ValueError(f"expected {len(features) + 1} parameters, got shape {v.shape}")
    return LinearModel(tuple(features), tuple(float(w) for w in v[:-1]), float(v[-1]), link)


@dataclass(frozen=True)
class Update:
    """What an edge sends the server: its parameters after local training and how many
    training rows they came from. Nothing else leaves the edge."""

    params: np.ndarray
    count: int

    def __post_init__(self) -> None:
        p = np.asarray(self.params)
        if p.ndim != 1 or p.dtype != np.float64 or not np.isfinite(p).all():
            raise ValueError("params must be a finite 1-d float64 array")
        if self.count < 0:
            raise ValueError(f"count must be non-negative, got {self.count}")


def clip(delta: np.ndarray, bound: float) -> np.ndarray:
    """``delta`` scaled down, if needed, to an L2 norm of at most ``bound`` (the step that
    bounds one edge's influence, so noise can hide it)."""
    if bound <= 0:
        raise ValueError(f"bound must be positive, got {bound}")
    norm = float(np.linalg.norm(delta))
    return delta if norm <= bound else delta * (bound / norm)


def contribution(update: Update, start: np.ndarray, clip_norm: float | None = None) -> np.ndarray:
    """What one edge adds to the round's sum, its weight last.

    FedAvg: count x params and count, so sum / weight is the count-weighted mean.
    DP-FedAvg (``clip_norm`` set): the clipped change from ``start`` and 1, so every edge
    weighs the same and none moves the sum by more than ``clip_norm``.
    """
    if clip_norm is None:
        return np.append(update.count * update.params, float(update.count))
    return np.append(clip(update.params - start, clip_norm), 1.0)
