"""Feature transforms on a tiny day, checked row by row against a hand computation."""

from __future__ import annotations

import datetime as dt

from edgecache.features import edge_popularity, transitions, user_features
from tests.tiny import events_df


def test_user_features(spark):
    rows = user_features(events_df(spark)).orderBy("user_id").collect()
    at = lambda t: dt.datetime.fromisoformat(f"2025-04-12 {t}:00")  # noqa: E731
    assert [tuple(r) for r in rows] == [
        # user, home edge, watches, distinct titles, minutes, last title, last watched
        ("U1", "edge-01", 3, 3, 30, "C3", at("12:00")),
        ("U2", "edge-01", 2, 2, 20, "C2", at("09:30")),
        ("U3", "edge-02", 4, 3, 40, "C1", at("10:00")),  # 3 of 4 views at edge-02
        ("U4", "edge-01", 1, 1, 10, "C2", at("13:00")),
        ("U5", "edge-01", 2, 2, 20, "C1", at("06:00")),
    ]


def test_transitions(spark):
    rows = transitions(events_df(spark)).orderBy("edge_id", "from_content_id", "to_content_id").collect()
    assert [tuple(r) for r in rows] == [
        ("edge-01", "C1", "C2", 2),
        ("edge-01", "C2", "C3", 1),
        ("edge-01", "C3", "C2", 1),  # U3 moved edges between the two views: counted at the first
        ("edge-01", "C5", "C1", 1),
        ("edge-02", "C2", "C1", 1),  # the C2 -> C2 repeat is not a transition
    ]


def test_edge_popularity(spark):
    rows = edge_popularity(events_df(spark)).orderBy("edge_id", "rank").collect()
    assert [tuple(r) for r in rows] == [
        ("edge-01", "C1", 3, 1),  # tie with C2 broken by id
        ("edge-01", "C2", 3, 2),
        ("edge-01", "C3", 2, 3),
        ("edge-01", "C5", 1, 4),
        ("edge-02", "C2", 2, 1),
        ("edge-02", "C1", 1, 2),
    ]
