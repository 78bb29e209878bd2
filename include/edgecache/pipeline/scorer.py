"""Linear models, fitted with Spark MLlib or in numpy, applied as plain Spark SQL expressions.

A ``LinearModel`` is a weight per named feature plus an intercept and a link:
``logit`` gives a probability (will the viewer watch this title tomorrow?), ``log`` an
expected count (how many requests will this title get at this edge tomorrow?). It is a
fixed-size set of numbers, so models trained apart can be averaged, and it is applied
with a SQL expression, so scoring needs no Python on the executors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

LINKS = ("logit", "log")
SIGNIFICANT_DIGITS = 6


def rounded(x: float) -> float:
    """``x`` to SIGNIFICANT_DIGITS digits.

    The optimisers sum partial results in the order tasks finish, so two fits of the same
    rows can differ in the last bits; rounding makes a re-run give the same model and so
    the same predictions, far below any difference that changes a ranking on purpose.
    """
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


@dataclass(frozen=True)
class LinearModel:
    features: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    link: str

    def __post_init__(self) -> None:
        if len(self.features) != len(self.weights):
            raise ValueError("one weight per feature")
        if self.link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, got {self.link!r}")
        if not all(math.isfinite(w) for w in (*self.weights, self.intercept)):
            raise ValueError("weights must be finite")

    def linear_sql(self) -> str:
        terms = [f"({w!r}) * `{f}`" for f, w in zip(self.features, self.weights)]
        return " + ".join([repr(self.intercept), *terms])

    def sql(self) -> str:
        """The model's prediction as a Spark SQL expression over the feature columns."""
        eta = self.linear_sql()
        return f"1.0 / (1.0 + exp(-({eta})))" if self.link == "logit" else f"exp({eta})"

    def predict(self, values: Sequence[float]) -> float:
        """The prediction for one row of feature values, in plain Python (for tests and tools)."""
        eta = self.intercept + sum(w * v for w, v in zip(self.weights, values))
        if self.link == "logit":
            return 0.5 * (1.0 + math.tanh(eta / 2))  # the logistic function, without overflow
        return math.exp(eta) if eta < 709.0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features), "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearModel:
        return cls(tuple(d["features"]), tuple(float(w) for w in d["weights"]), float(d["intercept"]), d["link"])


def apply(rows: DataFrame, model: LinearModel, out: str) -> DataFrame:
    """``rows`` with the model's prediction in column ``out``."""
    return rows.selectExpr("*", f"{model.sql()} AS `{out}`")


def _vectors(rows: DataFrame, features: Sequence[str], label: str, weight: str | None) -> DataFrame:
    """The training rows as MLlib wants them, cached in few partitions: every optimiser
    step is a pass over them, and on a small machine the per-task cost dominates."""
    from pyspark.ml.feature import VectorAssembler

    cols = ["features_vec", label] + ([weight] if weight else [])
    vec = VectorAssembler(inputCols=list(features), outputCol="features_vec").transform(rows).select(*cols)
    parts = rows.sparkSession.sparkContext.defaultParallelism
    return vec.coalesce(max(1, parts)).cache()


def _fit(
    estimator: Any, rows: DataFrame, features: Sequence[str], label: str, weight: str | None, link: str
) -> LinearModel:
    """Fit an MLlib linear estimator on ``rows`` and return its (rounded) weights."""
    vec = _vectors(rows, features, label, weight)
    try:
        m = estimator.fit(vec)
    finally:
        vec.unpersist()
    return LinearModel(tuple(features), tuple(rounded(w) for w in m.coefficients), rounded(m.intercept), link)


def fit_logistic(
    rows: DataFrame,
    features: Sequence[str],
    label: str = "label",
    weight: str | None = None,
    reg_param: float = 1e-3,
    max_iter: int = 25,
) -> LinearModel:
    """L2-regularised logistic regression (MLlib, L-BFGS) on unscaled features.

    Minimises the (weighted) mean log-loss + reg_param / 2 * |w|^2, the intercept not
    penalised; no standardisation, so the objective is the plain one edges can share.
    """
    from pyspark.ml.classification import LogisticRegression

    lr = LogisticRegression(  # type: ignore[call-overload]  # the stubs take no **kwargs
        featuresCol="features_vec",
        labelCol=label,
        regParam=reg_param,
        elasticNetParam=0.0,
        standardization=False,
        maxIter=max_iter,
        tol=1e-7,
        family="binomial",
        **({"weightCol": weight} if weight else {}),
    )
    return _fit(lr, rows, features, label, weight, "logit")


@dataclass(frozen=True)
class Fit:
    """A fitted model and how the fit went: the optimiser's iterations, whether it
    converged, and the feature columns it set aside as constant (weight 0)."""

    model: LinearModel
    converged: bool
    iterations: int
    dropped: tuple[str, ...] = ()


MAX_POISSON_ROWS = 500_000  # rows the demand fit reads into the driver; zero counts are sampled beyond it


def fit_poisson(
    rows: DataFrame, features: Sequence[str], label: str = "label", reg_param: float = 1e-3, max_iter: int = 50
) -> LinearModel:
    """L2-regularised Poisson regression with a log link: expected counts (see ``fit_poisson_checked``)."""
    return fit_poisson_checked(rows, features, label, reg_param, max_iter).model


def fit_poisson_checked(
    rows: DataFrame, features: Sequence[str], label: str = "label", reg_param: float = 1e-3, max_iter: int = 50
) -> Fit:
    """Poisson regression fitted by damped Newton steps in the driver, on standardised features.

    Minimises sum(mu - y * eta) / sum(y) + reg_param / 2 * |w_std|^2 over the rows, where
    ``w_std`` are the weights of the standardised features (the intercept not penalised),
    so features on very different scales are penalised alike. A constant column (all zero:
    no releases, no series, one genre) carries no information: it is dropped (weight 0)
    instead of making the system singular. At most ``max_iter`` steps; ``Fit.converged``
    says whether the gradient vanished. Beyond MAX_POISSON_ROWS rows, rows with a zero
    count are sampled by hash and weighted up, which leaves the objective unbiased.
    """
    cols = [*features, label]
    stats = rows.selectExpr("count(*) AS n", f"count_if(`{label}` > 0) AS positives").first()
    assert stats is not None  # an aggregate without groups has one row
    n, positives = int(stats["n"]), int(stats["positives"])
    rate = 1.0
    if n > MAX_POISSON_ROWS and n > positives:
        rate = max(MAX_POISSON_ROWS - positives, 1) / (n - positives)
        keep = f"`{label}` > 0 OR pmod(xxhash64(7, {', '.join(f'`{c}`' for c in cols)}), 1000000) < {rate!r} * 1000000"
        rows = rows.where(keep)
    table = rows.select(*cols).toArrow()
    x = (
        np.column_stack([table.column(f).to_numpy(zero_copy_only=False).astype(np.float64) for f in features])
        if features
        else np.zeros((table.num_rows, 0))
    )
    y = table.column(label).to_numpy(zero_copy_only=False).astype(np.float64)
    wt = np.where(y > 0, 1.0, 1.0 / rate)
    return poisson_newton(x, y, wt, tuple(features), reg_param, max_iter)


def poisson_newton(
    x: np.ndarray, y: np.ndarray, wt: np.ndarray, features: tuple[str, ...], reg_param: float, max_iter: int
) -> Fit:
    """The numpy half of ``fit_poisson_checked``: weighted rows ``x``, counts ``y``."""
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise ValueError("Poisson fit: features and counts must be finite")
    total = float(wt @ y)
    if total <= 0:  # nothing was asked for: no rate to fit
        return Fit(LinearModel(features, (0.0,) * len(features), 0.0, "log"), False, 0, features)
    mean = (wt @ x) / wt.sum() if len(x) else np.zeros(x.shape[1])
    std = np.sqrt(np.maximum((wt @ (x - mean) ** 2) / wt.sum(), 0.0)) if len(x) else np.zeros(x.shape[1])
    live = std > 1e-9 * np.maximum(1.0, np.abs(mean))
    z = np.column_stack([np.ones(len(x)), (x[:, live] - mean[live]) / std[live]])
    penalty = np.full(z.shape[1], reg_param)
    penalty[0] = 0.0

    def objective(b: np.ndarray) -> float:
        eta = np.minimum(z @ b, 50.0)  # exp(50) requests: far beyond any real count, still finite
        return float(wt @ (np.exp(eta) - y * eta)) / total + 0.5 * float(penalty @ b**2)

    b = np.zeros(z.shape[1])
    b[0] = math.log(total / wt.sum())
    value, converged, it = objective(b), False, 0
    for it in range(1, max_iter + 1):
        mu = np.exp(np.minimum(z @ b, 50.0))
        grad = z.T @ (wt * (mu - y)) / total + penalty * b
        if np.abs(grad).max() < 1e-8:
            converged, it = True, it - 1
            break
        hess = (z * (wt * mu)[:, None]).T @ z / total + np.diag(penalty) + 1e-12 * np.eye(len(b))
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:  # halve the step until the objective goes down
            new = b - t * step
            new_value = objective(new)
            if new_value <= value:
                break
            t /= 2
        else:
            break  # no step helps: stuck, not converged
        b, value = new, new_value
    weights = np.zeros(len(features))
    weights[live] = b[1:] / std[live]
    intercept = b[0] - float(weights[live] @ mean[live])
    if not (np.isfinite(weights).all() and math.isfinite(intercept)):
        raise ValueError("Poisson fit diverged to non-finite weights")
    model = LinearModel(features, tuple(rounded(w) for w in weights), rounded(intercept), "log")
    return Fit(model, converged, it, tuple(f for f, keep in zip(features, live) if not keep))


def in_hash_sample(keys: Sequence[str], seed: int, rate: float) -> str:
    """A SQL predicate that keeps about ``rate`` of the rows, chosen by a hash of ``keys``
    and ``seed``: the same rows on every run and every cluster."""
    cols = ", ".join(f"`{k}`" for k in keys)
    return f"pmod(xxhash64({int(seed)}, {cols}), 1000000) < {float(rate)!r} * 1000000"


def negative_sample(rows: DataFrame, max_rows: int, seed: int, keys: Sequence[str], label: str = "label") -> DataFrame:
    """At most about ``max_rows`` rows for training: every positive, a sample of the
    negatives, and a ``weight`` column (1 / sampling rate) that keeps the fit unbiased.

    A row is kept by a hash of its ``keys`` and ``seed``, never by partition-dependent
    randomness, so the same rows give the same sample on any cluster."""
    counts = {r[0]: r[1] for r in rows.groupBy(label).count().collect()}
    positives, negatives = counts.get(1.0, 0), counts.get(0.0, 0)
    rate = min(1.0, max(max_rows - positives, 1) / negatives) if negatives else 1.0
    return rows.sparkSession.sql(
        f"""
        SELECT *, CASE WHEN `{label}` = 1 THEN 1.0 ELSE 1.0 / :rate END AS weight FROM {{rows}}
        WHERE `{label}` = 1 OR :rate >= 1.0
           OR {in_hash_sample(keys, seed, rate)}
        """,
        args={"rate": rate},
        rows=rows,
    )


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC by Mann-Whitney: the chance a positive outranks a negative, ties counting
    half; None if one class is missing."""
    y = np.asarray(labels, dtype=np.float64)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if not (pos and neg):
        return None
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auc(scored: DataFrame, score: str, label: str = "label") -> float | None:
    """Area under the ROC curve of ``score`` against a 0/1 ``label``; None if one class is
    missing. Exact, in the driver: two columns of a training sample (at most a few hundred
    thousand rows) cost less there than Spark ML's evaluator, which took 5 s of a small run."""
    table = scored.select(score, label).toArrow()
    return rank_auc(
        table.column(score).to_numpy(zero_copy_only=False), table.column(label).to_numpy(zero_copy_only=False)
    )
