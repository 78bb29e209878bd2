"""A tiny hand-made day of events and catalog, small enough to work out results by hand."""

from __future__ import annotations

import datetime as dt

EVENTS = [
    # user, content, time (2025-04-12), edge
    ("U1", "C1", "10:00", "edge-01"),
    ("U1", "C2", "11:00", "edge-01"),
    ("U1", "C3", "12:00", "edge-01"),
    ("U2", "C1", "09:00", "edge-01"),
    ("U2", "C2", "09:30", "edge-01"),
    ("U3", "C3", "07:00", "edge-01"),
    ("U3", "C2", "08:00", "edge-02"),
    ("U3", "C2", "09:00", "edge-02"),
    ("U3", "C1", "10:00", "edge-02"),
    ("U4", "C2", "13:00", "edge-01"),
    ("U5", "C5", "05:00", "edge-01"),
    ("U5", "C1", "06:00", "edge-01"),
]

# C2, C3, C4 are episodes 1-3 of series S1; C1 and C5 are movies.
CATALOG = [
    ("C1", "movie", None, None),
    ("C2", "episode", "S1", 1),
    ("C3", "episode", "S1", 2),
    ("C4", "episode", "S1", 3),
    ("C5", "movie", None, None),
]


def events_df(spark):
    rows = [
        (u, "TV", c, 10, dt.datetime.fromisoformat(f"2025-04-12 {t}:00"), e) for u, c, t, e in EVENTS
    ]
    return spark.createDataFrame(
        rows, "user_id string, device string, content_id string, duration bigint, timestamp timestamp, edge_id string"
    )


def catalog_df(spark):
    return spark.createDataFrame(CATALOG, "content_id string, kind string, series_id string, episode bigint")
