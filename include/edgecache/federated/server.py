"""Server-side aggregation: pure functions over the edges' updates."""

from __future__ import annotations

from collections.abc import Sequence

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
