"""Edge predictive caching, by layer.

``simulate``    synthetic viewers and their logs;
``pipeline``    the nightly Spark stages, from logs to predictions;
``federated``   the edges' shared training (only model updates leave an edge);
``serving``     the warm into Redis and the real-time delivery path;
``evaluation``  the next day replayed against the predictions and the classic policies;
``ops``         running and watching it on one machine (only the CLI and the DAG import it).

The contracts every layer reads sit at the top: ``settings``, ``schema`` (the log record)
and ``layout`` (where each stage reads and writes). The import rules are in
pyproject.toml and checked by ``make lint``.
"""

from __future__ import annotations

__version__ = "0.1.0"
