"""The synthetic workload: deterministic, in the log contract, and with the statistics its knobs promise."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, replace
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from edgecache.schema import DEVICES, LOG_FIELDS, is_valid_id
from edgecache.settings import WorkloadParams
from edgecache.simulate.base import (
    CHUNK_USERS, GENRES, _follow_draws, _followed_series, _pick, chunk_users, day_index, n_chunks,
)
from edgecache.simulate.workload import build_workload, generate_chunk

DATE = "2025-04-12"
PARAMS = WorkloadParams(users=12000, edges=8, titles=1500, events=30000, seed=7, bad_rate=0.0)


@lru_cache(maxsize=16)
def day(params: WorkloadParams, date: str = DATE) -> pd.DataFrame:
    """All views of a day as a DataFrame, with catalog columns joined in."""
    wl = build_workload(params)
    batches = [generate_chunk(wl, date, c) for c in range(n_chunks(wl))]
    lines = [line for b in batches for line in b.column("value").to_pylist()]
    df = pd.DataFrame([json.loads(line) for line in lines])
    df["ts"] = np.concatenate([b.column("ts").to_numpy() for b in batches])
    df["seq"] = np.concatenate([b.column("seq").to_numpy() for b in batches])
    return df.merge(wl.catalog, on="content_id", how="left")


def lines(params: WorkloadParams, date: str = DATE) -> list[str]:
    wl = build_workload(params)
    return [v for c in range(n_chunks(wl)) for v in generate_chunk(wl, date, c).column("value").to_pylist()]


# --- determinism and the contract -------------------------------------------------------

def test_same_seed_and_date_give_the_same_lines():
    small = replace(PARAMS, users=500, events=3000)
    assert lines(small) == lines(small)


def test_another_date_or_seed_gives_other_lines():
    small = replace(PARAMS, users=500, events=3000)
    assert lines(small, "2025-04-13") != lines(small)
    assert lines(replace(small, seed=8)) != lines(small)


def test_chunks_partition_the_viewers_one_edge_each():
    wl = build_workload(replace(PARAMS, users=3 * CHUNK_USERS, events=20000))
    seen: list[int] = []
    for c in range(n_chunks(wl)):
        users = chunk_users(wl, c)
        assert 0 < len(users) <= CHUNK_USERS
        assert len(set(wl.user_edge[users])) == 1
        seen += users.tolist()
        batch = generate_chunk(wl, DATE, c)
        ts = batch.column("ts").to_numpy()
        assert (ts[1:] >= ts[:-1]).all()  # in time order
        assert set(batch.column("user_idx").to_numpy()) <= set(users)
    assert sorted(seen) == list(range(3 * CHUNK_USERS))


def test_records_follow_the_contract():
    df = day(PARAMS)
    assert list(df.columns[: len(LOG_FIELDS)]) == list(LOG_FIELDS)
    assert df["title"].notna().all()  # every content id is in the catalog
    for col in ("user_id", "content_id", "edge_id"):
        assert df[col].map(is_valid_id).all()
    assert df["device"].isin(DEVICES).all()
    assert (df["duration"] >= 0).all() and (df["duration"] <= df["runtime_min"]).all()
    assert df["timestamp"].str.startswith(DATE + " ").all()
    assert (pd.to_datetime(df["release_date"]) <= pd.Timestamp(DATE)).all()  # nothing before release


def test_events_knob_sets_the_volume():
    assert abs(len(day(PARAMS)) - PARAMS.events) < 0.05 * PARAMS.events


def test_viewers_never_watch_two_things_at_once():
    df = day(PARAMS).sort_values(["user_id", "ts", "seq"])
    end = df["ts"] + df["duration"] * 60
    same_user = df["user_id"].eq(df["user_id"].shift(-1))
    assert (df["ts"].shift(-1)[same_user] >= end[same_user]).all()


def test_bad_rate_injects_malformed_lines():
    values = lines(replace(PARAMS, users=1000, events=10000, bad_rate=0.05))
    bad = 0
    for line in values:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        ok = set(rec) == set(LOG_FIELDS) and rec["device"] in DEVICES and is_valid_id(str(rec["user_id"]))
        ok = ok and isinstance(rec["duration"], int) and rec["duration"] >= 0 and rec["timestamp"][4] == "-"
        bad += not ok
    assert 0.04 * len(values) < bad < 0.06 * len(values)


def test_invalid_knobs_are_rejected():
    for bad in (dict(users=0), dict(binge_prob=1.0), dict(peak_hour=24), dict(follow_prob=-0.1)):
        with pytest.raises(ValueError):
            build_workload(replace(PARAMS, **bad))


# --- the statistics the knobs promise ------------------------------------------------------

def _rank_frequency_slope(counts: np.ndarray, top: int) -> float:
    counts = np.sort(counts)[::-1][:top]
    ranks = np.arange(1, len(counts) + 1)
    return float(np.polyfit(np.log(ranks), np.log(counts), 1)[0])


@pytest.mark.parametrize("alpha", [0.7, 0.9, 1.1])
def test_rank_frequency_slope_matches_alpha(alpha):
    # Isolate popularity: no binges, follows, launches or regional tastes reshaping it.
    params = replace(PARAMS, alpha=alpha, binge_prob=0.0, follow_prob=0.0, launch_boost=0.0,
                     regional_skew=1e6, events=60000)
    df = day(params)
    per_item = df.assign(item=df["series_id"].fillna(df["content_id"])).groupby("item").size().to_numpy()
    # The head of the ranking, where each item has enough views to measure (tolerance 0.12).
    assert _rank_frequency_slope(per_item, top=100) == pytest.approx(-alpha, abs=0.12)


def _continuation_rate(df: pd.DataFrame) -> float:
    """Of episode views that are not a series' last, the share followed by the next episode."""
    df = df.sort_values(["user_id", "ts", "seq"])
    nxt = df.groupby("user_id")[["content_id", "series_id", "episode"]].shift(-1)
    last_ep = df.groupby("series_id")["episode"].transform("max")
    # A viewer's last view of the day counts too: sessions never run past midnight, so it
    # ended its session.
    candidates = df["series_id"].notna() & (df["episode"] < last_ep)
    follows = (nxt["series_id"] == df["series_id"]) & (nxt["episode"] == df["episode"] + 1)
    return float(follows[candidates].mean())


@pytest.mark.parametrize("binge", [0.3, 0.6, 0.8])
def test_next_episode_rate_matches_binge_prob(binge):
    rate = _continuation_rate(day(replace(PARAMS, binge_prob=binge, follow_prob=0.0)))
    # Chance next-episode picks and series ends move it a little (tolerance 0.05).
    assert rate == pytest.approx(binge, abs=0.05)


@pytest.mark.parametrize("peak", [12, 21])
def test_peak_hour_is_where_configured(peak):
    df = day(replace(PARAMS, peak_hour=peak))
    hours = np.bincount(df["ts"].to_numpy() // 3600, minlength=24)
    # Views start at or just after their session's drawn start (binges run on).
    assert 0 <= int(hours.argmax()) - peak <= 1


def test_edges_differ_in_size_as_set():
    wl = build_workload(replace(PARAMS, users=20000))
    sizes = wl.users.groupby("edge_id").size().sort_values()
    assert len(sizes) == 8
    assert sizes.iloc[-1] / sizes.iloc[0] == pytest.approx(10.0, rel=0.25)


def _genre_shares(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby(["edge_id", "genre"]).size().unstack(fill_value=0).pipe(lambda t: t.div(t.sum(axis=1), axis=0))


def test_edges_differ_in_taste_as_set():
    regional = _genre_shares(day(PARAMS))
    uniform = _genre_shares(day(replace(PARAMS, regional_skew=1e6)))
    spread = lambda t: float((t.max() - t.min()).mean())  # noqa: E731  mean gap between edges per genre
    assert spread(regional) > 2 * spread(uniform)
    assert set(regional.columns) <= set(GENRES)


def test_series_progress_carries_over_to_the_next_day():
    params = replace(PARAMS, follow_prob=1.0)
    wl = build_workload(params)
    d1, d2 = day(params, "2025-04-12"), day(params, "2025-04-13")
    followed = np.empty(params.users, dtype=np.int64)
    both_days = np.empty(params.users, dtype=bool)
    for c in range(n_chunks(wl)):  # the follow streams are per chunk
        users = chunk_users(wl, c)
        followed[users] = _followed_series(wl, users, day_index("2025-04-12"))[0]
        both_days[users] = (_follow_draws(wl, users, day_index("2025-04-12"))[0]
                            & _follow_draws(wl, users, day_index("2025-04-13"))[0])
    ep1 = d1[d1["series_id"].notna()].groupby(["user_id", "series_id"])["episode"].agg(set)
    ep2 = d2[d2["series_id"].notna()].groupby(["user_id", "series_id"])["episode"].agg(set)
    lengths = wl.catalog.groupby("series_id")["episode"].max()
    checked = resumed = 0
    for u, f in enumerate(followed):
        key = (wl.users["user_id"].iat[u], f"S{f + 1:05d}")
        if both_days[u] and key in ep1.index and key in ep2.index:
            checked += 1
            nxt = max(ep1[key]) % lengths[key[1]] + 1  # the episode after the last one watched
            resumed += nxt in ep2[key]
    assert checked > 500
    # Not all: a second, unrelated session of the same series can run past the resume point.
    assert resumed > 0.9 * checked


# --- the new knobs and the shot noise model ---------------------------------------------------

SNM = replace(PARAMS, workload="snm", titles=4000, series_share=0.1)


def test_new_knobs_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("EDGECACHE_WORKLOAD", "snm")
    monkeypatch.setenv("EDGECACHE_SERIES_SHARE", "0")
    monkeypatch.setenv("EDGECACHE_RELEASES_PER_DAY", "3")
    monkeypatch.setenv("EDGECACHE_SNM_SHAPE", "uniform")
    params = WorkloadParams.from_env()
    assert (params.workload, params.series_share, params.releases_per_day, params.snm_shape) == ("snm", 0.0, 3,
                                                                                                  "uniform")


def test_generate_takes_every_knob_as_a_flag():
    from edgecache.simulate.generate_logs import build_parser, params_from_args

    parser = build_parser()
    args = parser.parse_args(["--date", DATE, "--workload", "snm", "--series-share", "0", "--releases-per-day", "2",
                              "--snm-lifetime-days", "3.5", "--snm-shape", "uniform", "--regional-skew", "0"])
    assert params_from_args(args) == WorkloadParams(workload="snm", series_share=0.0, releases_per_day=2,
                                                    snm_lifetime_days=3.5, snm_shape="uniform", regional_skew=0.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--date", DATE, "--workload", "zipf"])


@pytest.mark.parametrize("bad", [dict(workload="zipf"), dict(snm_shape="square"), dict(series_share=1.5),
                                 dict(regional_skew=-1.0), dict(releases_per_day=-1), dict(snm_lifetime_days=0.0),
                                 dict(releases_per_day=5),  # 5 a day for a year needs 1,825 items
                                 dict(new_edges=-1), dict(new_edges=1), dict(new_edges=1, new_edge_day="12/04/2025")])
def test_invalid_new_knobs_are_rejected(bad):
    with pytest.raises(ValueError):
        build_workload(replace(PARAMS, **bad))


OPENS = "2025-04-11"  # the day before DATE
NEW = replace(PARAMS, new_edges=2, new_edge_day=OPENS)


@pytest.mark.parametrize("workload", ["catalog", "snm"])
def test_new_edges_change_nothing_before_they_open(workload):
    before = (dt.date.fromisoformat(OPENS) - dt.timedelta(days=1)).isoformat()
    base = replace(PARAMS, workload=workload)
    assert lines(replace(NEW, workload=workload), before) == lines(base, before)
    assert lines(replace(NEW, workload=workload), OPENS) != lines(base, OPENS)


@pytest.mark.parametrize("workload", ["catalog", "snm"])
def test_new_edges_take_their_viewers_from_the_opening_day_on(workload):
    """In the snm model too: from the opening day each shot's share at a new edge follows
    the viewers who moved there, with the new edge's own taste."""
    params = replace(NEW, workload=workload)
    wl = build_workload(params)
    assert wl.edge_ids[-2:] == ["edge-09", "edge-10"]
    movers = wl.users.dropna(subset=["new_edge_id"])
    assert set(movers["new_edge_from"]) == {OPENS} and set(movers["new_edge_id"]) == {"edge-09", "edge-10"}
    moved = dict(zip(movers["user_id"], movers["new_edge_id"]))
    home = dict(zip(wl.users["user_id"], wl.users["edge_id"]))
    for date in (OPENS, DATE):
        views = day(params, date)
        want = views["user_id"].map(moved).fillna(views["user_id"].map(home))
        assert (views["edge_id"] == want).all()  # movers at their new edge, everyone else at home
    # Each new edge is about the size of the middle edge (it keeps most of its own viewers).
    sizes = wl.users["edge_id"].where(wl.users["new_edge_id"].isna(), wl.users["new_edge_id"]).value_counts()
    middle = f"edge-{PARAMS.edges // 2 + 1:02d}"
    for new in ("edge-09", "edge-10"):
        assert 0.8 < sizes[new] / sizes[middle] < 1.6, sizes
    # Its own taste: its genre mix differs from the edges its viewers came from.
    views = day(params, DATE)
    mix = pd.crosstab(views["edge_id"], views["genre"], normalize="index")
    assert np.abs(mix.loc["edge-09"] - mix.loc["edge-10"]).sum() > 0.1
    # The day's total stays about what it was
    assert 0.9 < len(views) / len(day(replace(PARAMS, workload=workload), DATE)) < 1.1


def test_new_edges_are_in_the_manifest_only_when_asked_for():
    from edgecache.simulate.workload import manifest

    assert "new_edges" not in manifest(PARAMS)
    assert manifest(NEW)["new_edge_day"] == OPENS


@pytest.mark.parametrize("workload", ["catalog", "snm"])
def test_movies_only(workload):
    params = replace(PARAMS, workload=workload, series_share=0.0, users=2000, events=5000)
    wl = build_workload(params)
    assert (wl.catalog["kind"] == "movie").all() and wl.catalog["series_id"].isna().all()
    assert len(wl.catalog) == params.titles
    assert day(params)["series_id"].isna().all() and len(day(params)) > 0.9 * params.events


def test_series_share_sets_the_share_of_series():
    wl = build_workload(replace(PARAMS, series_share=0.8, titles=20000, users=500, events=500))
    assert (wl.item_len > 1).mean() == pytest.approx(0.8, abs=0.05)


def test_no_regional_taste_gives_every_edge_the_same_taste():
    wl = build_workload(replace(PARAMS, regional_skew=0.0))
    assert (wl.edge_genre_taste == 1).all()
    none = _genre_shares(day(replace(PARAMS, regional_skew=0.0)))
    spread = lambda t: float((t.max() - t.min()).mean())  # noqa: E731
    assert spread(none) < 0.5 * spread(_genre_shares(day(PARAMS)))
    # The shot noise model: every shot has the edges' activity shares as its mix.
    snm = build_workload(replace(SNM, regional_skew=0.0, users=2000, events=2000))
    assert np.allclose(snm.item_edge_mix, snm.edge_activity.sum(axis=1)[None, :])


@pytest.mark.parametrize("workload", ["catalog", "snm"])
def test_high_churn_releases_that_many_items_every_day(workload):
    params = replace(PARAMS, workload=workload, series_share=0.0, titles=3000, releases_per_day=4, users=3000,
                     events=8000)
    wl = build_workload(params)
    released = pd.to_datetime(wl.catalog["release_date"])
    per_day = released[released >= pd.Timestamp("2025-01-01")].dt.date.value_counts()
    assert len(per_day) == 365 and (per_day == 4).all()
    # The day's releases are watched on their release day.
    views = day(params)
    assert views.loc[views["release_date"] == DATE, "content_id"].nunique() >= 3


@pytest.mark.parametrize("workload", ["catalog", "snm"])
def test_a_single_edge(workload):
    params = replace(PARAMS, workload=workload, edges=1, users=2000, events=5000)
    wl = build_workload(params)
    assert wl.edge_ids == ["edge-01"] and (wl.users["edge_id"] == "edge-01").all()
    df = day(params)
    assert set(df["edge_id"]) == {"edge-01"} and abs(len(df) - params.events) < 0.1 * params.events


@pytest.mark.parametrize("workload", ["catalog", "snm"])
def test_an_edge_of_under_50_viewers(workload):
    # A large size ratio leaves the smallest edge a few viewers (documented in the README).
    params = replace(PARAMS, workload=workload, users=10000, edge_size_ratio=500.0)
    sizes = build_workload(params).users.groupby("edge_id").size()
    assert len(sizes) == params.edges and 0 < sizes.min() < 50
    assert sizes.idxmin() in set(day(params)["edge_id"])  # and they watch


# The shot noise model.

def test_snm_same_seed_and_date_give_the_same_lines():
    small = replace(SNM, users=500, events=3000)
    assert lines(small) == lines(small)
    assert lines(small, "2025-04-13") != lines(small)
    assert lines(replace(small, seed=8)) != lines(small)


def test_snm_records_follow_the_contract():
    from edgecache.pipeline.validate import check_line

    df = day(SNM)
    assert list(df.columns[: len(LOG_FIELDS)]) == list(LOG_FIELDS)
    assert df["title"].notna().all()
    for col in ("user_id", "content_id", "edge_id"):
        assert df[col].map(is_valid_id).all()
    assert (df["duration"] >= 0).all() and (df["duration"] <= df["runtime_min"]).all()
    assert df["timestamp"].str.startswith(DATE + " ").all()
    assert (pd.to_datetime(df["release_date"]) <= pd.Timestamp(DATE)).all()
    assert abs(len(df) - SNM.events) < 0.1 * SNM.events
    # Series are watched episode after episode, as in the catalog model.
    assert _continuation_rate(df) == pytest.approx(SNM.binge_prob, abs=0.1)
    # The validator accepts every line but the corrupted ones, which are exactly the lines
    # bad_rate changes.
    small = replace(SNM, users=1000, events=5000)
    clean, dirty = lines(small), lines(replace(small, bad_rate=0.05))
    assert all(check_line(v.encode(), DATE)[0] is None for v in clean)
    changed = [d for c, d in zip(clean, dirty) if c != d]
    assert len(clean) == len(dirty) and 0.03 * len(clean) < len(changed) < 0.07 * len(clean)
    assert sum(check_line(v.encode(), DATE)[0] is not None for v in dirty) == len(changed)


def _item_views(params: WorkloadParams, dates: list[str]):
    """The workload, and per date each view's item and that item's age in days."""
    wl = build_workload(params)
    item_of_title = np.repeat(np.arange(len(wl.item_len)), wl.item_len)
    out = {}
    for date in dates:
        title = day(params, date)["content_id"].str[1:].astype(int).to_numpy() - 1
        item = item_of_title[title]
        out[date] = (item, day_index(date) - wl.item_release[item])
    return wl, out


def test_snm_uniform_bursts_stay_within_their_lifetime():
    params = replace(SNM, snm_shape="uniform", snm_lifetime_days=5.0)
    wl, views = _item_views(params, ["2025-04-12", "2025-04-20"])
    for item, age in views.values():
        assert (age >= 0).all() and (age <= wl.item_lifetime[item]).all()


def test_snm_requests_concentrate_after_a_title_starts():
    wl, views = _item_views(SNM, ["2025-04-12", "2025-04-20"])
    for item, age in views.values():
        # An exponential pulse puts 95 % of a shot's requests within 3 lifetimes of its start.
        assert np.mean(age <= 3 * wl.item_lifetime[item]) > 0.85
        # Half of a day's requests are for titles out for less than three weeks (of a year's arrivals).
        assert np.median(age) < 21


def _top(params: WorkloadParams, date: str, k: int = 20) -> set[str]:
    return set(day(params, date)["content_id"].value_counts().index[:k])


def test_snm_top_titles_change_far_more_than_the_catalog_models():
    def overlap(params: WorkloadParams) -> float:
        a, b = _top(params, "2025-04-12"), _top(params, "2025-04-19")
        return len(a & b) / len(a | b)

    catalog, snm = overlap(replace(SNM, workload="catalog")), overlap(SNM)
    assert catalog > 0.5 and snm < 0.5 * catalog


def test_snm_edges_see_different_mixes():
    wl = build_workload(SNM)
    share = wl.edge_activity.sum(axis=1)
    # Each shot has its own edge mix around the edges' activity shares.
    assert np.allclose(wl.item_edge_mix.sum(axis=1), 1)
    assert np.median(np.abs(wl.item_edge_mix / share - 1)) > 0.2
    df = day(SNM)
    top = df["content_id"].value_counts().index[:10]
    by_edge = df[df["content_id"].isin(top)].groupby(["content_id", "edge_id"]).size().unstack(fill_value=0)
    by_edge = by_edge.div(by_edge.sum(axis=1), axis=0)
    assert float(by_edge.std(axis=0).mean()) > 0.01  # the top titles' edge shares differ between titles


def test_picks_stay_in_their_row_with_many_items_and_small_int_rows():
    # Viewer arrays are int16: row * columns must not wrap around (it once sent half of a
    # 60,000-title catalog's views to its last title).
    cdf = np.tile(np.linspace(0.5, 1.0, 5000), (64, 1))
    rows = np.arange(64, dtype=np.int16)
    assert (_pick(cdf, rows, np.full(64, 0.25)) == 0).all()


def test_the_generate_job_writes_snm_logs_that_validate(tmp_path, spark):
    """Spark end to end: the job's files hold exactly the numpy lines, and only the injected
    bad lines are quarantined."""
    from edgecache.pipeline import features
    from edgecache.simulate import generate_logs as generate
    from edgecache.layout import Layout
    from edgecache.pipeline.validate import check_line

    params = WorkloadParams(workload="snm", users=300, edges=3, titles=400, events=2000, series_share=0.1,
                            bad_rate=0.02)
    argv = [arg for k, v in asdict(params).items() for arg in (f"--{k.replace('_', '-')}", str(v))]
    assert generate.main(["--date", DATE, "--data-dir", str(tmp_path), "--history-days", "1", *argv]) == 0
    layout = Layout(tmp_path)
    written = [line for p in layout.logs(DATE).rglob("part-*") for line in p.read_text().splitlines()]
    expected = lines(params)
    assert sorted(written) == sorted(expected)
    outcome = features.validate_day(spark, layout, DATE)
    injected = sum(check_line(v.encode(), DATE)[0] is not None for v in expected)
    assert injected > 0 and outcome["duplicate"] == 0
    assert sum(outcome.values()) - outcome["accepted"] == injected
    catalog = pd.read_parquet(layout.catalog)
    assert len(catalog) == params.titles and set(pd.read_parquet(layout.reference / "users.parquet")["edge_id"]) == {
        "edge-01", "edge-02", "edge-03"}
