"""A tiny hand-made day of events and catalog, small enough to work out results by hand."""

from __future__ import annotations

import datetime as dt

DAY = "2025-04-12"  # the day of EVENTS, and the cutoff the tests build features for

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

# C6 is a movie nobody has watched yet: it comes out on D+1 (2025-04-13).
NEW_TITLES = [("C6", "movie", None, None)]

# genre, release date, size in bytes. As of D+1 = 2025-04-13 the release ages are
# C1 43 days (31 in March + 12), C2 3, C3 2, C4 -7 (not out yet), C5 1, C6 0.
DETAILS = {
    "C1": ("drama", "2025-03-01", 4000),
    "C2": ("comedy", "2025-04-10", 1000),
    "C3": ("comedy", "2025-04-11", 1000),
    "C4": ("comedy", "2025-04-20", 1000),
    "C5": ("drama", "2025-04-12", 3000),
    "C6": ("drama", "2025-04-13", 2000),
}

# Three days, 2025-04-10 .. 2025-04-12 (window 3 at cutoff DAY), plus one event either side
# of the window. C2, C3, C4 are episodes 1-3 of S1 (C4 the last); C1, C5 movies.
MULTI = [
    # user, device, content, time, edge, duration
    ("V1", "TV", "C2", "2025-04-10 10:00", "edge-01", 10),
    ("V1", "TV", "C3", "2025-04-10 11:00", "edge-01", 20),
    ("V1", "Mobile", "C4", "2025-04-12 09:00", "edge-01", 30),
    ("V2", "TV", "C2", "2025-04-09 23:00", "edge-02", 5),  # before the window
    ("V2", "TV", "C3", "2025-04-11 20:00", "edge-02", 40),
    ("V2", "Tablet", "C1", "2025-04-11 21:00", "edge-03", 50),
    ("V2", "TV", "C4", "2025-04-13 00:30", "edge-02", 5),  # after the cutoff
    ("V3", "TV", "C1", "2025-04-12 08:00", "edge-01", 10),
    ("V3", "TV", "C5", "2025-04-12 08:00", "edge-01", 10),  # same second as C1: ties go by id
    ("V4", "TV", "C3", "2025-04-11 12:00", "edge-01", 15),
    ("V4", "TV", "C3", "2025-04-12 12:00", "edge-01", 15),
]

EVENTS_SCHEMA = "user_id string, device string, content_id string, duration bigint, timestamp timestamp, edge_id string"
CATALOG_SCHEMA = (
    "content_id string, kind string, series_id string, episode bigint, genre string, release_date date, "
    "size_bytes bigint"
)


def events_df(spark):
    """EVENTS as raw events (no age_days)."""
    rows = [
        (u, "TV", c, 10, dt.datetime.fromisoformat(f"{DAY} {t}:00"), e) for u, c, t, e in EVENTS
    ]
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


def window_df(spark):
    """EVENTS as the one-day window ending at DAY: every event has age_days 0."""
    from edgecache.pipeline.features import in_window

    return in_window(events_df(spark), DAY, 1)


def catalog_df(spark):
    rows = [
        (c, kind, series, episode, DETAILS[c][0], dt.date.fromisoformat(DETAILS[c][1]), DETAILS[c][2])
        for c, kind, series, episode in CATALOG + NEW_TITLES
    ]
    return spark.createDataFrame(rows, CATALOG_SCHEMA)


def multi_df(spark):
    """MULTI as raw events."""
    rows = [(u, d, c, dur, dt.datetime.fromisoformat(f"{t}:00"), e) for u, d, c, t, e, dur in MULTI]
    return spark.createDataFrame(rows, EVENTS_SCHEMA)
