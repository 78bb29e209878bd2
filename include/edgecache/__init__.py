"""Edge predictive caching: workload, features, predictions, cache warming and metrics."""

from __future__ import annotations

__version__ = "0.1.0"
