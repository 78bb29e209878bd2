"""Prediction transforms on the tiny day, checked against a hand computation."""

from __future__ import annotations

import datetime as dt

import pytest

from edgecache.pipeline.candidates import SOURCES
from edgecache.pipeline.features import edge_popularity, in_window, title_features, transitions, user_features
from edgecache.pipeline.ranking import edge_demand, predict_users, rank_users
from tests.tiny import DAY, catalog_df, window_df


@pytest.fixture(scope="module")
def feats(spark):
    ev = window_df(spark)
    return user_features(ev), transitions(ev), edge_popularity(ev), catalog_df(spark)


def test_predict_users_top3(feats):
    rows = predict_users(*feats, top_k=3).orderBy("user_id").collect()
    assert [(r["user_id"], r["edge_id"], r["content_id"], list(r["ranked"]), r["source"]) for r in rows] == [
        # next episode first, then transitions from the last title, then edge favourites
        ("U1", "edge-01", "C4", ["C4", "C2", "C1"], "next_episode"),
        ("U2", "edge-01", "C3", ["C3", "C1", "C5"], "next_episode"),
        ("U3", "edge-02", "C2", ["C2"], "edge_popular"),  # its last title C1 is excluded
        ("U4", "edge-01", "C3", ["C3", "C1", "C5"], "next_episode"),
        ("U5", "edge-01", "C2", ["C2", "C3", "C5"], "transition"),
    ]
    assert all(r["scores"] is None for r in rows)  # the simple model has no scores


def test_top1_is_the_head_of_the_ranking(feats):
    rows = predict_users(*feats, top_k=1).collect()
    assert all(list(r["ranked"]) == [r["content_id"]] for r in rows)
    assert len(rows) == 5


@pytest.fixture(scope="module")
def wide(spark):
    """Features where episode S1:1 (C2) is followed by many titles: its next episode C3
    most often, then X1..X8, each less often than the one before (a rewatch of C2 is no
    transition).
    P1 and P2, the edge's most watched, never follow it. T1 and T2 last watched C2."""
    from tests.tiny import CATALOG_SCHEMA, EVENTS_SCHEMA

    base = dt.datetime.fromisoformat(f"{DAY} 00:00:00")
    rows, n = [], 0
    for after, times in [("C2", 12), ("C3", 11)] + [(f"X{j}", 10 - j) for j in range(1, 9)]:
        for i in range(times):
            n += 1
            rows += [(f"A{n}", "TV", "C2", 10, base + dt.timedelta(minutes=n), "edge-01"),
                     (f"A{n}", "TV", after, 10, base + dt.timedelta(minutes=n, seconds=30), "edge-01")]
    for i in range(40):  # the edge's favourites, P1 and P2, are never watched after C2
        n += 1
        rows.append((f"B{n}", "TV", f"P{1 + i % 2}", 10, base + dt.timedelta(minutes=n), "edge-01"))
    for u in ("T1", "T2"):
        rows += [(u, "TV", "C1", 10, base + dt.timedelta(hours=20), "edge-01"),
                 (u, "TV", "C2", 10, base + dt.timedelta(hours=21), "edge-01")]
    ev = in_window(spark.createDataFrame(rows, EVENTS_SCHEMA), DAY, 1)
    titles = [("C1", "movie", None, None), ("C2", "episode", "S1", 1), ("C3", "episode", "S1", 2)] + [
        (f"X{j}", "movie", None, None) for j in range(1, 9)] + [("P1", "movie", None, None), ("P2", "movie", None, None)]
    catalog = spark.createDataFrame([(*t, "drama", dt.date(2025, 1, 1), 1000) for t in titles], CATALOG_SCHEMA)
    return user_features(ev), transitions(ev), edge_popularity(ev), catalog


def test_a_short_list_is_the_head_of_a_long_one(wide):
    """Transitions are cut to the few a list of ``top_k`` can use: any k gives the first k
    of the uncut ranking, even when the next episode leads the transitions (50 is more
    than there are titles)."""
    full = {r["user_id"]: list(r["ranked"]) for r in predict_users(*wide, top_k=50).collect()}
    # C3 the next episode, C2 itself left out, then the transitions, then the favourites
    assert full["T1"][:11] == ["C3"] + [f"X{j}" for j in range(1, 9)] + ["P1", "P2"]
    for k in (1, 2, 3, 5):
        short = {r["user_id"]: list(r["ranked"]) for r in predict_users(*wide, top_k=k).collect()}
        assert short == {u: v[:k] for u, v in full.items()}, k


def test_predict_rejects_zero_k(feats):
    with pytest.raises(ValueError):
        predict_users(*feats, top_k=0)


def test_edge_demand_ranks_every_title_seen(spark, feats):
    titles = title_features(catalog_df(spark), DAY)
    rows = edge_demand(feats[2], titles).orderBy("edge_id", "rank").collect()
    assert [tuple(r) for r in rows] == [
        # edge, title, score = requests per day of the (one-day) window, rank, size
        ("edge-01", "C1", 3.0, 1, 4000),
        ("edge-01", "C2", 3.0, 2, 1000),
        ("edge-01", "C3", 2.0, 3, 1000),
        ("edge-01", "C5", 1.0, 4, 3000),
        ("edge-02", "C2", 2.0, 1, 1000),
        ("edge-02", "C1", 1.0, 2, 4000),
    ]
    # over a window of 2 days, the score is the mean requests per day
    halves = edge_demand(feats[2], titles, window_days=2).orderBy("edge_id", "rank").collect()
    assert [r["score"] for r in halves] == [1.5, 1.5, 1.0, 0.5, 1.0, 0.5]
    with pytest.raises(ValueError):
        edge_demand(feats[2], titles, window_days=0)


# user, edge, title, p, then the src_* flags in SOURCES order
# (next_episode, restart, transition, edge_popular, genre, fresh)
SCORED = [
    ("U1", "edge-01", "C4", 0.5, 1, 0, 0, 0, 0, 0),
    ("U1", "edge-01", "C2", 0.5, 0, 0, 0, 1, 1, 1),  # ties C4 on p: C2 first by id
    ("U1", "edge-01", "C1", 0.2, 0, 0, 0, 1, 0, 0),
    ("U1", "edge-01", "C5", 0.1, 0, 0, 0, 0, 0, 1),
    ("U2", "edge-01", "C3", 0.9, 1, 0, 1, 0, 0, 0),
    ("U3", "edge-02", "C1", 0.05, 0, 0, 0, 0, 1, 0),
    ("U3", "edge-02", "C6", 0.3, 0, 0, 0, 0, 0, 1),
]


@pytest.fixture(scope="module")
def scored(spark):
    # flags in reverse order in the frame: the source must follow SOURCES, not column order
    cols = ", ".join(f"src_{s} int" for s in SOURCES)
    df = spark.createDataFrame(SCORED, f"user_id string, edge_id string, content_id string, p double, {cols}")
    return df.select("user_id", "edge_id", "content_id", "p", *[f"src_{s}" for s in reversed(SOURCES)])


def test_rank_users_top_k(scored):
    rows = rank_users(scored, 3).orderBy("user_id").collect()
    assert [(r["user_id"], r["edge_id"], r["content_id"], list(r["ranked"]), list(r["scores"]), r["source"])
            for r in rows] == [
        # U1's top title C2 came from edge_popular, genre and fresh: edge_popular is first in SOURCES
        ("U1", "edge-01", "C2", ["C2", "C4", "C1"], [0.5, 0.5, 0.2], "edge_popular"),
        ("U2", "edge-01", "C3", ["C3"], [0.9], "next_episode"),  # fewer candidates than k
        ("U3", "edge-02", "C6", ["C6", "C1"], [0.3, 0.05], "fresh"),
    ]


def test_rank_users_top1_and_named_probability(scored):
    rows = rank_users(scored.withColumnRenamed("p", "q"), 1, prob="q").orderBy("user_id").collect()
    assert [(r["user_id"], list(r["ranked"]), list(r["scores"]), r["source"]) for r in rows] == [
        ("U1", ["C2"], [0.5], "edge_popular"),
        ("U2", ["C3"], [0.9], "next_episode"),
        ("U3", ["C6"], [0.3], "fresh"),
    ]


def test_rank_users_rejects_zero_k(scored):
    with pytest.raises(ValueError):
        rank_users(scored, 0)
