"""The model every edge trains: the scorer's weights and intercept as one vector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecache.scorer import LinearModel


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
