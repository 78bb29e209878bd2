"""Per-edge demand rows, labels, ranking, the prefetch set and fill traffic, checked by hand."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from edgecache.pipeline.demand import (
    DEMAND_FEATURES,
    demand_rows,
    fill_traffic,
    prefetch,
    rank_demand,
    release_day_rows,
    viewers,
    with_releases,
    with_request_counts,
)
from edgecache.pipeline.features import edge_popularity, title_features
from tests.tiny import DAY, EVENTS_SCHEMA, catalog_df, multi_df, window_df

ln, E = math.log, math.exp


@pytest.fixture(scope="module")
def inputs(spark):
    return edge_popularity(window_df(spark)).cache(), title_features(catalog_df(spark), DAY).cache()


@pytest.fixture(scope="module")
def expected_viewers(spark):
    scored = spark.createDataFrame(
        [("U1", "edge-01", "C2", 0.5), ("U2", "edge-01", "C2", 0.25), ("U1", "edge-01", "C4", 0.5),
         ("U3", "edge-02", "C3", 0.75)],
        "user_id string, edge_id string, content_id string, p double")
    return viewers(scored)


def test_viewers_sums_probabilities(expected_viewers):
    rows = sorted(tuple(r) for r in expected_viewers.collect())
    assert rows == [("edge-01", "C2", 0.75), ("edge-01", "C4", 0.5), ("edge-02", "C3", 0.75)]



def test_viewers_scales_a_sample_up(spark):
    scored = spark.createDataFrame([("U1", "edge-01", "C2", 0.5), ("U2", "edge-01", "C2", 0.25)],
                                   "user_id string, edge_id string, content_id string, p double")
    assert [tuple(r) for r in viewers(scored, rate=0.25).collect()] == [("edge-01", "C2", 3.0)]


def test_demand_rows_by_hand(inputs, expected_viewers):
    popularity, titles = inputs
    rows = demand_rows(popularity, titles, expected_viewers).collect()
    got = {(r["edge_id"], r["content_id"]): (r["size_bytes"], *(r[f] for f in DEMAND_FEATURES)) for r in rows}
    # Keys: titles seen at the edge, titles with expected viewers (C4 is not out by D+1, so
    # it is dropped) and every release of the week (C2, C3, C5, C6, ages 3, 2, 1, 0).
    # global = ln(1 + decayed requests over all edges / 2 edges): C1 4, C2 5, C3 2, C5 1.
    expected = {
        # size, popularity, last_day, viewers, global, launch, new_release, first_episode, movie
        ("edge-01", "C1"): (4000, ln(4), ln(4), 0.0, ln(3), E(-43 / 7), 0.0, 0.0, 1.0),
        ("edge-01", "C2"): (1000, ln(4), ln(4), ln(1.75), ln(3.5), E(-3 / 7), 0.0, 1.0, 0.0),
        ("edge-01", "C3"): (1000, ln(3), ln(3), 0.0, ln(2), E(-2 / 7), 0.0, 0.0, 0.0),
        ("edge-01", "C5"): (3000, ln(2), ln(2), 0.0, ln(1.5), E(-1 / 7), 0.0, 0.0, 1.0),
        ("edge-01", "C6"): (2000, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0),
        ("edge-02", "C1"): (4000, ln(2), ln(2), 0.0, ln(3), E(-43 / 7), 0.0, 0.0, 1.0),
        ("edge-02", "C2"): (1000, ln(3), ln(3), 0.0, ln(3.5), E(-3 / 7), 0.0, 1.0, 0.0),
        ("edge-02", "C3"): (1000, 0.0, 0.0, ln(1.75), ln(2), E(-2 / 7), 0.0, 0.0, 0.0),
        ("edge-02", "C5"): (3000, 0.0, 0.0, 0.0, ln(1.5), E(-1 / 7), 0.0, 0.0, 1.0),
        ("edge-02", "C6"): (2000, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0),
    }
    assert len(rows) == len(expected)
    assert sorted(got) == sorted(expected)
    for key, want in expected.items():
        assert got[key][0] == want[0], key
        assert got[key][1:] == pytest.approx(want[1:], abs=1e-9, rel=0), key


def test_an_opening_edge_gets_every_title_with_the_service_wide_figures_only(inputs, expected_viewers, spark):
    """An edge that opens tomorrow (no logs): a row per title out by D+1, with the totals over
    the other edges and the title's own features; nothing of its own. An edge that already
    has logs is not opened again; supplied totals replace the pooled ones."""
    popularity, titles = inputs
    rows = demand_rows(popularity, titles, expected_viewers, opening=["edge-09", "edge-01"]).collect()
    new = {r["content_id"]: r for r in rows if r["edge_id"] == "edge-09"}
    assert sorted(new) == ["C1", "C2", "C3", "C5", "C6"]  # C4 is not out by D+1
    assert all(r["popularity"] == r["last_day"] == r["viewers"] == 0.0 for r in new.values())
    assert new["C2"]["global"] == pytest.approx(ln(3.5)) and new["C6"]["new_release"] == 1.0
    assert len(rows) - len(new) == 10  # the served edges' rows as without it
    totals = spark.createDataFrame([("C1", 8.0)], "content_id string, global_decayed double")
    got = {(r["edge_id"], r["content_id"]): r["global"] for r in demand_rows(popularity, titles, expected_viewers,
                                                                             totals).collect()}
    assert got[("edge-01", "C1")] == pytest.approx(ln(5)) and got[("edge-01", "C2")] == 0.0  # 8 / 2 edges


def test_a_young_edge_gets_every_title_beside_its_own_figures(inputs, expected_viewers):
    """An edge that opened today (``young``): a row for every title out by D+1, also one it
    has not served and that is no longer fresh, with its own figures where it has them. The
    other edges keep only their own keys."""
    popularity, titles = inputs
    # edge-02 has not served C1 (43 days old), so without being young it gets no C1 row
    served = popularity.where("NOT (edge_id = 'edge-02' AND content_id = 'C1')")
    keys = {(r["edge_id"], r["content_id"]) for r in demand_rows(served, titles, expected_viewers).collect()}
    assert ("edge-02", "C1") not in keys and ("edge-01", "C1") in keys
    rows = {(r["edge_id"], r["content_id"]): r for r in
            demand_rows(served, titles, expected_viewers, young=["edge-02"]).collect()}
    assert set(rows) == keys | {("edge-02", "C1")}
    assert rows[("edge-02", "C1")]["popularity"] == 0.0 and rows[("edge-02", "C1")]["global"] == pytest.approx(ln(3))
    assert rows[("edge-02", "C2")]["popularity"] == pytest.approx(ln(3))  # its own figures kept


def test_with_request_counts(spark, inputs, expected_viewers):
    rows = demand_rows(*inputs, expected_viewers)
    nxt = [("edge-01", "C2"), ("edge-01", "C2"), ("edge-01", "C6"), ("edge-02", "C3"), ("edge-02", "C9")]
    next_day = spark.createDataFrame(
        [("U1", "TV", c, 10, dt.datetime(2025, 4, 13, 9, i), e) for i, (e, c) in enumerate(nxt)], EVENTS_SCHEMA)
    labelled = {(r["edge_id"], r["content_id"]): r["label"] for r in with_request_counts(rows, next_day).collect()}
    assert len(labelled) == 10  # C9 has no demand row and adds none
    assert {k: v for k, v in labelled.items() if v} == {
        ("edge-01", "C2"): 2.0, ("edge-01", "C6"): 1.0, ("edge-02", "C3"): 1.0}


def test_release_day_rows_by_hand(spark, inputs, expected_viewers):
    """Each title on the day it came out, at every edge that served requests that day, with
    no history and its requests that day as the label (0 where the edge served none)."""
    events = multi_df(spark).selectExpr("edge_id", "content_id", "to_date(timestamp) AS day")
    rows = release_day_rows(events, catalog_df(spark))
    got = {(r["edge_id"], r["content_id"]): (r["size_bytes"], r["first_episode"], r["movie"], r["label"])
           for r in rows.collect()}
    # C2 came out on 04-10 (edge-01 served that day), C3 on 04-11 (edge-01, -02 and -03 did),
    # C5 on 04-12 (edge-01), C6 on 04-13 (edge-02's event after midnight); C1 and C4 on no day
    # with events.
    assert got == {
        ("edge-01", "C2"): (1000, 1.0, 0.0, 1.0),
        ("edge-01", "C3"): (1000, 0.0, 0.0, 1.0),
        ("edge-02", "C3"): (1000, 0.0, 0.0, 1.0),
        ("edge-03", "C3"): (1000, 0.0, 0.0, 0.0),
        ("edge-01", "C5"): (3000, 0.0, 1.0, 1.0),
        ("edge-02", "C6"): (2000, 0.0, 1.0, 0.0),
    }
    for r in rows.collect():
        assert (r["popularity"], r["last_day"], r["viewers"], r["global"]) == (0.0, 0.0, 0.0, 0.0)
        assert r["launch"] == r["new_release"] == 1.0
    # the rows a model trains on beside the day's own
    labelled = with_request_counts(demand_rows(*inputs, expected_viewers), events.drop("day"))
    assert labelled.unionByName(rows).count() == 10 + 6


def test_with_releases_puts_the_learned_figures_for_releases_on_the_baselines_scale(spark):
    """A baseline's rows stay as they are; each release of the next day gets the learned score
    divided by the edge's learned-to-baseline ratio over the titles both score, in place of
    any baseline row for it. An edge the baseline does not rank gets nothing."""
    baseline = spark.createDataFrame(
        [("e1", "A", 10.0, 100), ("e1", "B", 5.0, 100), ("e2", "A", 4.0, 100), ("e2", "R", 7.0, 100)],
        "edge_id string, content_id string, score double, size_bytes bigint")
    learned = spark.createDataFrame(
        [("e1", "A", 2.0, 0.0, 100), ("e1", "B", 1.0, 0.0, 100), ("e1", "R", 6.0, 1.0, 100),
         ("e2", "A", 2.0, 0.0, 100), ("e2", "R", 1.0, 1.0, 100), ("e3", "R", 3.0, 1.0, 100)],
        "edge_id string, content_id string, score double, new_release double, size_bytes bigint")
    got = {(r["edge_id"], r["content_id"]): (r["score"], r["rank"]) for r in with_releases(baseline, learned).collect()}
    # e1: the learned total over A and B is 3 against 15, so R's 6 reads as 30 on the
    # baseline's scale; e2: 2 against 4 (R's own baseline row is not counted), R reads as 2.
    assert got == {("e1", "R"): (pytest.approx(30.0), 1), ("e1", "A"): (10.0, 2), ("e1", "B"): (5.0, 3),
                   ("e2", "A"): (4.0, 1), ("e2", "R"): (pytest.approx(2.0), 2)}
    # no releases: the baseline's ranking unchanged
    plain = with_releases(baseline, learned.where("new_release = 0"))
    assert sorted(map(tuple, plain.select("edge_id", "content_id", "score").collect())) == sorted(
        map(tuple, baseline.select("edge_id", "content_id", "score").collect()))


@pytest.fixture(scope="module")
def demand(spark):
    # score per byte: B 0.18, A 0.1, C 0.1 (A before C by id), D 0.005; E has no expected requests
    return spark.createDataFrame(
        [("edge-01", "A", 10.0, 100), ("edge-01", "B", 9.0, 50), ("edge-01", "C", 1.0, 10),
         ("edge-01", "D", 5.0, 1000), ("edge-01", "E", 0.0, 1), ("edge-02", "X", 2.0, 10)],
        "edge_id string, content_id string, score double, size_bytes bigint")


def test_rank_demand(demand):
    rows = rank_demand(demand).orderBy("edge_id", "rank").collect()
    assert [tuple(r) for r in rows] == [
        ("edge-01", "A", 10.0, 1, 100),
        ("edge-01", "B", 9.0, 2, 50),
        ("edge-01", "D", 5.0, 3, 1000),
        ("edge-01", "C", 1.0, 4, 10),
        ("edge-01", "E", 0.0, 5, 1),
        ("edge-02", "X", 2.0, 1, 10),
    ]


def fetched(demand, capacity):
    return [tuple(r) for r in prefetch(demand, capacity).orderBy("edge_id", "rank").collect()]


def test_prefetch_greedy_by_score_per_byte(demand):
    assert fetched(demand, 160) == [
        # edge, rank (by score per byte), title, score, size
        ("edge-01", 1, "B", 9.0, 50),
        ("edge-01", 2, "A", 10.0, 100),
        ("edge-01", 3, "C", 1.0, 10),  # 160 bytes exactly: it fits
        ("edge-02", 1, "X", 2.0, 10),
    ]


def test_prefetch_stops_at_the_first_title_that_does_not_fit(demand):
    # B (50) fits, A would make 150 > 149: the set ends there, though C (10) would fit
    assert fetched(demand, 149) == [("edge-01", 1, "B", 9.0, 50), ("edge-02", 1, "X", 2.0, 10)]
    # D, and E (no expected requests), never come in, even with room to spare
    assert [r[2] for r in fetched(demand, 10**9)] == ["B", "A", "C", "D", "X"]


def test_prefetch_capacity_zero_and_negative(demand):
    assert fetched(demand, 0) == []
    with pytest.raises(ValueError):
        prefetch(demand, -1)


def test_fill_traffic(spark):
    schema = "edge_id string, rank int, content_id string, score double, size_bytes bigint"
    today = spark.createDataFrame(
        [("edge-01", 1, "A", 3.0, 100), ("edge-01", 2, "B", 2.0, 50), ("edge-02", 1, "X", 1.0, 10)], schema)
    yesterday = spark.createDataFrame(
        [("edge-01", 1, "B", 3.0, 50), ("edge-01", 2, "C", 2.0, 70), ("edge-03", 1, "Z", 1.0, 5)], schema)
    rows = fill_traffic(today, yesterday).orderBy("edge_id").collect()
    assert [tuple(r) for r in rows] == [
        # edge, added, dropped, kept, bytes to fill (the added titles' sizes)
        ("edge-01", 1, 1, 1, 100),  # A added, C dropped, B kept
        ("edge-02", 1, 0, 0, 10),
        ("edge-03", 0, 1, 0, 0),
    ]
