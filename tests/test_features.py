"""Feature transforms on tiny inputs, checked row by row against a hand computation."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from edgecache.pipeline.features import (
    FEATURE_TABLES,
    build_features,
    edge_popularity,
    in_window,
    title_features,
    transitions,
    user_features,
    user_genres,
    user_series,
    user_titles,
)
from edgecache.layout import shift_day
from tests.tiny import DAY, MULTI, catalog_df, multi_df, window_df

E = math.exp



def at(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{s}:00")


@pytest.fixture(scope="module")
def multi(spark):
    assert len(MULTI) == 11
    return multi_df(spark)


@pytest.fixture(scope="module")
def multi_window(multi):
    return in_window(multi, DAY, 3).cache()


@pytest.fixture(scope="module")
def tiny(spark):
    return window_df(spark).cache()


# --- in_window ---------------------------------------------------------------------------


def test_in_window_keeps_the_window_and_adds_age(multi_window):
    rows = sorted((r["user_id"], r["content_id"], r["timestamp"], r["age_days"]) for r in multi_window.collect())
    assert rows == [
        ("V1", "C2", at("2025-04-10 10:00"), 2),
        ("V1", "C3", at("2025-04-10 11:00"), 2),
        ("V1", "C4", at("2025-04-12 09:00"), 0),
        ("V2", "C1", at("2025-04-11 21:00"), 1),
        ("V2", "C3", at("2025-04-11 20:00"), 1),
        ("V3", "C1", at("2025-04-12 08:00"), 0),
        ("V3", "C5", at("2025-04-12 08:00"), 0),
        ("V4", "C3", at("2025-04-11 12:00"), 1),
        ("V4", "C3", at("2025-04-12 12:00"), 0),
    ]


def test_in_window_of_one_day(multi):
    rows = in_window(multi, "2025-04-11", 1).collect()
    assert sorted((r["user_id"], r["content_id"], r["age_days"]) for r in rows) == [
        ("V2", "C1", 0), ("V2", "C3", 0), ("V4", "C3", 0),
    ]


def test_the_day_before_and_after_cross_months_years_and_leap_days():
    assert shift_day("2024-03-01", -1) == "2024-02-29" and shift_day("2025-03-01", -1) == "2025-02-28"
    assert shift_day("2025-12-31", 1) == "2026-01-01" and shift_day("2025-04-11", 0) == "2025-04-11"


def test_in_window_rejects_an_empty_window(multi):
    with pytest.raises(ValueError):
        in_window(multi, DAY, 0)


# --- user_features -----------------------------------------------------------------------


def test_user_features(tiny):
    rows = user_features(tiny).orderBy("user_id").collect()
    t = lambda s: at(f"{DAY} {s}")  # noqa: E731
    assert [tuple(r)[:-1] for r in rows] == [
        # user, home edge, watches, distinct titles, minutes, days active, last age, last title, last watched
        ("U1", "edge-01", 3, 3, 30, 1, 0, "C3", t("12:00")),
        ("U2", "edge-01", 2, 2, 20, 1, 0, "C2", t("09:30")),
        ("U3", "edge-02", 4, 3, 40, 1, 0, "C1", t("10:00")),  # 3 of 4 views at edge-02
        ("U4", "edge-01", 1, 1, 10, 1, 0, "C2", t("13:00")),
        ("U5", "edge-01", 2, 2, 20, 1, 0, "C1", t("06:00")),
    ]
    assert all(r["device_mix"] == {"TV": 1.0} for r in rows)


def test_user_features_over_days(multi_window):
    rows = {r["user_id"]: r.asDict() for r in user_features(multi_window).collect()}
    assert sorted(rows) == ["V1", "V2", "V3", "V4"]
    got = {u: (r["edge_id"], r["watch_count"], r["distinct_titles"], r["minutes_watched"], r["days_active"],
               r["last_age_days"], r["last_content_id"], r["last_watched_at"]) for u, r in rows.items()}
    assert got == {
        "V1": ("edge-01", 3, 3, 60, 2, 0, "C4", at("2025-04-12 09:00")),
        # one view at edge-02, one at edge-03: the tie goes to the smaller id; the two
        # events outside the window count for nothing
        "V2": ("edge-02", 2, 2, 90, 1, 1, "C1", at("2025-04-11 21:00")),
        # C1 and C5 at the same second: the larger id counts as the later one
        "V3": ("edge-01", 2, 2, 20, 1, 0, "C5", at("2025-04-12 08:00")),
        "V4": ("edge-01", 2, 1, 30, 2, 0, "C3", at("2025-04-12 12:00")),
    }
    assert rows["V1"]["device_mix"] == pytest.approx({"Mobile": 1 / 3, "TV": 2 / 3}, abs=1e-12)
    assert rows["V2"]["device_mix"] == pytest.approx({"TV": 0.5, "Tablet": 0.5}, abs=1e-12)
    assert rows["V4"]["device_mix"] == {"TV": 1.0}


def test_a_viewer_who_moves_is_at_home_where_they_watch_now(spark):
    """The home edge is the most frequent one on the last active day, not over the window:
    three days at edge-01, then one view at a new edge, make the new edge home."""
    from tests.tiny import EVENTS_SCHEMA

    views = [("M1", "2025-04-10 10:00", "edge-01"), ("M1", "2025-04-10 11:00", "edge-01"),
             ("M1", "2025-04-11 10:00", "edge-01"), ("M1", "2025-04-12 07:00", "edge-09"),
             # the last day split evenly: the smaller id
             ("M2", "2025-04-11 10:00", "edge-01"), ("M2", "2025-04-12 10:00", "edge-07"),
             ("M2", "2025-04-12 11:00", "edge-03"), ("M2", "2025-04-12 12:00", "edge-07"),
             ("M2", "2025-04-12 13:00", "edge-03")]
    rows = [(u, "TV", "C1", 10, dt.datetime.fromisoformat(f"{t}:00"), e) for u, t, e in views]
    got = user_features(in_window(spark.createDataFrame(rows, EVENTS_SCHEMA), DAY, 3)).collect()
    assert {r["user_id"]: r["edge_id"] for r in got} == {"M1": "edge-09", "M2": "edge-03"}


# --- user_genres, user_titles, user_series ------------------------------------------------


def test_user_genres(tiny, spark):
    rows = user_genres(tiny, catalog_df(spark)).orderBy("user_id", "genre").collect()
    assert [tuple(r)[:4] for r in rows] == [
        # user, genre, views, picks: a series on one day is one pick
        ("U1", "comedy", 2, 1),  # C2 and C3 of S1 on the same day
        ("U1", "drama", 1, 1),
        ("U2", "comedy", 1, 1),
        ("U2", "drama", 1, 1),
        ("U3", "comedy", 3, 1),  # C3, C2, C2: all S1, one day
        ("U3", "drama", 1, 1),
        ("U4", "comedy", 1, 1),
        ("U5", "drama", 2, 2),  # two different movies
    ]
    shares = [r["share"] for r in rows]
    assert shares == pytest.approx([2 / 3, 1 / 3, 0.5, 0.5, 0.75, 0.25, 1.0, 1.0], abs=1e-12)


def test_user_genres_counts_a_series_once_a_day(multi_window, spark):
    rows = user_genres(multi_window, catalog_df(spark)).orderBy("user_id", "genre").collect()
    assert [(r["user_id"], r["genre"], r["views"], r["picks"]) for r in rows] == [
        ("V1", "comedy", 3, 2),  # S1 on two days (ages 2 and 0)
        ("V2", "comedy", 1, 1),
        ("V2", "drama", 1, 1),
        ("V3", "drama", 2, 2),
        ("V4", "comedy", 2, 2),  # C3 on two days
    ]
    assert [r["share"] for r in rows] == pytest.approx([1.0, 0.5, 0.5, 1.0, 1.0], abs=1e-12)


def test_user_titles(multi_window):
    rows = user_titles(multi_window).orderBy("user_id", "content_id").collect()
    assert [tuple(r) for r in rows] == [
        # user, title, views, days since the last view
        ("V1", "C2", 1, 2),
        ("V1", "C3", 1, 2),
        ("V1", "C4", 1, 0),
        ("V2", "C1", 1, 1),
        ("V2", "C3", 1, 1),
        ("V3", "C1", 1, 0),
        ("V3", "C5", 1, 0),
        ("V4", "C3", 2, 0),
    ]


def test_user_series(tiny, spark):
    rows = user_series(tiny, catalog_df(spark)).orderBy("user_id").collect()
    assert [tuple(r) for r in rows] == [
        # user, series, days, resumed days, views, last age, last episode, next episode
        ("U1", "S1", 1, 0, 2, 0, 2, "C4"),  # C2 then C3
        ("U2", "S1", 1, 0, 1, 0, 1, "C3"),
        # C3 (07:00) then C2 twice: the day began mid-series, and ended on episode 1
        ("U3", "S1", 1, 1, 3, 0, 1, "C3"),
        ("U4", "S1", 1, 0, 1, 0, 1, "C3"),
        # U5 watched only movies
    ]


def test_user_series_over_days_wraps_after_the_last_episode(multi_window, spark):
    rows = user_series(multi_window, catalog_df(spark)).orderBy("user_id").collect()
    assert [tuple(r) for r in rows] == [
        # V1: day 2 ago began at episode 1, today began at 3 (resumed); ended on the last
        # episode (3 of 3), so the next is episode 1 again
        ("V1", "S1", 2, 1, 3, 0, 3, "C2"),
        # V2: only C3 is in the window (C2 before it, C4 after it)
        ("V2", "S1", 1, 1, 1, 1, 2, "C4"),
        # V4: C3 on two days, each a resumption
        ("V4", "S1", 2, 2, 2, 0, 2, "C4"),
    ]


# --- transitions --------------------------------------------------------------------------


def test_transitions(tiny):
    rows = transitions(tiny).orderBy("edge_id", "from_content_id", "to_content_id").collect()
    assert [tuple(r) for r in rows] == [
        ("edge-01", "C1", "C2", 2),
        ("edge-01", "C2", "C3", 1),
        ("edge-01", "C3", "C2", 1),  # U3 moved edges between the two views: counted at the first
        ("edge-01", "C5", "C1", 1),
        ("edge-02", "C2", "C1", 1),  # the C2 -> C2 repeat is not a transition
    ]


def test_transitions_over_days(multi_window):
    rows = transitions(multi_window).orderBy("edge_id", "from_content_id", "to_content_id").collect()
    assert [tuple(r) for r in rows] == [
        ("edge-01", "C1", "C5", 1),  # V3: same second, ordered by id
        ("edge-01", "C2", "C3", 1),
        ("edge-01", "C3", "C4", 1),
        ("edge-02", "C3", "C1", 1),  # V2's C2 before the window starts no step
    ]


# --- edge_popularity ----------------------------------------------------------------------


def test_edge_popularity(tiny):
    rows = edge_popularity(tiny).orderBy("edge_id", "rank").collect()
    # One day, age 0: decayed = requests. Edge totals 9 (edge-01) and 3 (edge-02); over
    # all edges C1 4, C2 5, C3 2, C5 1 of 12. regional = (edge share) / (global share).
    assert [tuple(r)[:7] for r in rows] == [
        # edge, title, requests, rank, decayed, last day, global decayed
        ("edge-01", "C1", 3, 1, 3.0, 3, 4.0),  # tie with C2 broken by id
        ("edge-01", "C2", 3, 2, 3.0, 3, 5.0),
        ("edge-01", "C3", 2, 3, 2.0, 2, 2.0),
        ("edge-01", "C5", 1, 4, 1.0, 1, 1.0),
        ("edge-02", "C2", 2, 1, 2.0, 2, 5.0),
        ("edge-02", "C1", 1, 2, 1.0, 1, 4.0),
    ]
    regional = [r["regional_share"] for r in rows]
    assert regional == pytest.approx(
        [(3 / 9) / (4 / 12), (3 / 9) / (5 / 12), (2 / 9) / (2 / 12), (1 / 9) / (1 / 12),
         (2 / 3) / (5 / 12), (1 / 3) / (4 / 12)], abs=1e-12)


def test_edge_popularity_decays_by_age(multi_window):
    rows = edge_popularity(multi_window, decay_days=2.0).orderBy("edge_id", "rank").collect()
    c3 = E(-1) + E(-0.5) + 1  # edge-01's C3: ages 2, 1, 0 -> exp(-age / 2)
    expected = [
        # edge, title, requests, rank, decayed, last day, global decayed
        ("edge-01", "C3", 3, 1, c3, 1, c3 + E(-0.5)),  # plus V2's view at edge-02
        ("edge-01", "C1", 1, 2, 1.0, 1, 1.0 + E(-0.5)),  # plus V2's view at edge-03
        ("edge-01", "C2", 1, 3, E(-1), 0, E(-1)),
        ("edge-01", "C4", 1, 4, 1.0, 1, 1.0),
        ("edge-01", "C5", 1, 5, 1.0, 1, 1.0),
        ("edge-02", "C3", 1, 1, E(-0.5), 0, c3 + E(-0.5)),
        ("edge-03", "C1", 1, 1, E(-0.5), 0, 1.0 + E(-0.5)),
    ]
    assert [tuple(r)[:4] + (r["requests_last_day"],) for r in rows] == [e[:4] + (e[5],) for e in expected]
    for r, e in zip(rows, expected):
        assert r["requests_decayed"] == pytest.approx(e[4], abs=1e-9)
        assert r["global_decayed"] == pytest.approx(e[6], abs=1e-9)
    edge_total = {"edge-01": c3 + 3 + E(-1), "edge-02": E(-0.5), "edge-03": E(-0.5)}
    all_total = sum(edge_total.values())
    for r, e in zip(rows, expected):
        want = (e[4] / edge_total[e[0]]) / (e[6] / all_total)
        assert r["regional_share"] == pytest.approx(want, abs=1e-9)


def test_edge_popularity_clips_each_viewers_part_at_each_edge(spark):
    """``requests_decayed_clipped``: a viewer's decayed requests per title at one edge, scaled
    to an L2 norm of at most the clip, summed; a viewer within the clip counts whole."""
    rows = (
        [("edge-01", "A", "C1", 0)] * 4  # norm 4: halved at clip 2
        + [("edge-01", "B", "C1", 0), ("edge-01", "B", "C2", 0)]  # norm sqrt(2): whole
        + [("edge-02", "A", "C2", 0)] * 3  # the same viewer at another edge, clipped there: 3 -> 2
        + [("edge-02", "B", "C2", 2)]  # decayed e^-1
    )
    events = spark.createDataFrame(rows, "edge_id string, user_id string, content_id string, age_days int")
    got = {
        (r["edge_id"], r["content_id"]): (r["requests_decayed"], r["requests_decayed_clipped"])
        for r in edge_popularity(events, decay_days=2.0, viewer_clip=2.0).collect()
    }
    assert got == {
        ("edge-01", "C1"): (5.0, pytest.approx(3.0)),
        ("edge-01", "C2"): (1.0, pytest.approx(1.0)),
        ("edge-02", "C2"): (pytest.approx(3 + E(-1)), pytest.approx(2 + E(-1))),
    }
    unclipped = edge_popularity(events, decay_days=2.0, viewer_clip=100.0).collect()
    assert all(r["requests_decayed_clipped"] == pytest.approx(r["requests_decayed"]) for r in unclipped)
    with pytest.raises(ValueError):
        edge_popularity(events, viewer_clip=0)


def test_edge_popularity_rejects_a_non_positive_decay(multi_window):
    with pytest.raises(ValueError):
        edge_popularity(multi_window, decay_days=0)


# --- title_features -----------------------------------------------------------------------


def test_title_features_as_of_the_next_day(spark):
    rows = title_features(catalog_df(spark), DAY).orderBy("content_id").collect()
    got = [(r["content_id"], r["release_age_days"], r["is_movie"], r["is_first_episode"], r["size_bytes"],
            r["genre"]) for r in rows]
    assert got == [
        # ages as of D+1 = 2025-04-13
        ("C1", 43, True, False, 4000, "drama"),  # 2025-03-01: 31 days of March + 12
        ("C2", 3, False, True, 1000, "comedy"),
        ("C3", 2, False, False, 1000, "comedy"),
        ("C4", -7, False, False, 1000, "comedy"),  # out on 2025-04-20
        ("C5", 1, True, False, 3000, "drama"),
        ("C6", 0, True, False, 2000, "drama"),  # out on D+1 itself
    ]
    launch = [r["launch"] for r in rows]
    assert launch == pytest.approx([E(-43 / 7), E(-3 / 7), E(-2 / 7), 0.0, E(-1 / 7), 1.0], abs=1e-12)


def test_title_features_moves_with_the_cutoff(spark):
    rows = {r["content_id"]: r for r in title_features(catalog_df(spark), "2025-04-19").collect()}
    assert rows["C4"]["release_age_days"] == 0 and rows["C4"]["launch"] == pytest.approx(1.0)
    assert rows["C6"]["release_age_days"] == 7 and rows["C6"]["launch"] == pytest.approx(E(-1.0))


# --- build_features -----------------------------------------------------------------------


def test_build_features_uses_only_the_window(multi, multi_window, spark):
    catalog = catalog_df(spark)
    feats = build_features(multi, catalog, DAY, window_days=3, decay_days=2.0)
    assert tuple(feats) == FEATURE_TABLES
    users = {r["user_id"]: r["watch_count"] for r in feats["users"].collect()}
    assert users == {"V1": 3, "V2": 2, "V3": 2, "V4": 2}  # V2's two events outside the window dropped
    for name, want in {
        "user_titles": user_titles(multi_window),
        "user_series": user_series(multi_window, catalog),
        "transitions": transitions(multi_window),
        "popularity": edge_popularity(multi_window, 2.0),
        "user_genres": user_genres(multi_window, catalog),
    }.items():
        assert sorted(map(tuple, feats[name].collect())) == sorted(map(tuple, want.collect())), name
    # A shorter window at the same cutoff sees only the last day.
    short = build_features(multi, catalog, DAY, window_days=1, decay_days=2.0)
    assert sorted(r["user_id"] for r in short["users"].collect()) == ["V1", "V3", "V4"]
