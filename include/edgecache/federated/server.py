"""Server-side aggregation: pure functions over the edges' updates."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from edgecache.federated.model import Update, contribution


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
    return cast(np.ndarray, sum(u.count * u.params for u in updates)) / total


def average_of_sums(weighted_sum: np.ndarray, total_count: int) -> np.ndarray:
    """FedAvg from what secure aggregation reveals: the sum of count x params and the
    total count (each edge's own pair stays hidden)."""
    if total_count <= 0:
        raise ValueError(f"total_count must be positive, got {total_count}")
    return np.asarray(weighted_sum, dtype=np.float64) / total_count


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
class Received:
    """What the server has after one round: the sum of the edges' contributions (see
    ``model.contribution``; plain or securely aggregated), the bytes that arrived, and
    each edge's validation figures of the model it was sent."""

    summed: np.ndarray
    update_bytes: int
    validation: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundStats:
    """One round's figures, for the report and the metrics push."""

    round: int
    edges: tuple[str, ...]
    seconds: float
    update_bytes: int  # what the server received: every parameter array and count
    change: float  # L2 norm of the global model's change
    validation: Mapping[str, Mapping[str, float]]  # per edge, of the model sent this round


def plain_sum(updates: Sequence[Update], params: np.ndarray, privacy: Privacy | None = None) -> Received:
    """The round's sum when the server sees each update (no secure aggregation); with
    ``privacy`` the server clips each change itself."""
    clip_norm = None if privacy is None else privacy.clip_norm
    total = cast(np.ndarray, sum(contribution(u, params, clip_norm) for u in updates))
    return Received(total, sum(u.params.nbytes + 8 for u in updates))


def aggregate(params: np.ndarray, summed: np.ndarray, privacy: Privacy | None, rng: np.random.Generator) -> np.ndarray:
    """The next global model from the round's summed contributions (weight last).

    FedAvg: the count-weighted mean of the edges' parameters. DP-FedAvg: the global model
    plus the mean clipped change plus Gaussian noise of std z x C / edges.
    """
    vector, weight = np.asarray(summed[:-1], dtype=np.float64), float(summed[-1])
    if privacy is None:
        return average_of_sums(vector, round(weight))
    if weight < 0.5:
        raise ValueError("no edge contributed to the round")
    noise = rng.normal(0.0, privacy.noise_multiplier * privacy.clip_norm / weight, size=params.shape)
    return params + vector / weight + noise


TrainRound = Callable[[np.ndarray, Sequence[str], int], Received]


def run_rounds(
    train_round: TrainRound,
    init: np.ndarray,
    edges: Sequence[str],
    rounds: int,
    fraction: float = 1.0,
    seed: int = 0,
    privacy: Privacy | None = None,
) -> tuple[np.ndarray, list[RoundStats]]:
    """Federated training: each round picks ``fraction`` of the edges (at least one, by a
    seeded draw), sends them the global parameters, and aggregates what comes back
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
        got = train_round(params, chosen, r)
        new = aggregate(params, got.summed, privacy, rng)
        stats.append(
            RoundStats(
                r,
                chosen,
                round(time.perf_counter() - started, 3),
                got.update_bytes,
                float(np.linalg.norm(new - params)),
                dict(got.validation),
            )
        )
        params = new
    return params, stats
