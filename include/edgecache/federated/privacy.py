"""The privacy budget of DP-FedAvg, from Google's dp-accounting (Renyi DP accountant).

Each round is a Gaussian mechanism on the clipped, averaged edge changes with noise
multiplier z. A round that samples a fraction q < 1 of the edges is accounted as Poisson
sampling with rate q (the rounds here draw a fixed number of edges, for which this is
the usual approximation). The guarantee is client-level: it covers everything one edge
contributes, so it protects a whole edge's logs, not just one viewer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dp_accounting

# dp_accounting (and the SciPy it loads) is imported where it is used: it took 1.8 s of
# every predict job's start, also for the runs without DP.

# RDP orders whose series do not converge are skipped with a warning each; the bound
# from the other orders still holds, so the warnings are noise in the job's log.
logging.getLogger("absl").setLevel(logging.ERROR)

DEFAULT_DELTA = 1e-5  # the chance the epsilon bound fails; well below 1 / edges


def _event(noise_multiplier: float, fraction: float, rounds: int) -> dp_accounting.DpEvent:
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    one = gaussian if fraction >= 1.0 else dp_accounting.PoissonSampledDpEvent(fraction, gaussian)
    return dp_accounting.SelfComposedDpEvent(one, rounds)


def epsilon_spent(noise_multiplier: float, fraction: float, rounds: int, delta: float = DEFAULT_DELTA) -> float:
    """The epsilon at ``delta`` that ``rounds`` rounds of DP-FedAvg spend."""
    if noise_multiplier <= 0:
        return float("inf")
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(_event(noise_multiplier, fraction, rounds))
    return float(accountant.get_epsilon(delta))


def noise_for_epsilon(epsilon: float, fraction: float, rounds: int, delta: float = DEFAULT_DELTA) -> float:
    """The smallest noise multiplier (to 0.1 %) whose ``rounds`` rounds spend at most ``epsilon``."""
    if epsilon <= 0 or rounds < 1:
        raise ValueError("epsilon must be positive and rounds at least 1")
    import dp_accounting
    from dp_accounting import rdp

    return float(
        dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            lambda z: _event(z, fraction, rounds),
            epsilon,
            delta,
            dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
            tol=1e-3,
        )
    )
