"""The nightly model gate: every candidate model scored on the latest labelled day, the best deployed.

Each night the learned models are fitted on yesterday's features against today's requests
(day D). The gate asks every candidate the same question on that day, from the same
features (the window ending D-1), and compares the answers with what D actually asked for:

- prefetch sets: the object hit ratio of each edge's set at the configured capacity, over
  all edges' requests of D (the figure a cache lives by);
- viewer lists: hit@k of each sampled viewer's list against their first request of D.

Candidates: the learned models, the simple model, recency-weighted edge popularity (for
the sets) or plain edge popularity (for the lists, the evaluation's baseline), and the
sets deployed the night before. The two baselines of the sets also compete with the next
day's releases ranked by the learned demand model (``simple+releases``, ``recency+releases``;
``demand.with_releases``): a baseline knows nothing of a title before it is out, so on a
day without releases the gate cannot see what the learned model knows of them, and a tie
keeps that knowledge. A learned fit that is degenerate (weights not finite or
all zero, scores nearly constant, an optimiser that did not converge) is rejected before
it competes. The best candidate wins; ties go to the earlier one in ``PREFETCH_MODELS`` /
``LIST_MODELS`` order, so a baseline must do strictly better to replace the learned model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame

from edgecache.pipeline.demand import prefetch
from edgecache.pipeline.scorer import LinearModel

RELEASES = "+releases"  # a baseline with the next day's releases from the learned model
PREFETCH_MODELS = ("learned", f"simple{RELEASES}", f"recency{RELEASES}", "simple", "recency", "yesterday")
LIST_MODELS = ("learned", "simple", "edge_popular")
GATE_K = 10  # hit@k the viewer lists are judged by
MIN_SCORE_SPREAD = 1e-6  # below this standard deviation of the linear predictor, scores are constant


def degenerate(model: LinearModel, spread: float | None, converged: bool | None) -> str | None:
    """Why a fitted model must not compete, or None when it may.

    ``spread``: the standard deviation of its scores (linear predictor or probability) over
    the rows it scored;
    ``converged``: whether the optimiser converged (None where it has no such notion)."""
    values = (*model.weights, model.intercept)
    if not all(math.isfinite(v) for v in values):
        return "non-finite weights"
    if all(w == 0.0 for w in model.weights):
        return "all weights zero"
    if spread is None or not math.isfinite(spread) or spread < MIN_SCORE_SPREAD:
        return "near-constant scores"
    if converged is False:
        return "fit did not converge"
    return None


@dataclass
class Verdict:
    """One gate decision: each candidate's figure, the rejected ones and why, the choice."""

    metric: str
    figures: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    chosen: str = ""

    @property
    def learned_lost(self) -> bool:
        """The learned model was a candidate and is not deployed (rejected or beaten)."""
        return self.chosen != "learned" and ("learned" in self.figures or "learned" in self.rejected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "chosen": self.chosen,
            "learned_lost": self.learned_lost,
            "figures": dict(self.figures),
            "rejected": dict(self.rejected),
        }


def choose(
    metric: str, figures: Mapping[str, float | None], rejected: Mapping[str, str], order: tuple[str, ...]
) -> Verdict:
    """The best candidate by ``figures`` among those not rejected (ties: earlier in ``order``).

    A candidate with no figure (None: it could not be scored, e.g. no set the night before)
    takes no part."""
    v = Verdict(metric, {k: float(f) for k, f in figures.items() if f is not None}, dict(rejected))
    eligible = [m for m in order if m in v.figures and m not in v.rejected]
    if not eligible:
        raise ValueError("the gate has no eligible candidate")
    v.chosen = max(eligible, key=lambda m: (v.figures[m], -order.index(m)))
    return v


def young_sets(sets: Verdict, first_day_models: bool) -> str:
    """What ranks the prefetch set of an edge that opened on the training day, which the
    sets' figures leave out: its first day's models where it has them (under DP), else the
    learned model unless it was rejected, else what the other edges get. On the first
    nights measured the learned model was never below the edge's own day of requests
    (docs/federated.md), the baselines' reading of a one-day history."""
    if first_day_models:
        return "first_day"
    return sets.chosen if "learned" in sets.rejected else "learned"


def requests_by_title(events: DataFrame) -> DataFrame:
    """edge_id, content_id, n: a day's requests per edge and title."""
    return events.groupBy("edge_id", "content_id").count().withColumnRenamed("count", "n")


def prefetch_hit_ratios(
    scored: DataFrame, asked: DataFrame, capacity_bytes: int, members: Mapping[str, DataFrame] | None = None
) -> dict[str, float]:
    """Object hit ratio of each model's prefetch sets on the day ``asked`` describes.

    ``scored``: model, edge_id, content_id, score, size_bytes (one row per model, edge and
    title); each model's sets are filled like the deployed ones (``demand.prefetch``).
    ``members``: fixed sets (edge_id, content_id) scored as they are, by name.
    ``asked``: edge_id, content_id, n. The ratio is over every request of the day, at
    every edge, so a title no model knew counts as a miss for all."""
    spark = asked.sparkSession
    row = asked.agg({"n": "sum"}).first()
    total = (row[0] if row is not None else 0) or 0
    sets = prefetch(scored, capacity_bytes, by=("model", "edge_id")).select("model", "edge_id", "content_id")
    for name, df in (members or {}).items():
        sets = sets.unionByName(df.selectExpr(f"'{name}' AS model", "edge_id", "content_id"))
    hits = spark.sql(
        """
        SELECT s.model, coalesce(sum(a.n), 0) AS hits
        FROM (SELECT DISTINCT model, edge_id, content_id FROM {sets}) s
        LEFT JOIN {asked} a ON a.edge_id = s.edge_id AND a.content_id = s.content_id
        GROUP BY s.model
        """,
        sets=sets,
        asked=asked,
    ).collect()
    got = {r["model"]: (r["hits"] / total if total else 0.0) for r in hits}
    names = [r[0] for r in scored.select("model").distinct().collect()] + list(members or {})
    return {m: float(got.get(m, 0.0)) for m in names}


def first_requests(events: DataFrame) -> DataFrame:
    """user_id, content_id: each viewer's first request of the day (ties: lower title id),
    the request the evaluation scores viewer lists on."""
    return events.sparkSession.sql(
        """
        SELECT user_id, min_by(content_id, struct(timestamp, content_id)) AS content_id
        FROM {events} GROUP BY user_id
        """,
        events=events,
    )


def list_hit_rates(lists: DataFrame, firsts: DataFrame, k: int = GATE_K) -> dict[str, float]:
    """hit@k of each model's viewer lists: ``lists`` has model, user_id and ranked; a viewer
    of ``firsts`` without a list from a model counts as that model's miss."""
    spark = lists.sparkSession
    rows = spark.sql(
        """
        WITH models AS (SELECT DISTINCT model FROM {lists})
        SELECT m.model, count(*) AS viewers,
               count_if(array_contains(slice(l.ranked, 1, :k), f.content_id)) AS hits
        FROM models m CROSS JOIN {firsts} f
        LEFT JOIN {lists} l ON l.model = m.model AND l.user_id = f.user_id
        GROUP BY m.model
        """,
        args={"k": int(k)},
        lists=lists,
        firsts=firsts,
    ).collect()
    return {r["model"]: (r["hits"] / r["viewers"] if r["viewers"] else 0.0) for r in rows}


def popular_lists(users: DataFrame, popularity: DataFrame, k: int) -> DataFrame:
    """The edge-popularity baseline as viewer lists: each viewer gets their edge's ``k``
    most requested titles of the window (ties: lower rank, then content id), like the
    evaluation's ``popularity_predictions``. Columns of ``predict.top_lists``."""
    return users.sparkSession.sql(
        """
        WITH top AS (
          SELECT edge_id,
                 transform(sort_array(collect_list(struct(-requests AS r, rank, content_id))),
                           x -> x.content_id) AS ranked
          FROM (SELECT *, row_number() OVER (PARTITION BY edge_id
                                             ORDER BY requests DESC, rank, content_id) AS pos
                FROM {popularity}) WHERE pos <= :k
          GROUP BY edge_id
        )
        SELECT u.user_id, u.edge_id, t.ranked[0] AS content_id, t.ranked,
               CAST(NULL AS array<double>) AS scores, 'edge_popular' AS source
        FROM {users} u JOIN top t ON t.edge_id = u.edge_id
        """,
        args={"k": int(k)},
        users=users,
        popularity=popularity,
    )
