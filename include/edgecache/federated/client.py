"""Client side: an edge trains a shared linear model on its own rows and returns an ``Update``.

Two families, one per model the edges share:

- ``logistic`` (the scorer): the central scorer's objective (``edgecache.pipeline.scorer.fit_logistic``:
  weighted mean log-loss + reg / 2 x |weights|^2, intercept free, features unscaled);
- ``poisson`` (the demand model): weighted mean Poisson negative log-likelihood
  (mu - y log mu, with mu = exp(eta)) + the same penalty, with step halving, since a full
  Newton step on exp can overshoot.

Either is minimised on the edge's rows only, by Newton steps from the global parameters.
With 17 features the Hessian is 18 x 18, so a step costs one pass over the rows.
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


FAMILIES = ("logistic", "poisson")
MAX_ETA = 30.0  # exp(30) requests: far beyond any title's day; keeps exp finite on a wild step


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow


def _mean(z: np.ndarray, theta: np.ndarray, family: str) -> np.ndarray:
    """The model's mean at each row: a probability (logistic) or an expected count (poisson)."""
    eta = z @ theta
    return _sigmoid(eta) if family == "logistic" else np.exp(np.minimum(eta, MAX_ETA))


def _poisson_nll(z: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray) -> float:
    eta = np.minimum(z @ theta, MAX_ETA)
    return float((w * (np.exp(eta) - y * eta)).sum() / w.sum())


def local_update(
    x: np.ndarray,
    y: np.ndarray,
    init: np.ndarray,
    steps: int,
    reg: float,
    weight: np.ndarray | None = None,
    prox: float = 0.0,
    family: str = "logistic",
) -> Update:
    """``steps`` Newton steps of L2-regularised logistic (or Poisson) regression from ``init``
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
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    anchor = np.array(init, dtype=np.float64)
    theta = anchor.copy()
    if n == 0:
        return Update(theta, 0)
    z = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(k + 1, reg)
    penalty[-1] = 0.0  # the intercept is not penalised
    total = w.sum()

    def objective(th: np.ndarray) -> float:
        return _poisson_nll(z, y, w, th) + 0.5 * float((penalty * th**2).sum() + prox * ((th - anchor) ** 2).sum())

    for _ in range(steps):
        mu = _mean(z, theta, family)
        curvature = mu * (1.0 - mu) if family == "logistic" else mu
        grad = z.T @ (w * (mu - y)) / total + penalty * theta + prox * (theta - anchor)
        hess = (z * (w * curvature)[:, None]).T @ z / total + np.diag(penalty + prox)
        step = np.linalg.solve(hess + 1e-12 * np.eye(k + 1), grad)
        if family == "poisson":  # halve the step until the objective does not rise
            before, scale = objective(theta), 1.0
            while objective(theta - scale * step) > before and scale > 1e-6:
                scale /= 2
            step = scale * step
        theta = theta - step
    return Update(theta, n)


def validation(
    x: np.ndarray, y: np.ndarray, params: np.ndarray, weight: np.ndarray | None = None, family: str = "logistic"
) -> dict[str, float]:
    """Weighted mean negative log-likelihood ("logloss": the log-loss, or the Poisson one)
    and (unweighted) ROC AUC of ``params`` on held-out rows (for counts: requested or not)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(y)
    if n == 0:
        return {"rows": 0, "logloss": float("nan"), "auc": float("nan")}
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    z = np.hstack([x, np.ones((n, 1))])
    if family == "poisson":
        logloss = _poisson_nll(z, y, w, params)
        auc = rank_auc(_mean(z, params, family), (y > 0).astype(np.float64))
        return {"rows": n, "logloss": logloss, "auc": float("nan") if auc is None else auc}
    p = np.clip(_sigmoid(z @ params), 1e-12, 1 - 1e-12)
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
    family: str = "logistic"  # or "poisson": see local_update


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
        val = validation(x[held], y[held], start, None if w is None else w[held], plan.family)
        u = local_update(
            x[~held], y[~held], start, plan.steps, plan.reg, None if w is None else w[~held], plan.prox, plan.family
        )
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
