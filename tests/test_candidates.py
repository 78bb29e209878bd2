"""Candidates, their features and labels on the tiny day, checked against a hand computation."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from edgecache.pipeline.candidates import (
    FEATURES,
    LOG_FLOOR,
    SOURCES,
    CandidateParams,
    affinity_sql,
    candidate_rows,
    candidates,
    profiles,
    sample_users,
    with_labels,
)
from edgecache.pipeline.features import build_features, title_features
from tests.tiny import DAY, EVENTS_SCHEMA, catalog_df, events_df, multi_df

ln, E = math.log, math.exp
SMALL = CandidateParams(popular=2, transitions=1, genre=1, fresh=2)


@pytest.fixture(scope="module")
def tiny(spark):
    catalog = catalog_df(spark)
    feats = {k: v.cache() for k, v in build_features(events_df(spark), catalog, DAY, 1, 2.0).items()}
    return feats, title_features(catalog, DAY).cache()


@pytest.fixture(scope="module")
def cands(tiny):
    return candidates(*tiny, SMALL).cache()


def flags(rows) -> dict[tuple[str, str], tuple]:
    return {(r["user_id"], r["content_id"]): (r["edge_id"], *(r[f"src_{s}"] for s in SOURCES)) for r in rows}


# Inputs, worked out from tests.tiny (one day, so decayed requests = requests):
#   users: U1 edge-01 last C3; U2 edge-01 last C2; U3 edge-02 last C1; U4 edge-01 last C2;
#          U5 edge-01 last C1. Favourite genre (most views, ties by name): U5 drama, others comedy.
#   next episode (user_series): U1 C4 (not out yet), U2 C3, U3 C3, U4 C3 (U5 watched no series).
#   transitions: edge-01 C1->C2 2, C2->C3 1, C3->C2 1, C5->C1 1; edge-02 C2->C1 1.
#   popularity: edge-01 C1 3, C2 3, C3 2, C5 1; edge-02 C2 2, C1 1.
#   fresh (age 0..7 as of D+1, movie or first episode): C2 (age 3), C5 (1), C6 (0);
#     by requests + launch: edge-01 C2 3.65, C5 1.87, C6 1; edge-02 C2 2.65, C6 1, C5 0.87.
def test_candidates_by_source(cands):
    # edge, next_episode, restart, transition, edge_popular, genre, fresh
    # (C4, U1's next episode, is not out until 2025-04-20: never a candidate; nobody watched
    # a series on two days, so there is no restart candidate)
    assert flags(cands.collect()) == {
        ("U1", "C2"): ("edge-01", 0, 0, 1, 1, 1, 1),  # C3 -> C2; popular #2; comedy #1; fresh #1
        ("U1", "C1"): ("edge-01", 0, 0, 0, 1, 0, 0),
        ("U1", "C5"): ("edge-01", 0, 0, 0, 0, 0, 1),
        ("U2", "C3"): ("edge-01", 1, 0, 1, 0, 0, 0),
        ("U2", "C1"): ("edge-01", 0, 0, 0, 1, 0, 0),
        ("U2", "C2"): ("edge-01", 0, 0, 0, 1, 1, 1),
        ("U2", "C5"): ("edge-01", 0, 0, 0, 0, 0, 1),
        ("U3", "C3"): ("edge-02", 1, 0, 0, 0, 0, 0),  # no transition from C1 at edge-02
        ("U3", "C2"): ("edge-02", 0, 0, 0, 1, 1, 1),
        ("U3", "C1"): ("edge-02", 0, 0, 0, 1, 0, 0),
        ("U3", "C6"): ("edge-02", 0, 0, 0, 0, 0, 1),
        ("U4", "C3"): ("edge-01", 1, 0, 1, 0, 0, 0),
        ("U4", "C1"): ("edge-01", 0, 0, 0, 1, 0, 0),
        ("U4", "C2"): ("edge-01", 0, 0, 0, 1, 1, 1),
        ("U4", "C5"): ("edge-01", 0, 0, 0, 0, 0, 1),
        ("U5", "C2"): ("edge-01", 0, 0, 1, 1, 0, 1),  # C1 -> C2
        ("U5", "C1"): ("edge-01", 0, 0, 0, 1, 1, 0),  # drama's favourite at edge-01
        ("U5", "C5"): ("edge-01", 0, 0, 0, 0, 0, 1),
    }


def test_candidates_respect_the_limits(tiny):
    one = CandidateParams(popular=1, transitions=1, genre=1, fresh=1)
    got = flags(candidates(*tiny, one).where("user_id IN ('U1', 'U3')").collect())
    assert got == {
        ("U1", "C2"): ("edge-01", 0, 0, 1, 0, 1, 1),  # C2 is popular #2 at edge-01 (C1 wins the tie by id)
        ("U1", "C1"): ("edge-01", 0, 0, 0, 1, 0, 0),
        ("U3", "C3"): ("edge-02", 1, 0, 0, 0, 0, 0),
        ("U3", "C2"): ("edge-02", 0, 0, 0, 1, 1, 1),
    }


def test_sample_users_keeps_each_sampled_viewers_candidates_whole(tiny):
    feats, titles = tiny
    sampled, rate = sample_users(feats, 3)
    assert rate == pytest.approx(3 / 5)
    kept = {r["user_id"] for r in sampled["users"].collect()}
    assert kept == {"U1", "U2", "U3"}  # pmod(xxhash64(0, id), 1e6) below 600,000 (U4: 624,474)
    for name in ("user_genres", "user_titles", "user_series"):
        assert {r["user_id"] for r in sampled[name].collect()} <= kept
    assert sampled["popularity"] is feats["popularity"] and sampled["transitions"] is feats["transitions"]
    # per-edge sources see every viewer's history, so a sampled viewer's candidates are unchanged
    whole = flags(candidates(feats, titles, SMALL).collect())
    assert flags(candidates(sampled, titles, SMALL).collect()) == {k: v for k, v in whole.items() if k[0] in kept}


def test_sample_users_no_cut_when_few_viewers(tiny):
    feats, _ = tiny
    assert sample_users(feats, 5) == (feats, 1.0)
    with pytest.raises(ValueError, match="max_users"):
        sample_users(feats, 0)


# Shares for the pooled and personal features (decayed requests, genre from the catalog):
#   all edges: 12 requests; C1 4, C2 5, C3 2, C5 1; drama (C1, C5) 5, comedy (C2, C3) 7.
#   within genre: C1 4/5, C5 1/5, C2 5/7, C3 2/7.
#   edge-01 (9): drama 4/9, comedy 5/9 -> tilt drama (4/9)/(5/12) = 16/15, comedy (5/9)/(7/12) = 20/21.
#   edge-02 (3): comedy 2/3, drama 1/3 -> tilt comedy (2/3)/(7/12) = 8/7, drama (1/3)/(5/12) = 4/5.
# Genre affinity: P(f) is proportional to share_edge(f) x prod over picks (0.5 [g = f] + 0.5 share_edge(g)):
#   U1 (edge-01; drama 1 pick, comedy 1): drama (4/9)(13/18)(5/18), comedy (5/9)(4/18)(14/18)
#       -> 260 : 280 -> drama 13/27, comedy 14/27.
#   U5 (edge-01; drama 2 picks): drama (4/9)(13/18)^2, comedy (5/9)(4/18)^2 -> 676 : 80
#       -> drama 169/189, comedy 20/189.
#   U3 (edge-02; comedy 1 pick, drama 1): comedy (2/3)(5/6)(1/6), drama (1/3)(1/3)(2/3) -> 10 : 8
#       -> comedy 5/9, drama 4/9.
EXPECTED = {
    # U1 saw C2; S1 watched one day (not resumed), today; C3 -> C2 once at edge-01.
    ("U1", "C2"): {
        "next_episode": 0.0, "next_days": 0.0, "next_resumed": 0.0, "series_days": ln(2),
        "series_restart": ln(2), "series_recency": 1.0, "transition": ln(2), "popularity": ln(4), "trend": ln(4) - ln(1 + 3 / 1),
        "pooled": ln(5 / 12 * 20 / 21), "personal": ln(0.5 * 5 / 12 * 20 / 21 + 0.5 * 14 / 27 * 5 / 7),
        "genre_affinity": 14 / 27, "launch": E(-3 / 7), "seen": 1.0, "first_episode": 1.0, "movie": 0.0,
        "activity": ln(1 + 3 / 1),
    },
    # A movie: no series features. U5's last title is C1 itself, so no transition.
    ("U5", "C1"): {
        "next_episode": 0.0, "next_days": 0.0, "next_resumed": 0.0, "series_days": 0.0,
        "series_restart": 0.0, "series_recency": 0.0, "transition": 0.0, "popularity": ln(4), "trend": 0.0,
        "pooled": ln(4 / 12 * 16 / 15), "personal": ln(0.5 * 4 / 12 * 16 / 15 + 0.5 * 169 / 189 * 4 / 5),
        "genre_affinity": 169 / 189, "launch": E(-43 / 7), "seen": 1.0, "first_episode": 0.0, "movie": 1.0,
        "activity": ln(1 + 2 / 1),
    },
    # U3 began S1 mid-way (C3 first); C3 has requests at edge-01 only, none at U3's edge-02.
    ("U3", "C3"): {
        "next_episode": 1.0, "next_days": ln(2), "next_resumed": ln(2), "series_days": 0.0,
        "series_restart": 0.0, "series_recency": 1.0, "transition": 0.0, "popularity": 0.0, "trend": 0.0,
        "pooled": ln(2 / 12 * 8 / 7), "personal": ln(0.5 * 2 / 12 * 8 / 7 + 0.5 * 5 / 9 * 2 / 7),
        "genre_affinity": 5 / 9, "launch": E(-2 / 7), "seen": 1.0, "first_episode": 0.0, "movie": 0.0,
        "activity": ln(1 + 4 / 1),
    },
    # C6 comes out on D+1: no requests anywhere yet.
    ("U3", "C6"): {
        "next_episode": 0.0, "next_days": 0.0, "next_resumed": 0.0, "series_days": 0.0,
        "series_restart": 0.0, "series_recency": 0.0, "transition": 0.0, "popularity": 0.0, "trend": 0.0,
        "pooled": LOG_FLOOR, "personal": LOG_FLOOR,
        "genre_affinity": 4 / 9, "launch": 1.0, "seen": 0.0, "first_episode": 0.0, "movie": 1.0,
        "activity": ln(5),
    },
}


def check_rows(rows, expected):
    got = {(r["user_id"], r["content_id"]): r for r in rows}
    for key, want in expected.items():
        assert key in got, key
        assert set(want) == set(FEATURES)
        for f in FEATURES:
            assert got[key][f] == pytest.approx(want[f], abs=1e-9, rel=0), (key, f)


def test_candidate_features_by_hand(tiny, cands):
    rows = candidate_rows(*tiny, window_days=1, params=SMALL).collect()
    assert len(rows) == 18  # one row per candidate: no join duplicates any
    check_rows(rows, EXPECTED)
    for r in rows:  # never null, always a double
        assert all(isinstance(r[f], float) and math.isfinite(r[f]) for f in FEATURES), r
    # the src_* flags are carried through
    assert {(r["user_id"], r["content_id"]): r["src_fresh"] for r in rows}[("U3", "C6")] == 1


def test_candidate_features_over_a_window(spark):
    """Three days (tests.tiny.MULTI, window 3, decay 2): recency, trend and activity."""
    catalog = catalog_df(spark)
    feats = build_features(multi_df(spark), catalog, DAY, 3, 2.0)
    titles = title_features(catalog, DAY)
    one = CandidateParams(popular=1, transitions=1, genre=1, fresh=1)
    rows = candidate_rows(feats, titles, window_days=3, params=one).collect()
    partial = {
        # (C4, the next episode of V2 and V4, is not out yet: no candidate.)
        # V1 ended S1 on its last episode: the next is C2, already seen, 2 days ago at edge-01.
        ("V1", "C2"): {"next_episode": 1.0, "next_days": ln(3), "next_resumed": ln(2), "series_days": 0.0,
                       "series_restart": 0.0, "series_recency": 1.0,
                       "transition": 0.0, "popularity": ln(1 + E(-1)), "trend": -ln(1 + 1 / 3), "seen": 1.0,
                       "first_episode": 1.0, "launch": E(-3 / 7), "activity": ln(2)},
    }
    got = {(r["user_id"], r["content_id"]): r for r in rows}
    assert ("V4", "C4") not in got and ("V2", "C4") not in got
    for key, want in partial.items():
        assert key in got, key
        for f, v in want.items():
            assert got[key][f] == pytest.approx(v, abs=1e-9, rel=0), (key, f)


def test_with_labels(spark, cands):
    nxt = [("U1", "C4", "08:00"), ("U1", "C2", "09:00"), ("U1", "C2", "10:00"), ("U3", "C9", "11:00"),
           ("U9", "C1", "12:00")]
    next_day = spark.createDataFrame(
        [(u, "TV", c, 10, dt.datetime.fromisoformat(f"2025-04-13 {t}:00"), "edge-01") for u, c, t in nxt],
        EVENTS_SCHEMA)
    rows = with_labels(cands, next_day).collect()
    assert len(rows) == 18  # two views of C2 by U1 still make one row
    positives = sorted((r["user_id"], r["content_id"]) for r in rows if r["label"] == 1.0)
    assert positives == [("U1", "C2")]  # C4 is no candidate: it was not out on D+1
    assert {r["label"] for r in rows} == {0.0, 1.0}
    assert set(rows[0].asDict()) == set(cands.columns) | {"label"}


def test_genre_posterior_closed_form(spark):
    """The favourite-genre posterior of ``profiles``/``affinity_sql`` against the model
    worked by hand, where it must not overflow, and for viewers with no usable picks."""
    users = spark.createDataFrame(
        [(u, "edge-01", "C1", 1) for u in ("A", "B", "D", "N")],
        "user_id string, edge_id string, last_content_id string, watch_count bigint")
    user_genres = spark.createDataFrame(
        [("A", "comedy", 5000, 5000), ("B", "scifi", 3, 3), ("D", "comedy", 2, 2)],
        "user_id string, genre string, views bigint, picks bigint")
    edge_genre = spark.createDataFrame([("edge-01", "comedy", 0.25), ("edge-01", "drama", 0.75)],
                                       "edge_id string, genre string, share double")
    feats = {
        "users": users, "user_genres": user_genres,
        "user_series": spark.createDataFrame([], "user_id string, series_id string, days_watched bigint, "
                                                 "resumed_days bigint, last_age_days int, next_content_id string"),
        "user_titles": spark.createDataFrame([], "user_id string, content_id string"),
    }
    titles = spark.createDataFrame([], "content_id string, series_id string, is_first_episode boolean")
    genres = spark.createDataFrame([("comedy",), ("drama",), ("scifi",)], "genre string")
    rows = spark.sql(
        f"""
        SELECT p.user_id, g.genre, {affinity_sql("p", "g.genre", "eg.share")} AS a
        FROM {{profile}} p CROSS JOIN {{genres}} g
        LEFT JOIN {{edge_genre}} eg ON eg.edge_id = p.edge_id AND eg.genre = g.genre
        """,
        profile=profiles(feats, titles, edge_genre), genres=genres, edge_genre=edge_genre,
    ).collect()
    got = {(r["user_id"], r["genre"]): r["a"] for r in rows}
    # D picked comedy twice: weights 0.25 x (1.25 / 0.25)^2 = 6.25 and 0.75 (drama)
    assert got[("D", "comedy")] == pytest.approx(6.25 / 7, abs=1e-12)
    assert got[("D", "drama")] == pytest.approx(0.75 / 7, abs=1e-12)
    # A's 5000 picks would overflow a plain product; the posterior is still a distribution
    assert got[("A", "comedy")] == pytest.approx(1.0, abs=1e-12) and 0.0 <= got[("A", "drama")] < 1e-12
    # B's only genre is unknown at the edge: the edge's taste alone (the prior)
    assert (got[("B", "comedy")], got[("B", "drama")]) == pytest.approx((0.25, 0.75), abs=1e-12)
    # no genre outside the edge's, and nothing for a viewer with no genre history
    assert got[("A", "scifi")] == got[("B", "scifi")] == got[("D", "scifi")] == 0.0
    assert {got[("N", g)] for g in ("comedy", "drama", "scifi")} == {0.0}
