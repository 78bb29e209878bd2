"""The federated training's settings: no heavy import here, the DAG file reads the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecache.federated.server import Privacy

DEFAULT_DELTA = 1e-5  # DP: the chance the epsilon bound fails; well below 1 / edges


@dataclass(frozen=True)
class FedConfig:
    """The federated training's knobs (DAG params ``fl_*``)."""

    rounds: int = 8
    fraction: float = 1.0  # of the edges, per round
    local_steps: int = 1  # Newton steps per edge per round
    fine_tune_steps: int = 0  # after the rounds, per edge (0: every edge uses the global model)
    epsilon: float = 0.0  # client-level DP budget over all rounds (0: no DP)
    delta: float = DEFAULT_DELTA
    clip_norm: float = 1.0  # DP: bound of one edge's change per round
    secure: bool = False  # pairwise-masked secure aggregation
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or not 0 < self.fraction <= 1 or self.local_steps < 1 or self.fine_tune_steps < 0:
            raise ValueError("rounds and local_steps must be at least 1, fraction in (0, 1], fine_tune_steps >= 0")
        if self.epsilon < 0 or self.clip_norm <= 0 or not 0 < self.delta < 1:
            raise ValueError("epsilon must be >= 0, clip_norm > 0 and delta in (0, 1)")

    def privacy(self) -> Privacy | None:
        """DP-FedAvg's clip and noise for ``epsilon`` over the rounds (None without DP)."""
        if self.epsilon <= 0:
            return None
        from edgecache.federated.privacy import noise_for_epsilon
        from edgecache.federated.server import Privacy

        return Privacy(self.clip_norm, noise_for_epsilon(self.epsilon, self.fraction, self.rounds, self.delta))
