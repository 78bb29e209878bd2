"""The federated training's settings: no heavy import here, the DAG file reads the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgecache.federated.privacy import DEFAULT_DELTA, noise_for_epsilon  # light: dp_accounting loads on use

if TYPE_CHECKING:
    from edgecache.federated.server import Privacy


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
    demand: bool = False  # the demand model federated too (else fitted centrally)
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
        from edgecache.federated.server import Privacy

        return Privacy(self.clip_norm, noise_for_epsilon(self.epsilon, self.fraction, self.rounds, self.delta))


@dataclass(frozen=True)
class Knob:
    """One FedConfig field as the user sets it: the DAG param ``fl_<field>`` and the predict
    job's flag ``--fl-<field>``, both built from this one definition."""

    field: str
    kind: str  # JSON Schema type: "integer", "number" or "boolean"
    help: str
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None

    @property
    def name(self) -> str:
        return f"fl_{self.field}"

    @property
    def flag(self) -> str:
        return f"--fl-{self.field.replace('_', '-')}"

    @property
    def default(self) -> Any:
        return getattr(FedConfig(), self.field)

    def bounds(self) -> dict[str, float]:
        """The bounds as JSON Schema keywords (for an Airflow Param)."""
        named = {"minimum": self.minimum, "exclusiveMinimum": self.exclusive_minimum, "maximum": self.maximum}
        return {k: v for k, v in named.items() if v is not None}


# The settings a run may change (delta and seed stay fixed); FedConfig checks them again.
KNOBS = (
    Knob("rounds", "integer", "federated rounds", minimum=1),
    Knob("fraction", "number", "share of the edges that train in each round", exclusive_minimum=0, maximum=1),
    Knob("local_steps", "integer", "local epochs: Newton steps per edge per round", minimum=1),
    Knob("fine_tune_steps", "integer", "local fine-tuning steps per edge after the rounds (0: off)", minimum=0),
    Knob(
        "epsilon",
        "number",
        "differential privacy budget of a night (0: off): client-level over the rounds; with fl_demand, "
        "shared with the per-title totals, which are DP for one viewer",
        minimum=0,
    ),
    Knob("clip_norm", "number", "differential privacy: bound of one edge's change per round", exclusive_minimum=0),
    Knob("secure", "boolean", "secure aggregation: the server learns only the sum of the updates"),
    Knob(
        "demand",
        "boolean",
        "the demand model federated too, with the same settings (off: fitted centrally from every edge's "
        "per-title counts); with DP, the two models share the budget",
    ),
)
