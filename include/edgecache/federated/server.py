"""Server-side aggregation: pure functions over the edges' updates."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgecache.federated.model import Update


def fedavg(updates: Sequence[Update]) -> np.ndarray:
    """Federated averaging: the edges' parameters weighted by their sample counts."""
    if not updates:
        raise ValueError("no updates to aggregate")
    total = sum(u.count for u in updates)
    if total == 0:
        raise ValueError("every update has a zero sample count")
    shapes = {u.params.shape for u in updates}
    if len(shapes) != 1:
        raise ValueError(f"updates differ in shape: {sorted(shapes)}")
    return sum(u.count * u.params for u in updates) / total


def average_of_sums(weighted_sum: np.ndarray, total_count: int) -> np.ndarray:
    """FedAvg from what secure aggregation reveals: the sum of count x params and the
    total count (each edge's own pair stays hidden)."""
    if total_count <= 0:
        raise ValueError(f"total_count must be positive, got {total_count}")
    return np.asarray(weighted_sum, dtype=np.float64) / total_count


def clip(delta: np.ndarray, bound: float) -> np.ndarray:
    """``delta`` scaled down, if needed, to an L2 norm of at most ``bound`` (the step that
    bounds one edge's influence, so noise can hide it)."""
    if bound <= 0:
        raise ValueError(f"bound must be positive, got {bound}")
    norm = float(np.linalg.norm(delta))
    return delta if norm <= bound else delta * (bound / norm)


@dataclass(frozen=True)
class Privacy:
    """Client-level differential privacy (DP-FedAvg): each edge's change is clipped to
    ``clip_norm``; the server averages the changes with equal weights and adds Gaussian
    noise of standard deviation noise_multiplier x clip_norm / edges in the round."""

    clip_norm: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if self.clip_norm <= 0 or self.noise_multiplier < 0:
            raise ValueError("clip_norm must be positive and noise_multiplier non-negative")


@dataclass(frozen=True)
class RoundStats:
    """One round's figures, for the metrics push."""

    round: int
    edges: tuple[str, ...]
    seconds: float
    update_bytes: int  # what the server received: every parameter array and count
    change: float  # L2 norm of the global model's change


TrainRound = Callable[[np.ndarray, Sequence[str]], Sequence[tuple[str, Update]]]


def run_rounds(train_round: TrainRound, init: np.ndarray, edges: Sequence[str], rounds: int, fraction: float = 1.0,
               seed: int = 0, privacy: Privacy | None = None) -> tuple[np.ndarray, list[RoundStats]]:
    """Federated training: each round picks ``fraction`` of the edges (at least one, by a
    seeded draw), sends them the global parameters, and aggregates what they return
    (FedAvg by sample count; with ``privacy``, DP-FedAvg)."""
    if rounds < 0 or not 0 < fraction <= 1 or not edges:
        raise ValueError("rounds must be non-negative, fraction in (0, 1] and edges non-empty")
    rng = np.random.default_rng(seed)
    params = np.asarray(init, dtype=np.float64)
    stats = []
    for r in range(1, rounds + 1):
        started = time.perf_counter()
        k = max(1, math.ceil(fraction * len(edges)))
        chosen = tuple(sorted(rng.choice(sorted(edges), size=k, replace=False).tolist()))
        updates = [u for _, u in train_round(params, chosen)]
        if privacy is None:
            new = fedavg(updates)
        else:
            deltas = [clip(u.params - params, privacy.clip_norm) for u in updates]
            noise = rng.normal(0.0, privacy.noise_multiplier * privacy.clip_norm / len(deltas), size=params.shape)
            new = params + sum(deltas) / len(deltas) + noise
        stats.append(RoundStats(r, chosen, round(time.perf_counter() - started, 3),
                                sum(u.params.nbytes + 8 for u in updates), float(np.linalg.norm(new - params))))
        params = new
    return params, stats
