"""Training a shared linear model three ways, on the same labelled rows: the scorer (logistic,
on the candidate rows) or the demand model (Poisson, on the (edge, title) rows):

- ``federated``: rounds of local Newton steps at each edge and FedAvg at the server
  (optionally DP-FedAvg, secure aggregation and a local fine-tuning step per edge);
- ``local``: each edge alone, from scratch, on its own rows (the no-sharing baseline);
- ``central`` lives in ``edgecache.pipeline.scorer.fit_logistic``: all rows pooled in one place.

The rows' ``edge_id`` says which edge holds them; a Spark task per edge reads only its
own, and the driver (the server) sees what ``client.UPDATE_SCHEMA`` allows and no more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from edgecache.federated.client import LocalPlan, SecureRound, collect_updates, edge_updates
from edgecache.federated.config import FedConfig
from edgecache.federated.model import Update, from_vector
from edgecache.federated.privacy import epsilon_spent
from edgecache.federated.secagg import Client, unmask_sum
from edgecache.federated.server import Privacy, Received, RoundStats, plain_sum, run_rounds
from edgecache.pipeline.scorer import LinearModel, in_hash_sample, rounded

HOLDOUT = "holdout"
HOLDOUT_RATE = 0.1  # viewers whose rows each edge keeps back to validate the model it is sent
# How far fine-tuning may pull an edge's model from the global one (the proximal term's
# strength, on the same scale as the mean log-loss).
FINE_TUNE_PROX = 0.01


def with_holdout(rows: DataFrame, seed: int = 0, keys: Sequence[str] = ("user_id",)) -> DataFrame:
    """``rows`` with a boolean ``holdout`` column: about HOLDOUT_RATE of the ``keys`` (the
    viewers, or the titles for demand rows), by hash."""
    return rows.withColumn(HOLDOUT, F.expr(in_hash_sample(list(keys), seed + 7, HOLDOUT_RATE)))


LINK = {"logistic": "logit", "poisson": "log"}


def _received(
    frame: DataFrame, params: np.ndarray, privacy: Privacy | None, clients: Mapping[str, Client] | None, round_id: int
) -> Received:
    """The server's side of a round: sum what arrived. Under secure aggregation (``clients``:
    the round's key holders) the sum is unmasked; for a chosen edge that sent nothing, the
    survivors reveal their pair seeds with it, so its dangling masks can be removed."""
    got = frame.collect()
    if not got:
        raise ValueError("no chosen edge had training rows")
    validation = {r["edge_id"]: {"rows": r["val_rows"], "logloss": r["val_logloss"], "auc": r["val_auc"]} for r in got}
    if clients is not None:
        masked = {r["edge_id"]: np.array(r["masked"], dtype=np.int64).view(np.uint64) for r in got}
        revealed = {
            (s, d): clients[s].pair_seed(d, clients[d].public_key(), round_id)
            for s in masked
            for d in clients
            if d not in masked
        }
        return Received(unmask_sum(masked, revealed), sum(m.nbytes for m in masked.values()), validation)
    updates = [Update(np.array(r["params"], dtype=np.float64), r["count"]) for r in got]
    return replace(plain_sum(updates, params, privacy), validation=validation)


def train_federated(
    rows: DataFrame,
    features: Sequence[str],
    config: FedConfig,
    reg: float,
    label: str = "label",
    weight: str | None = "weight",
    family: str = "logistic",
    holdout_keys: Sequence[str] = ("user_id",),
) -> tuple[LinearModel, dict[str, LinearModel], dict]:
    """The global model, each edge's fine-tuned model (empty without fine-tuning) and a
    report: per round its edges, seconds, bytes received, model change and per-edge
    validation; with DP, the noise and the epsilon spent."""
    rows = with_holdout(rows, config.seed, holdout_keys).cache()
    edges = sorted(r["edge_id"] for r in rows.select("edge_id").distinct().collect())
    privacy = config.privacy()
    clip_norm = None if privacy is None else privacy.clip_norm

    def train_round(params: np.ndarray, chosen: Sequence[str], round_id: int) -> Received:
        secure, clients = None, None
        if config.secure:
            # Each edge makes a fresh key pair per round; only public keys go round. (The
            # simulation makes them here and hands each edge's task its own private key.)
            clients = {e: Client(e) for e in chosen}
            secure = SecureRound(
                round_id,
                {e: c.private_bytes() for e, c in clients.items()},
                {e: c.public_key() for e, c in clients.items()},
            )
        plan = LocalPlan(params, config.local_steps, reg, clip_norm=clip_norm, secure=secure, family=family)
        frame = edge_updates(rows.where(F.col("edge_id").isin(list(chosen))), features, plan, label, weight, HOLDOUT)
        return _received(frame, params, privacy, clients, round_id)

    init = np.zeros(len(features) + 1)
    params, stats = run_rounds(train_round, init, edges, config.rounds, config.fraction, config.seed, privacy)
    model = _model(params, features, LINK[family])
    tuned: dict[str, LinearModel] = {}
    if config.fine_tune_steps:
        plan = LocalPlan(params, config.fine_tune_steps, reg, prox=FINE_TUNE_PROX, family=family)
        tuned = {
            e: _model(u.params, features, LINK[family])
            for e, u in collect_updates(edge_updates(rows.where(~F.col(HOLDOUT)), features, plan, label, weight))
        }
    rows.unpersist()
    records = [round_record(s) for s in stats]
    report = {
        "family": family,
        "config": asdict(config),
        "edges": edges,
        "noise_multiplier": None if privacy is None else privacy.noise_multiplier,
        "epsilon_spent": None
        if privacy is None
        else epsilon_spent(privacy.noise_multiplier, config.fraction, config.rounds, config.delta),
        "update_bytes_per_round": max(s.update_bytes for s in stats),
        "rounds_to_settle": rounds_to_settle(stats),
        "rounds_to_converge": rounds_to_converge(records),
        "rounds": records,
    }
    return model, tuned, report


def train_local(
    rows: DataFrame,
    features: Sequence[str],
    reg: float,
    steps: int = 10,
    label: str = "label",
    weight: str | None = "weight",
    family: str = "logistic",
) -> dict[str, LinearModel]:
    """Each edge's own model from its own rows alone (nothing shared)."""
    plan = LocalPlan(np.zeros(len(features) + 1), steps, reg, family=family)
    return {
        e: _model(u.params, features, LINK[family])
        for e, u in collect_updates(edge_updates(rows, features, plan, label, weight))
    }


def held_out_logloss(record: Mapping[str, Any]) -> float | None:
    """A round record's held-out log-loss over all its edges (weighted by their rows)."""
    figures = [v for v in record["validation"].values() if v.get("rows") and v.get("logloss") is not None]
    rows = sum(v["rows"] for v in figures)
    return sum(v["logloss"] * v["rows"] for v in figures) / rows if rows else None


def rounds_to_converge(records: Sequence[Mapping[str, Any]], tol: float = 0.01) -> int | None:
    """How many rounds the model needed to come within ``tol`` of the lowest held-out
    log-loss of the run (round r measures the model of r - 1 rounds). None when the last
    round was the first to get there: it may not have converged yet."""
    losses = [(r["round"], v) for r in records if (v := held_out_logloss(r)) is not None]
    if not losses:
        return None
    best = min(v for _, v in losses)
    first = next(n for n, v in losses if v <= best + tol * abs(best))  # the Poisson loss may be negative
    return None if first == losses[-1][0] else first - 1


def rounds_to_settle(stats: Sequence[RoundStats], tol: float = 0.01) -> int | None:
    """The first round after which the global model moved by less than ``tol`` of its
    first round's move (None if it never settled: with a share of the edges per round,
    or noise, it keeps moving)."""
    first = stats[0].change if stats else 0.0
    for s in stats:
        if s.change <= tol * first:
            return s.round
    return None


def round_record(s: RoundStats) -> dict[str, Any]:
    def clean(v: float) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    return {
        "round": s.round,
        "edges": list(s.edges),
        "seconds": s.seconds,
        "update_bytes": s.update_bytes,
        "change": s.change,
        "validation": {e: {k: clean(v) for k, v in f.items()} for e, f in sorted(s.validation.items())},
    }


def _model(params: np.ndarray, features: Sequence[str], link: str = "logit") -> LinearModel:
    # rounded like the central fit, so a re-run gives the same model and predictions
    return from_vector(np.array([rounded(v) for v in params]), tuple(features), link)


def apply_by_edge(rows: DataFrame, models: Mapping[str, LinearModel], fallback: LinearModel, out: str) -> DataFrame:
    """``rows`` scored by their own edge's model (``fallback`` for an edge without one)."""
    if not models:
        return rows.selectExpr("*", f"{fallback.sql()} AS `{out}`")
    cases = " ".join(f"WHEN '{e}' THEN {m.sql()}" for e, m in sorted(models.items()))
    return rows.selectExpr("*", f"CASE edge_id {cases} ELSE {fallback.sql()} END AS `{out}`")
