"""Spark job: predict each viewer's next titles and each edge's prefetch set for day D+1.

The learned model trains on yesterday: candidates built from D-1's features, labelled
with what each viewer watched on D, fit the scorer (logistic regression, by default by
federated learning: each edge on its own rows, see ``edgecache.federated``); the edges'
request counts on D fit the demand model (Poisson). Both then score D's features for
D+1, a day no model has seen. Without D-1's features (a first day) the job falls back to
the foundation's simple model and says so in its report.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from edgecache.federated.config import KNOBS, FedConfig, Knob
from edgecache.federated.model import from_vector, to_vector
from edgecache.federated.totals import TotalsPrivacy, secure_totals
from edgecache.federated.training import apply_by_edge, train_federated, train_local
from edgecache.layout import Layout, committed, read_json, shift_day, staging, write_json_atomic
from edgecache.pipeline.candidates import FEATURES, candidate_rows, materialize, sample_users, with_labels
from edgecache.pipeline.catalog import read_spark
from edgecache.pipeline.demand import (
    DEMAND_FEATURES,
    OPENING_FEATURES,
    demand_rows,
    fill_traffic,
    prefetch,
    rank_demand,
    release_day_rows,
    viewers,
    with_releases,
    with_request_counts,
)
from edgecache.pipeline.features import FEATURE_TABLES, VIEWER_CLIP, title_features, window_dates
from edgecache.pipeline.gate import (
    GATE_K,
    LIST_MODELS,
    PREFETCH_MODELS,
    RELEASES,
    Verdict,
    choose,
    degenerate,
    first_requests,
    list_hit_rates,
    popular_lists,
    prefetch_hit_ratios,
    requests_by_title,
    young_sets,
)
from edgecache.pipeline.job import (
    InputError,
    Laps,
    base_parser,
    boolean,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_job,
)
from edgecache.pipeline.ranking import edge_demand, predict_users, rank_candidates, top_lists
from edgecache.pipeline.scorer import Fit, LinearModel, auc, fit_logistic, fit_poisson_checked, negative_sample
from edgecache.schema import is_valid_id
from edgecache.settings import Settings

MODELS = ("learned", "simple")
TRAININGS = ("federated", "central", "local")
REG = 1e-3  # the scorer's L2 strength, the same however it is trained
DEMAND_REG = 1e-3  # the federated demand model's L2 strength (on unscaled features)
# The scorer trains on the candidates of a hash sample of at most MAX_TRAINING_USERS
# viewers: every positive and a weighted sample of negatives, up to MAX_TRAINING_ROWS rows.
# Enough for 17 weights, and it keeps training time flat as the service grows.
MAX_TRAINING_USERS = 40_000
MAX_TRAINING_ROWS = 300_000


def build_parser() -> argparse.ArgumentParser:
    d = Settings.from_env()
    p = base_parser("Predict next titles per viewer and the prefetch set per edge.")
    p.add_argument("--top-k", type=positive_int, default=d.top_k, help=f"titles per viewer (default {d.top_k})")
    p.add_argument(
        "--cache-gb",
        type=positive_float,
        default=d.cache_gb,
        help=f"prefetch capacity of each edge cache in GB (default {d.cache_gb})",
    )
    p.add_argument(
        "--model",
        choices=MODELS,
        default=d.model,
        help=f"learned scorer, or the simple tiered baseline (default {d.model})",
    )
    p.add_argument(
        "--training",
        choices=TRAININGS,
        default=d.training,
        help="how the learned models are trained: federated across edges, central (all rows pooled) "
        "or local (each edge alone, the demand model too, without the service-wide counts; an edge with "
        f"no rows of its own ranks by its own recent requests) (default {d.training})",
    )
    p.add_argument(
        "--opening-edges",
        type=edge_list,
        default=[],
        help="edges that open tomorrow and have no logs yet (comma-separated ids): an opening model ranks "
        "their titles from what the other edges know (the per-title totals over the service), whatever the "
        "gate deploys for the others; local-only training and the simple model have none, so with those they "
        "open empty (default none)",
    )
    p.add_argument(
        "--gate",
        type=boolean,
        default=True,
        help="score the learned model against the baselines on the last labelled day and deploy the "
        "best (true/false; false deploys the learned model unchecked, default true)",
    )
    for knob in KNOBS:
        p.add_argument(
            knob.flag, type=knob_type(knob), default=knob.default, help=f"{knob.help} (default {knob.default})"
        )
    return p


def edge_list(value: str) -> list[str]:
    """Edge ids from a comma-separated list ("" is none)."""
    ids = [e.strip() for e in value.split(",") if e.strip()]
    bad = [e for e in ids if not is_valid_id(e)]
    if bad:
        raise argparse.ArgumentTypeError(f"not an edge id: {', '.join(bad)}")
    return ids


def knob_type(knob: Knob) -> Callable[[str], Any]:
    """The argparse type of a federated setting, from its kind and lower bound."""
    if knob.kind == "boolean":
        return boolean
    if knob.kind == "integer":
        return positive_int if (knob.minimum or 0) >= 1 else non_negative_int
    return positive_float if knob.exclusive_minimum is not None else non_negative_float


def fed_config(args: argparse.Namespace) -> FedConfig:
    return FedConfig(**{k.field: getattr(args, k.name) for k in KNOBS})


def read_features(spark: SparkSession, layout: Layout, date: str) -> tuple[dict[str, DataFrame], dict] | None:
    """A day's feature tables and manifest, or None when they were not built and committed."""
    if not committed(layout.features_day(date)):
        return None
    tables = {n: spark.read.parquet(str(layout.features(date, n))) for n in FEATURE_TABLES}
    return tables, read_json(layout.features(date, "manifest.json"))


@dataclass
class Trained:
    """The night's fits and what the gate scores them on: yesterday's (sampled) features,
    their titles, today's requests, the scored candidate and demand rows."""

    scorer: LinearModel
    per_edge: dict[str, LinearModel]
    demand: Fit
    stats: dict[str, Any]
    feats: dict[str, DataFrame]
    window_days: int
    titles: DataFrame
    labels: DataFrame
    scored: DataFrame  # yesterday's candidate rows with the scorer's ``p``
    demand_rows: DataFrame  # yesterday's demand rows with today's counts as ``label``
    scorer_spread: float | None
    demand_spread: float | None
    demand_per_edge: dict[str, LinearModel]  # local training or fine-tuning: each edge's own demand model
    opening: LinearModel | None  # the demand model for edges that open tomorrow (with --opening-edges)
    # Under DP, once the global demand model is set aside: for each edge that opened today (no
    # training rows), a model of the opening inputs fitted to its first day (``first_day_models``).
    young: dict[str, LinearModel]
    # ... and for tomorrow's releases there, when its first day had none: the opening model
    young_releases: LinearModel | None
    # The service-wide totals per title come from the edges by secure aggregation (fl_demand):
    # no model's features pool one edge's rows with another's.
    secure: bool
    totals_privacy: TotalsPrivacy | None  # under DP: the totals' share of the budget
    # Edges in today's features and not in the training day's: they opened today, so the
    # scorer they get is the fallback one (``scorer``), not a model of their own.
    young_edges: tuple[str, ...] = ()


def train(
    spark: SparkSession,
    layout: Layout,
    date: str,
    catalog: DataFrame,
    args: argparse.Namespace,
    today_edges: Sequence[str],
    today_titles: DataFrame,
) -> Trained:
    """Fit the scorer (federated, central or per edge, as ``args.training`` says) and the
    demand model on D-1's features against D's requests. ``today_edges``: the edges in D's
    features (those not in D-1's opened on D and have no training rows); ``today_titles``:
    ``title_features(catalog, D)``."""
    previous = shift_day(date, -1)
    laps = Laps()
    feats, manifest = read_features(spark, layout, previous)  # type: ignore[misc]
    trained_edges = {r["edge_id"] for r in feats["popularity"].select("edge_id").distinct().collect()}
    young = sorted(set(today_edges) - trained_edges)
    feats, rate = sample_users(feats, MAX_TRAINING_USERS)
    titles = materialize(title_features(catalog, previous))
    no_release_on_d = titles.where("release_age_days = 0").isEmpty()
    labels = spark.read.parquet(str(layout.events(date)))
    fed = fed_config(args)
    secure = args.training == "federated" and fed.demand
    # Under DP with fine-tuning, an edge that opened on D ranks by a model of its first day;
    # when nothing came out that day, that model cannot say what a release brings, and the
    # opening model, fitted on every edge's releases, ranks tomorrow's releases there instead
    # (trained only when a title comes out tomorrow: it takes a share of the budget).
    releases_for_young = (
        bool(young)
        and secure
        and fed.epsilon > 0
        and fed.fine_tune_steps > 0
        and no_release_on_d
        and not today_titles.where("release_age_days = 0").isEmpty()
    )
    opening = (bool(args.opening_edges) or releases_for_young) and args.training != "local"
    totals_privacy = None
    if secure and fed.epsilon > 0:
        # the models trained on the same edges and the totals share the budget equally
        fed = replace(fed, epsilon=fed.epsilon / (4 if opening else 3))
        totals_privacy = TotalsPrivacy(fed.epsilon, VIEWER_CLIP, layout.edge_keys)
    totals, totals_report = None, None
    if secure:
        totals, totals_report = secure_global(feats["popularity"], titles, totals_privacy, previous)
    rows = materialize(with_labels(candidate_rows(feats, titles, manifest["window_days"], totals=totals), labels))
    sample = materialize(negative_sample(rows, MAX_TRAINING_ROWS, seed=0, keys=("user_id", "content_id")))
    laps.lap("candidates")
    per_edge: dict[str, LinearModel] = {}
    federated = None
    if args.training == "central":
        scorer = fit_logistic(sample, FEATURES, weight="weight", reg_param=REG)
    elif args.training == "federated":
        scorer, per_edge, federated = train_federated(sample, FEATURES, fed, REG)
        federated["global_converged"] = settled(federated)
        if per_edge and fed.epsilon > 0 and not federated["global_converged"]:
            # As for the demand model: steps from a model that never settled need not get
            # back from the noise, so each edge fits its scorer from scratch on its own rows.
            # An edge without rows keeps the global model: a mean of the edges' own models
            # would share them without the noise.
            federated["global_model_set_aside"] = True
            per_edge = train_local(sample, FEATURES, REG)
    else:
        per_edge = train_local(sample, FEATURES, REG)
        # an edge with no rows of its own has nothing to learn from: it gets the mean model
        scorer = _mean_model(list(per_edge.values()))
    laps.lap("fit")
    scored = materialize(apply_by_edge(rows, per_edge, scorer, "p"))
    counts = scored.agg(
        F.count("*").alias("rows"), F.sum("label").alias("positives"), F.stddev_pop("p").alias("spread")
    ).first()
    assert counts is not None  # an aggregate without groups has one row
    expected_viewers = viewers(scored, rate=rate)
    demand_train = materialize(
        with_request_counts(demand_rows(feats["popularity"], titles, expected_viewers, totals), labels)
    )
    fit_rows = demand_train
    if no_release_on_d:
        # Nothing came out on D, so the day's rows cannot say what a release brings on its
        # first day: the models learn that from the window's releases, each edge from its own
        # logs. Only then: those rows lack the viewers' sum a release's own rows have, which
        # costs where titles come out daily. The gate scores the day's rows alone.
        releases = release_day_rows(window_events(spark, layout, previous, manifest["window_days"]), catalog)
        fit_rows = materialize(demand_train.unionByName(releases))
    demand_federated_report = None
    demand_per_edge: dict[str, LinearModel] = {}
    if secure:
        demand_fit, demand_per_edge, demand_federated_report = federated_demand(fit_rows, fed)
    elif args.training == "local":
        demand_per_edge, demand_fit = local_demand(fit_rows)
    else:
        demand_fit = fit_poisson_checked(fit_rows, DEMAND_FEATURES)
    opening_fit, opening_report = None, None
    if opening:
        opening_fit, opening_report = opening_demand(fit_rows, fed if secure else None)
    stats_sql = ["count(*) AS n", f"stddev_pop({demand_fit.model.linear_sql()}) AS spread"]
    if opening_fit is not None:  # in the same pass
        stats_sql.append(f"stddev_pop({opening_fit.linear_sql()}) AS opening_spread")
    demand_stats = demand_train.selectExpr(*stats_sql).first()
    assert demand_stats is not None
    if opening_fit is not None and opening_report is not None:
        why = degenerate(opening_fit, demand_stats["opening_spread"], None)
        if why:  # it would rank the opening edges' titles by noise or not at all: they open empty
            opening_fit, opening_report = None, {**opening_report, "set_aside": why}
    young_models: dict[str, LinearModel] = {}
    young_releases = None
    if young and (demand_federated_report or {}).get("global_model_set_aside"):
        young_models = first_day_models(feats["popularity"], titles, totals, labels, young)
        young_releases = opening_fit if releases_for_young else None
    laps.lap("demand")
    auc_training_day = auc(apply_by_edge(sample, per_edge, scorer, "p"), "p")
    laps.lap("auc")
    stats = {
        "trained_on": {"features": previous, "labels": date},
        "training": args.training,
        "viewers_sampled_rate": rate,
        "scorer_rows": counts["rows"],
        "scorer_positives": int(counts["positives"] or 0),
        # on the training sample: the full day's rows would cost a sort of all of them
        "scorer_auc_training_day": auc_training_day,
        "demand_rows": demand_stats["n"],
        "demand_release_day_rows": fit_rows.count() - demand_stats["n"],
        "demand_fit": {
            "converged": demand_fit.converged,
            "iterations": demand_fit.iterations,
            "dropped_features": list(demand_fit.dropped),
            "federated": demand_federated_report,
            "edges_with_own_model": sorted(demand_per_edge) if demand_per_edge else None,
            "opening": opening_report,
            # opened on D: no rows to train on (with DP and an unsettled global model, each
            # ranks by a model of its first day and its own requests)
            "young_edges": {
                "edges": young,
                "first_day_models": sorted(young_models),
                # what ranks tomorrow's releases there: the opening model when the first day had none
                "releases_by": None if not young_models else ("opening" if young_releases else "first_day"),
            },
        },
        "federated": federated,
        # the per-title totals the scorer's shares and the demand model read, securely summed
        "global_totals": totals_report,
        "seconds": laps.seconds,
    }
    return Trained(
        scorer,
        per_edge,
        demand_fit,
        stats,
        feats,
        manifest["window_days"],
        titles,
        labels,
        scored,
        demand_train,
        counts["spread"],
        demand_stats["spread"],
        demand_per_edge,
        opening_fit,
        young_models,
        young_releases,
        secure,
        totals_privacy,
        tuple(young),
    )


def window_events(spark: SparkSession, layout: Layout, date: str, window_days: int) -> DataFrame:
    """edge_id, content_id and ``day`` of the events of the window ending ``date`` (the days
    whose events were committed)."""
    days = [d for d in window_dates(date, window_days) if committed(layout.events(d))]
    empty = spark.createDataFrame([], "edge_id string, content_id string, day date")
    days_events = (
        spark.read.parquet(str(layout.events(d))).select("edge_id", "content_id", F.lit(d).cast("date").alias("day"))
        for d in days
    )
    return reduce(DataFrame.unionByName, days_events, empty)


def federated_demand(rows: DataFrame, config: FedConfig) -> tuple[Fit, dict[str, LinearModel], dict[str, Any]]:
    """The demand model by federated learning: each edge fits the Poisson model to its own
    (edge, title) rows and sends only the parameter update; the server averages. Titles are
    held out by hash for validation. With ``fine_tune_steps`` each edge then takes that many
    steps from the global model on its own rows, kept near it, and ranks by its own model (an
    edge with no rows, such as one that opened today, keeps the global one). The global model
    counts as converged as ``settled`` says. DP noise keeps it moving: without fine-tuning
    the gate then sets it aside; with fine-tuning each edge fits its own model instead (an
    edge that opened today, a model of its first day: ``first_day_models`` in ``train``)."""
    model, tuned, report = _federated_poisson(rows, DEMAND_FEATURES, config)
    converged = settled(report)
    report["global_converged"] = converged
    if tuned and config.epsilon > 0 and not converged:
        # A global model that never settled ranks no edge, and a few steps from it need not
        # get back from the noise: each edge fits its model from scratch on its own rows (as
        # fine-tuning does, it stays at the edge and spends none of the privacy budget). An
        # edge without rows gets the recency baseline here; ``train`` gives one that has a
        # first day a model of that day.
        report["global_model_set_aside"] = True
        tuned = train_local(rows, DEMAND_FEATURES, DEMAND_REG, weight=None, family="poisson")
        return Fit(own_requests_model(DEMAND_FEATURES), True, len(report["rounds"])), tuned, report
    return Fit(model, converged, len(report["rounds"])), tuned, report


def settled(report: dict[str, Any]) -> bool:
    """Whether a federated model converged: its last round moved it by at most a tenth of
    its first round's move (``train_federated``'s report)."""
    changes = [r["change"] for r in report["rounds"]]
    return len(changes) > 1 and changes[-1] <= 0.1 * changes[0]


def _federated_poisson(
    rows: DataFrame, features: Sequence[str], config: FedConfig
) -> tuple[LinearModel, dict[str, LinearModel], dict[str, Any]]:
    """A Poisson model over (edge, title) rows by federated learning, titles held out by hash."""
    return train_federated(
        rows, features, config, DEMAND_REG, weight=None, family="poisson", holdout_keys=("content_id",)
    )


# What an edge alone can know: its own counts, its viewers and the catalog. The service-wide
# count per title (``global``) is a sum over every edge, so local models go without it.
LOCAL_DEMAND_FEATURES = tuple(f for f in DEMAND_FEATURES if f != "global")


def local_demand(rows: DataFrame) -> tuple[dict[str, LinearModel], Fit]:
    """Each edge's demand model from its own (edge, title) rows alone, and the model for an
    edge with no rows of its own (a new edge on its first night): its own recent requests,
    the recency baseline written as a model (e^popularity = 1 + decayed requests)."""
    models = train_local(rows, LOCAL_DEMAND_FEATURES, DEMAND_REG, weight=None, family="poisson")
    return models, Fit(own_requests_model(LOCAL_DEMAND_FEATURES), True, 0)


def own_requests_model(features: Sequence[str]) -> LinearModel:
    """The recency baseline written as a demand model: e^popularity = 1 + the edge's own
    decayed requests. For an edge with no model of its own."""
    return LinearModel(tuple(features), tuple(1.0 if f == "popularity" else 0.0 for f in features), 0.0, "log")


def secure_global(
    popularity: DataFrame, titles: DataFrame, privacy: TotalsPrivacy | None = None, day: str = ""
) -> tuple[DataFrame, dict[str, Any]]:
    """Each title's decayed requests over all edges (the demand model's ``global`` input and
    the scorer's service-wide shares), summed across the edges by secure aggregation: the
    server learns the totals only. With ``privacy``, each viewer's part clipped and the sum
    noised: a viewer's requests move it by a bounded, hidden amount. ``day``: the features'
    day, which names the sum (the same day's totals get the same noise)."""
    ids = sorted(r["content_id"] for r in titles.select("content_id").collect())
    value = "requests_decayed" if privacy is None else "requests_decayed_clipped"
    if value not in popularity.columns:
        raise InputError(
            f"the popularity features have no {value} column: they were built by an older release; "
            "build the features of the day again (remove the day's features folder and run features)"
        )
    sums, report = secure_totals(popularity, ids, value, privacy=privacy, nonce=day)
    frame = popularity.sparkSession.createDataFrame(
        pd.DataFrame({"content_id": list(sums), "global_decayed": list(sums.values())}),
        "content_id string, global_decayed double",
    )
    return frame, {"secure": True, **report, "edges": len(report["edges"])}


def opening_demand(rows: DataFrame, config: FedConfig | None) -> tuple[LinearModel, dict[str, Any]]:
    """The demand model for an edge that opens tomorrow: what the service-wide figures alone
    (``OPENING_FEATURES``) say of an edge's next-day requests, fitted on every edge's rows
    as if it had no history of its own. Federated like the demand model (``config``), or
    central. Without it an opening edge would be ranked by a model that never saw an edge
    without history, whose weights for these inputs assume its own counts beside them.

    Only a degenerate model is set aside (in ``train``), not one that DP noise kept moving:
    the alternative is an empty cache, and with DP at epsilon 4 and 8 the noisy model still
    ranked within a point of the noiseless one (docs/federated.md)."""
    if config is None:
        fit = fit_poisson_checked(rows, OPENING_FEATURES)
        return fit.model, {"features": list(OPENING_FEATURES), "converged": fit.converged, "federated": False}
    model, _, report = _federated_poisson(rows, OPENING_FEATURES, config)
    return model, {
        "features": list(OPENING_FEATURES),
        "federated": True,
        "converged": settled(report),
        "update_bytes_per_round": report["update_bytes_per_round"],
        "epsilon_spent": report["epsilon_spent"],
    }


def every_title_rows(
    popularity: DataFrame, titles: DataFrame, totals: DataFrame | None, edges: Sequence[str], young: bool = False
) -> DataFrame:
    """``demand_rows`` for ``edges`` alone, a row per title out, without expected viewers:
    edges with no logs in ``popularity`` (opening ones), or with ``young`` a day of them."""
    no_viewers = titles.sparkSession.createDataFrame([], "edge_id string, content_id string, viewers double")
    by_kind = {"young": edges} if young else {"opening": edges}
    return demand_rows(popularity, titles, no_viewers, totals, **by_kind).where(F.col("edge_id").isin(list(edges)))


def first_day_models(
    popularity: DataFrame, titles: DataFrame, totals: DataFrame | None, labels: DataFrame, young: Sequence[str]
) -> dict[str, LinearModel]:
    """For each edge that opened on D: the opening model's inputs (what the service knows of
    each title) fitted to the edge's own requests on D, its first day, at the edge (nothing
    is sent, so no budget is spent). The edge had no history on D-1, just as the opening
    model assumes, so its first day is a training day for that model."""
    rows = every_title_rows(popularity, titles, totals, young)
    return train_local(with_request_counts(rows, labels), OPENING_FEATURES, DEMAND_REG, weight=None, family="poisson")


def young_ranking(
    popularity: DataFrame,
    titles: DataFrame,
    totals: DataFrame | None,
    young: dict[str, LinearModel],
    releases: LinearModel | None = None,
) -> DataFrame:
    """``rank_demand``'s rows for the edges that opened today, every title out by tomorrow,
    each edge ranked by its first day's model and its own requests (``prior_plus_own``);
    tomorrow's releases by ``releases`` in place of the first day's model, when given."""
    edges = sorted(young)
    rows = every_title_rows(popularity, titles, totals, edges, young=True)
    cases = " ".join(f"WHEN '{e}' THEN {prior_plus_own(young[e], releases)}" for e in edges)
    return rank_demand(rows.selectExpr("edge_id", "content_id", f"CASE edge_id {cases} END AS score", "size_bytes"))


def prior_plus_own(first_day: LinearModel, releases: LinearModel | None = None) -> str:
    """A young edge's expected requests, as SQL over ``demand_rows``: the mean of its first
    day's model (``first_day_models``: what the service knows of the title) and its own
    decayed requests. With one day of its own, that is the Poisson-gamma posterior mean when
    the service's figures count as one day: a title it has served ranks by both, one it has
    not (released tomorrow, say) by the service's figures alone. ``releases``: the model whose
    figures stand in for the first day's for a title released tomorrow (one that learned
    from releases, where the first day had none)."""
    prior = f"exp({first_day.linear_sql()})"
    if releases is not None:
        prior = f"CASE WHEN `new_release` = 1 THEN exp({releases.linear_sql()}) ELSE {prior} END"
    return f"({prior} + exp(`popularity`) - 1) / 2"


def opening_ranking(
    popularity: DataFrame, titles: DataFrame, totals: DataFrame | None, opening: Sequence[str], model: LinearModel
) -> DataFrame:
    """``rank_demand``'s rows for the ``opening`` edges alone, ranked by the opening model."""
    rows = every_title_rows(popularity, titles, totals, opening)
    return rank_demand(apply_by_edge(rows, {}, model, "score"))


def run_gate(layout: Layout, date: str, catalog: DataFrame, t: Trained, capacity: int) -> dict[str, Verdict]:
    """Score every candidate on day D from the window ending D-1 (see ``edgecache.pipeline.gate``)."""
    spark = catalog.sparkSession
    previous = shift_day(date, -1)
    # An edge that opened on D has no rows in D-1's features: only yesterday's set (its
    # opening set) can hold anything there, so its requests would decide the contest for a
    # reason that is gone the next day, when it has rows. Its ranking is settled apart
    # (``young_ranking``, the young_lists verdict); the figures are the other edges'.
    labels = t.labels.where(~F.col("edge_id").isin(list(t.young_edges))) if t.young_edges else t.labels
    asked = materialize(requests_by_title(labels))
    pop = t.feats["popularity"]
    learned = materialize(apply_by_edge(t.demand_rows, t.demand_per_edge, t.demand.model, "score"))
    columns = ("edge_id", "content_id", "score", "size_bytes")
    scored = learned.selectExpr("'learned' AS model", *columns)
    for name in ("simple", "recency"):
        base = baseline_demand(name, pop, t.titles, t.window_days)
        for model, ranked in ((name, base), (name + RELEASES, with_releases(base, learned))):
            scored = scored.unionByName(ranked.selectExpr(f"'{model}' AS model", *columns))
    yesterday = layout.predictions(previous, "prefetch")
    members = {"yesterday": spark.read.parquet(str(yesterday))} if committed(layout.predictions_day(previous)) else {}
    figures = prefetch_hit_ratios(scored, asked, capacity, members)
    why = degenerate(t.demand.model, t.demand_spread, t.demand.converged)
    # the "+releases" baselines rank the releases by the learned model: rejected with it
    rejected = {m: why for m in PREFETCH_MODELS if m == "learned" or m.endswith(RELEASES)} if why else {}
    sets = choose("object_hit_ratio", figures, rejected, PREFETCH_MODELS)

    firsts = first_requests(t.labels).join(t.feats["users"].select("user_id"), "user_id", "left_semi")
    lists = top_lists(rank_candidates(t.scored), GATE_K).selectExpr("'learned' AS model", "user_id", "ranked")
    lists = lists.unionByName(
        predict_users(t.feats["users"], t.feats["transitions"], pop, catalog, GATE_K).selectExpr(
            "'simple' AS model", "user_id", "ranked"
        )
    ).unionByName(
        popular_lists(t.feats["users"], pop, GATE_K).selectExpr("'edge_popular' AS model", "user_id", "ranked")
    )
    rates = list_hit_rates(lists, firsts, GATE_K)
    why = degenerate(t.scorer, t.scorer_spread, None)
    viewer_lists = choose(f"hit@{GATE_K}", rates, {"learned": why} if why else {}, LIST_MODELS)
    verdicts = {"prefetch": sets, "lists": viewer_lists}
    if t.young_edges and t.per_edge:
        # The edges with figures rank their viewers by models of their own; an edge that
        # opened today has none and gets the fallback scorer (under DP, the noisy global
        # one). Ask the same question of that scorer on the edges with figures, so a young
        # edge's viewers get lists from whichever wins, and the report says when it lost.
        fallback = materialize(apply_by_edge(t.scored.drop("p"), {}, t.scorer, "p"))
        row = fallback.agg(F.stddev_pop("p").alias("spread")).first()
        assert row is not None  # an aggregate without groups has one row
        young = top_lists(rank_candidates(fallback), GATE_K).selectExpr("'learned' AS model", "user_id", "ranked")
        young_rates = {**rates, "learned": list_hit_rates(young, firsts, GATE_K).get("learned", 0.0)}
        why = degenerate(t.scorer, row["spread"], None)
        verdicts["young_lists"] = choose(f"hit@{GATE_K}", young_rates, {"learned": why} if why else {}, LIST_MODELS)
    return verdicts


def baseline_demand(name: str, popularity: DataFrame, titles: DataFrame, window_days: int) -> DataFrame:
    """A baseline's expected requests per edge and title (``rank_demand``'s columns):
    ``simple``, the window's mean per day; ``recency``, requests weighted by recency
    (``requests_decayed``: each day's requests count e^(-age / 2 days))."""
    if name == "simple":
        return edge_demand(popularity, titles, window_days)
    if name == "recency":
        return rank_demand(
            popularity.join(titles.select("content_id", "size_bytes"), "content_id").selectExpr(
                "edge_id", "content_id", "requests_decayed AS score", "size_bytes"
            )
        )
    raise ValueError(f"no baseline demand called {name!r}")


def _mean_model(models: list[LinearModel]) -> LinearModel:
    return from_vector(np.mean([to_vector(m) for m in models], axis=0), models[0].features, models[0].link)


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date = args.date
    previous = shift_day(date, -1)
    found = read_features(spark, layout, date)
    if found is None:
        raise InputError(f"no features for {date} under {layout.features(date, '')}: run features first")
    feats, manifest = found
    catalog = read_spark(spark, layout.catalog)
    titles = materialize(title_features(catalog, date))

    model = args.model
    trainable = read_features(spark, layout, previous) is not None and committed(layout.events(date))
    if model == "learned" and not trainable:
        model = "simple"  # nothing to learn from yet: say so in the report
    stats: dict[str, Any] = {}
    gate: dict[str, Any] = {"skipped": "the simple model was asked for"}
    deployed = {"prefetch": "simple", "lists": "simple"}
    models: dict[str, Any] = {}
    capacity = int(args.cache_gb * 1e9)
    laps = Laps()
    with_logs = sorted(r["edge_id"] for r in feats["popularity"].select("edge_id").distinct().collect())
    if model == "learned":
        t = train(spark, layout, date, catalog, args, with_logs, titles)
        stats = t.stats
        laps.lap("train")
        if args.gate:
            verdicts = run_gate(layout, date, catalog, t, capacity)
            gate = {k: v.to_dict() for k, v in verdicts.items()}
            if t.young_edges:  # not in the sets' figures (see run_gate)
                gate["prefetch"]["edges_left_out"] = list(t.young_edges)
            # with young edges, also "young_lists": the lists their viewers get
            deployed = {k: v.chosen for k, v in verdicts.items()}
            if t.young_edges:
                deployed["young_prefetch"] = young_sets(verdicts["prefetch"], bool(t.young))
            laps.lap("gate")
        else:
            gate = {"skipped": "--gate false: the learned model is deployed unchecked"}
            deployed = {"prefetch": "learned", "lists": "learned"}
        models = {
            "scorer": t.scorer.to_dict(),
            "demand": t.demand.model.to_dict(),
            "demand_per_edge": {e: m.to_dict() for e, m in sorted(t.demand_per_edge.items())},
            "demand_opening": None if t.opening is None else t.opening.to_dict(),
            "scorer_per_edge": {e: m.to_dict() for e, m in sorted(t.per_edge.items())},
            # under DP, an edge that opened today: its first day's model (``first_day_models``)
            "demand_first_day": {e: m.to_dict() for e, m in sorted(t.young.items())},
        }
    elif args.model == "learned":
        gate = {"skipped": "no labelled day yet: the simple model is deployed"}

    # Without an opening model (local-only training and the simple model have none) an
    # opening edge opens empty.
    opening_model = t.opening if model == "learned" else None
    opening: list[str] = []
    if opening_model is not None and args.opening_edges:
        # An edge listed that already has logs is not opening: its own figures rank it.
        opening = [e for e in args.opening_edges if e not in with_logs]
    young = t.young if model == "learned" else {}
    # a "+releases" baseline ranks tomorrow's releases by the learned demand model
    baseline, releases = deployed["prefetch"].removesuffix(RELEASES), deployed["prefetch"].endswith(RELEASES)
    learned_used = "learned" in deployed.values() or releases
    scored, totals = None, None
    if model == "learned" and t.secure and (learned_used or opening or young):
        totals = secure_global(feats["popularity"], titles, t.totals_privacy, date)[0]
    if learned_used:
        # Ranked in the same pass that builds the candidates, while they are still
        # partitioned by viewer; only what the top lists and demand read is kept.
        candidates = candidate_rows(feats, titles, manifest["window_days"], totals=totals)
        scored = materialize(
            rank_candidates(apply_by_edge(candidates, t.per_edge, t.scorer, "p")).select(
                "user_id", "edge_id", "content_id", "p", "r", "source"
            )
        )
        laps.lap("score_candidates")

    def lists_by(name: str) -> DataFrame:
        if name == "learned":
            assert scored is not None  # scored above whenever a learned model is deployed
            return top_lists(scored, args.top_k)
        if name == "edge_popular":
            return popular_lists(feats["users"], feats["popularity"], args.top_k)
        return predict_users(feats["users"], feats["transitions"], feats["popularity"], catalog, args.top_k)

    users = lists_by(deployed["lists"])
    if deployed.get("young_lists", deployed["lists"]) != deployed["lists"]:
        # The gate's verdict on the fallback scorer, for the edges that have only that one
        in_young = F.col("edge_id").isin(list(t.young_edges))
        users = users.where(~in_young).unionByName(lists_by(deployed["young_lists"]).where(in_young))
    young_learned = deployed.get("young_prefetch") == "learned" and deployed["prefetch"] != "learned"
    if deployed["prefetch"] == "learned" or releases or young_learned:
        assert scored is not None
        rows = demand_rows(feats["popularity"], titles, viewers(scored), totals, opening)
        by_edge = dict(t.demand_per_edge)
        if opening_model is not None:
            by_edge.update(dict.fromkeys(opening, opening_model))
        learned_demand = apply_by_edge(rows, by_edge, t.demand.model, "score")
        if releases:
            # with_releases reads it twice, and the young edges may once more: score once
            learned_demand = materialize(learned_demand)
    if deployed["prefetch"] == "learned":
        demand = rank_demand(learned_demand)
    else:
        if baseline == "yesterday":
            demand = spark.read.parquet(str(layout.predictions(previous, "edge_demand")))
        else:
            demand = baseline_demand(baseline, feats["popularity"], titles, manifest["window_days"])
        if releases:
            demand = with_releases(demand, learned_demand)
        if young_learned:
            in_young = F.col("edge_id").isin(list(t.young_edges))
            demand = demand.where(~in_young).unionByName(rank_demand(learned_demand.where(in_young)))
        if opening_model is not None and opening:
            # No baseline has anything for an edge without logs: against an empty cache, an
            # opening edge gets the opening model's set whatever the gate chose for the others
            # (in place of what yesterday's sets held for it, if it was listed then too).
            ranked = opening_ranking(feats["popularity"], titles, totals, opening, opening_model)
            demand = demand.where(~F.col("edge_id").isin(opening)).unionByName(ranked)
    if young:
        # The gate's figures come from the edges that were there yesterday: an edge that opened
        # today ranks by its first day whatever it chose for them (as an opening edge ranks by
        # the opening model), learned or a baseline.
        ranked = young_ranking(feats["popularity"], titles, totals, young, t.young_releases)
        demand = demand.where(~F.col("edge_id").isin(sorted(young))).unionByName(ranked)

    # Everything below is written into a temporary folder, committed as one at the end: a
    # killed run leaves the previous predictions of the day (or none), never a mix.
    with staging(layout.predictions_day(date)) as out:
        users.write.mode("overwrite").parquet(str(out / "users"))
        demand.write.mode("overwrite").parquet(str(out / "edge_demand"))
        demand = spark.read.parquet(str(out / "edge_demand"))
        prefetch(demand, capacity).write.mode("overwrite").parquet(str(out / "prefetch"))

        written = spark.read.parquet(str(out / "users"))
        by_source = {r["source"]: r["n"] for r in written.groupBy("source").agg(F.count("*").alias("n")).collect()}
        pf = spark.read.parquet(str(out / "prefetch"))
        per_edge = {
            r["edge_id"]: (r["n"], r["b"])
            for r in pf.groupBy("edge_id").agg(F.count("*").alias("n"), F.sum("size_bytes").alias("b")).collect()
        }
        has_yesterday = committed(layout.predictions_day(previous))
        # Without yesterday's set (the first night) every title of the new set must be loaded.
        before = spark.read.parquet(str(layout.predictions(previous, "prefetch"))) if has_yesterday else pf.limit(0)
        fill = {r["edge_id"]: r.asDict() for r in fill_traffic(pf, before).collect()}
        laps.lap("rank_and_write")
        for v in fill.values():
            v.pop("edge_id")
        summary = {
            "date": date,
            "model": model,
            "model_requested": args.model,
            "deployed": deployed,
            "gate": gate,
            "models": models,
            "training": stats,
            "predictions": sum(by_source.values()),
            "predictions_by_source": dict(sorted(by_source.items())),
            "prefetch_titles_per_edge": {e: n for e, (n, _) in sorted(per_edge.items())},
            "prefetch_bytes_per_edge": {e: b for e, (_, b) in sorted(per_edge.items())},
            "fill_traffic": dict(sorted(fill.items())),
            "fill_bytes": sum(v["fill_bytes"] for v in fill.values()),
            "fill_from_empty": not has_yesterday,
            # edges that open tomorrow, ranked by the opening model (empty without one)
            "opening_edges": {"edges": list(opening), "asked": list(args.opening_edges)},
            "top_k": args.top_k,
            "cache_bytes": capacity,
            "seconds": laps.seconds,
        }
        write_json_atomic(out / "summary.json", summary)
    return {**summary, "output": str(layout.predictions(date, ""))}


def check(args: argparse.Namespace) -> None:
    layout = Layout(args.data_dir.resolve())
    if not committed(layout.features_day(args.date)):
        raise InputError(
            f"no features for {args.date} under {layout.features_day(args.date)} (or a build that did "
            f"not finish): run features first"
        )
    if not layout.catalog.exists():
        raise InputError(f"no catalog at {layout.catalog}: run generate, ingest or features first")


def main(argv: list[str] | None = None) -> int:
    return run_job("predict", build_parser(), run, argv, check=check)
