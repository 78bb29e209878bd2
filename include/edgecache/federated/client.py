"""Client side: an edge trains the shared scorer on its own rows and returns an ``Update``.

Local training minimises the central scorer's objective (``edgecache.scorer.fit_logistic``:
weighted mean log-loss + reg / 2 x |weights|^2, intercept free, features unscaled) on the
edge's rows only, by Newton steps from the global parameters. With 17 features the
Hessian is 18 x 18, so a step costs one pass over the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from edgecache.federated.model import Update

UPDATE_SCHEMA = "edge_id string, params array<double>, count long"


def local_update(x: np.ndarray, y: np.ndarray, init: np.ndarray, steps: int, reg: float,
                 weight: np.ndarray | None = None) -> Update:
    """``steps`` Newton steps of L2-regularised logistic regression from ``init``
    (weights then intercept); the update carries the number of rows."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, k = x.shape
    if init.shape != (k + 1,):
        raise ValueError(f"init must have {k + 1} parameters, got shape {init.shape}")
    if steps < 0 or reg < 0:
        raise ValueError("steps and reg must be non-negative")
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    theta = np.array(init, dtype=np.float64)
    if n == 0:
        return Update(theta, 0)
    z = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(k + 1, reg)
    penalty[-1] = 0.0  # the intercept is not penalised
    total = w.sum()
    for _ in range(steps):
        p = 0.5 * (1.0 + np.tanh(0.5 * (z @ theta)))  # the logistic function, without overflow
        grad = z.T @ (w * (p - y)) / total + penalty * theta
        hess = (z * (w * p * (1.0 - p))[:, None]).T @ z / total + np.diag(penalty)
        theta = theta - np.linalg.solve(hess + 1e-12 * np.eye(k + 1), grad)
    return Update(theta, n)


def edge_updates(rows: DataFrame, features: Sequence[str], init: np.ndarray, steps: int, reg: float,
                 label: str = "label", weight: str | None = None) -> DataFrame:
    """One local update per edge (``UPDATE_SCHEMA``), each computed by a Spark task from
    that edge's rows alone.

    Only the edge id, a fixed-size parameter array and a row count leave a task: rows,
    viewer ids and titles stay in the task that read them.
    """
    cols = list(features)
    start = np.asarray(init, dtype=np.float64)

    def train(pdf: pd.DataFrame) -> pd.DataFrame:
        u = local_update(pdf[cols].to_numpy(), pdf[label].to_numpy(), start, steps, reg,
                         None if weight is None else pdf[weight].to_numpy())
        return pd.DataFrame({"edge_id": [pdf["edge_id"].iloc[0]], "params": [u.params.tolist()], "count": [u.count]})

    needed = ["edge_id", *cols, label, *([weight] if weight else [])]
    return rows.select(*needed).groupBy("edge_id").applyInPandas(train, UPDATE_SCHEMA)


def collect_updates(updates: DataFrame) -> list[tuple[str, Update]]:
    """The edges' updates, by edge id: what the server receives."""
    return sorted(((r["edge_id"], Update(np.array(r["params"], dtype=np.float64), r["count"]))
                   for r in updates.collect()), key=lambda pair: pair[0])
