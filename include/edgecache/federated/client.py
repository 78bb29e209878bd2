"""Client side: an edge trains the shared scorer on its own rows and returns an ``Update``.

Local training minimises the central scorer's objective (``edgecache.pipeline.scorer.fit_logistic``:
weighted mean log-loss + reg / 2 x |weights|^2, intercept free, features unscaled) on the
edge's rows only, by Newton steps from the global parameters. With 17 features the
Hessian is 18 x 18, so a step costs one pass over the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from edgecache.federated.model import Update, contribution
from edgecache.federated.secagg import Client
from edgecache.pipeline.scorer import rank_auc

# What a task sends the server for one edge and one round. Without secure aggregation:
# the parameters and the row count. With it: only the masked contribution (params and
# count stay null). Both ways, the edge's validation figures of the model it was sent.
UPDATE_SCHEMA = (
    "edge_id string, params array<double>, count long, masked array<bigint>, "
    "val_rows long, val_logloss double, val_auc double"
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow


def local_update(
    x: np.ndarray,
    y: np.ndarray,
    init: np.ndarray,
    steps: int,
    reg: float,
    weight: np.ndarray | None = None,
    prox: float = 0.0,
) -> Update:
    """``steps`` Newton steps of L2-regularised logistic regression from ``init``
    (weights then intercept); the update carries the number of rows.

    ``prox`` > 0 adds prox / 2 x |theta - init|^2: fine-tuning that stays near the
    global model instead of forgetting it.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, k = x.shape
    if init.shape != (k + 1,):
        raise ValueError(f"init must have {k + 1} parameters, got shape {init.shape}")
    if steps < 0 or reg < 0 or prox < 0:
        raise ValueError("steps, reg and prox must be non-negative")
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    anchor = np.array(init, dtype=np.float64)
    theta = anchor.copy()
    if n == 0:
        return Update(theta, 0)
    z = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(k + 1, reg)
    penalty[-1] = 0.0  # the intercept is not penalised
    total = w.sum()
    for _ in range(steps):
        p = _sigmoid(z @ theta)
        grad = z.T @ (w * (p - y)) / total + penalty * theta + prox * (theta - anchor)
        hess = (z * (w * p * (1.0 - p))[:, None]).T @ z / total + np.diag(penalty + prox)
        theta = theta - np.linalg.solve(hess + 1e-12 * np.eye(k + 1), grad)
    return Update(theta, n)


def validation(x: np.ndarray, y: np.ndarray, params: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """Weighted log-loss and (unweighted) ROC AUC of ``params`` on held-out rows."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(y)
    if n == 0:
        return {"rows": 0, "logloss": float("nan"), "auc": float("nan")}
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    p = np.clip(_sigmoid(x @ params[:-1] + params[-1]), 1e-12, 1 - 1e-12)
    logloss = float(-(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / w.sum())
    auc = rank_auc(p, y)
    return {"rows": n, "logloss": logloss, "auc": float("nan") if auc is None else auc}


@dataclass(frozen=True)
class SecureRound:
    """Secure aggregation for one round: every chosen edge's X25519 key pair (each edge
    uses only its own private key, inside its own task) and the round number."""

    round_id: int
    private_keys: Mapping[str, bytes] = field(repr=False)
    public_keys: Mapping[str, bytes]


@dataclass(frozen=True)
class LocalPlan:
    """What each edge does with the global parameters in one round."""

    init: np.ndarray
    steps: int
    reg: float
    prox: float = 0.0
    clip_norm: float | None = None  # DP: the edge clips its change before masking
    secure: SecureRound | None = None


def edge_updates(
    rows: DataFrame,
    features: Sequence[str],
    plan: LocalPlan,
    label: str = "label",
    weight: str | None = None,
    holdout: str | None = None,
) -> DataFrame:
    """One update per edge (``UPDATE_SCHEMA``), each computed by a Spark task from that
    edge's rows alone. Rows flagged in the boolean column ``holdout`` are not trained on:
    they measure the model the edge was sent.

    Only the edge id, a fixed-size array, a row count and three validation figures leave a
    task: rows, viewer ids and titles stay in the task that read them.
    """
    cols = list(features)
    start = np.asarray(plan.init, dtype=np.float64)

    def train(pdf: pd.DataFrame) -> pd.DataFrame:
        edge = pdf["edge_id"].iloc[0]
        held = pdf[holdout].to_numpy(dtype=bool) if holdout else np.zeros(len(pdf), dtype=bool)
        w = None if weight is None else pdf[weight].to_numpy()
        x, y = pdf[cols].to_numpy(), pdf[label].to_numpy()
        val = validation(x[held], y[held], start, None if w is None else w[held])
        u = local_update(x[~held], y[~held], start, plan.steps, plan.reg, None if w is None else w[~held], plan.prox)
        params: list[float] | None = u.params.tolist()
        count: int | None = u.count
        masked: list[int] | None = None
        if plan.secure is not None:
            s = plan.secure
            me = Client.from_private_bytes(edge, s.private_keys[edge])
            ring = me.masked(contribution(u, start, plan.clip_norm), s.public_keys, s.round_id)
            params, count, masked = None, None, ring.view(np.int64).tolist()
        return pd.DataFrame(
            {
                "edge_id": [edge],
                "params": [params],
                "count": [count],
                "masked": [masked],
                "val_rows": [val["rows"]],
                "val_logloss": [val["logloss"]],
                "val_auc": [val["auc"]],
            }
        )

    needed = ["edge_id", *cols, label, *([weight] if weight else []), *([holdout] if holdout else [])]
    return rows.select(*needed).groupBy("edge_id").applyInPandas(train, UPDATE_SCHEMA)


def collect_updates(updates: DataFrame) -> list[tuple[str, Update]]:
    """The edges' plain updates, by edge id: what the server receives without secure aggregation."""
    return sorted(
        ((r["edge_id"], Update(np.array(r["params"], dtype=np.float64), r["count"])) for r in updates.collect()),
        key=lambda pair: pair[0],
    )
