"""Prediction transforms on the tiny day, checked against a hand computation."""

from __future__ import annotations

import pytest

from edgecache.features import edge_popularity, transitions, user_features
from edgecache.predict import predict_users, prefetch
from tests.tiny import catalog_df, events_df


@pytest.fixture(scope="module")
def feats(spark):
    ev = events_df(spark)
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


def test_top1_is_the_head_of_the_ranking(feats):
    rows = predict_users(*feats, top_k=1).collect()
    assert all(list(r["ranked"]) == [r["content_id"]] for r in rows)
    assert len(rows) == 5


def test_predict_rejects_zero_k(feats):
    with pytest.raises(ValueError):
        predict_users(*feats, top_k=0)


def test_prefetch_within_capacity(spark):
    rows = prefetch(edge_popularity(events_df(spark)), 2).orderBy("edge_id", "rank").collect()
    assert [tuple(r) for r in rows] == [
        ("edge-01", 1, "C1", 3),
        ("edge-01", 2, "C2", 3),
        ("edge-02", 1, "C2", 2),
        ("edge-02", 2, "C1", 1),
    ]


def test_edge_demand_ranks_every_title_seen(spark):
    from edgecache.predict import edge_demand

    rows = edge_demand(edge_popularity(events_df(spark))).orderBy("edge_id", "rank").collect()
    assert [tuple(r) for r in rows] == [
        ("edge-01", "C1", 3.0, 1),
        ("edge-01", "C2", 3.0, 2),
        ("edge-01", "C3", 2.0, 3),
        ("edge-01", "C5", 1.0, 4),
        ("edge-02", "C2", 2.0, 1),
        ("edge-02", "C1", 1.0, 2),
    ]
