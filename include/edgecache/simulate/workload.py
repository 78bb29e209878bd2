"""Synthetic streaming workload: catalog, viewers and one day of viewing logs.

The catalog and the viewers are drawn once per workload (seed and sizes) in the driver,
with numpy and Faker. A day's views are drawn per chunk of viewers with vectorised numpy
draws, each chunk with its own random stream seeded by (seed, day, chunk): the output
depends only on the seed and the date, never on how Spark spreads chunks over partitions.

What the model captures (every knob is a field of ``WorkloadParams``):

- popularity: Zipf-like over titles (movies and whole series) with exponent ``alpha``;
- regions: edges of very different sizes (``edge_size_ratio``) and genre tastes that
  differ by edge (``regional_skew``); each viewer also has a favourite genre;
- new releases: titles appear on their release date with a launch burst that decays
  (``launch_boost``, ``launch_decay_days``);
- the day: sessions start on a diurnal curve peaking at ``peak_hour``; a viewer's sessions
  never overlap;
- series: a session of a series goes on to the next episode with ``binge_prob``; each
  viewer follows one series at a time and picks it up where yesterday stopped
  (``follow_prob`` of sessions), so tomorrow is partly, not wholly, predictable;
- abandoned views: ``abandon_prob`` of views stop early, with a short duration.

This is the ``catalog`` model. The ``snm`` model (``edgecache.simulate.snm``, the shot noise model)
shares the catalog, the viewers and everything from sessions to lines, but draws which
title a session picks from bursts of requests that start at each title's release and fade.
Shapes that break assumptions work with either: ``series_share`` 0 (movies only),
``regional_skew`` 0 (every edge has the same taste), ``releases_per_day`` (high churn),
``edges`` 1, and a large ``edge_size_ratio`` (a smallest edge of a few viewers).

Cold start (``new_edges``, ``new_edge_day``; either model): edges that open on a given day.
Each takes about as many viewers as the middle edge has, drawn from every edge, with a
regional taste of its own; from that day on those viewers are logged at the new edge, which
has no history before it (in the snm model each shot's edge mix follows them there). The
moves come from a random stream of their own, after the calibration, so every other draw,
and every view before the opening day, is the same as without them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pyarrow as pa
from faker import Faker

from edgecache.schema import DEVICES
from edgecache.settings import WORKLOAD_CHOICES, WorkloadParams
from edgecache.simulate import snm
from edgecache.simulate.base import (
    CALIBRATION_DAY,
    DEVICE_MIX,
    EPOCH,
    GENRES,
    HD_BYTES_PER_SEC,
    LOG_DDL,
    RELEASE_YEAR_DAYS,
    SNM_CALIBRATION_DAYS,
    Workload,
    _follow_draws,
    _followed_series,
    chunk_plan,
    chunk_users,
    daily_releases,
    day_index,
    edge_ids,
    edge_weights,
    item_probs,
    n_chunks,
    session_items,
    session_views,
    user_ids,
)

# The workload's public face; the rest of what the models share is in base.
__all__ = [
    "GENRES",
    "LOG_DDL",
    "Workload",
    "build_workload",
    "calibrate",
    "day_index",
    "edge_ids",
    "for_workers",
    "generate_chunk",
    "item_probs",
    "manifest",
    "n_chunks",
    "with_new_edges",
    "user_ids",
]


def build_workload(params: WorkloadParams) -> Workload:
    """Draw the catalog and the viewers for ``params`` (deterministic for its seed)."""
    p = params
    if p.users < 1 or p.edges < 1 or p.titles < 1 or p.events < 0:
        raise ValueError(f"workload sizes must be positive: {p}")
    for name in ("binge_prob", "abandon_prob", "follow_prob", "bad_rate"):
        if not 0 <= getattr(p, name) <= 1 or (name == "binge_prob" and p.binge_prob >= 1):
            raise ValueError(f"{name} must be a probability (binge_prob below 1), got {getattr(p, name)}")
    if not 0 <= p.peak_hour <= 23:
        raise ValueError(f"peak_hour must be 0-23, got {p.peak_hour}")
    for name, choices in WORKLOAD_CHOICES.items():
        if getattr(p, name) not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(p, name)!r}")
    if not 0 <= p.series_share <= 1:
        raise ValueError(f"series_share must be a share (0-1), got {p.series_share}")
    if p.regional_skew < 0 or p.releases_per_day < 0 or p.snm_lifetime_days <= 0:
        raise ValueError(
            f"regional_skew and releases_per_day must not be negative, snm_lifetime_days must be positive: {p}"
        )
    if p.new_edges < 0:
        raise ValueError(f"new_edges must not be negative: {p}")
    if p.new_edges:
        try:
            dt.date.fromisoformat(p.new_edge_day)
        except ValueError:
            raise ValueError(
                f"new_edge_day must be a date (YYYY-MM-DD) when new_edges > 0, got {p.new_edge_day!r}"
            ) from None
    rng = np.random.default_rng([p.seed, 0])
    fake = Faker()
    fake.seed_instance(p.seed)

    # Items: movies, and series_share series of 1-3 seasons of 6-10 episodes.
    shapes: list[tuple[int, int]] = []  # (titles, episodes per season)
    remaining = p.titles
    while remaining > 0:
        if rng.random() < 1 - p.series_share:
            shape = (1, 1)
        else:
            per_season = int(rng.integers(6, 11))
            shape = (per_season * int(rng.integers(1, 4)), per_season)
        shapes.append((min(shape[0], remaining), shape[1]))
        remaining -= shapes[-1][0]
    item_len = np.array([n for n, _ in shapes], dtype=np.int64)
    n_items = len(item_len)
    item_first = np.concatenate([[0], np.cumsum(item_len)[:-1]]).astype(np.int64)
    item_genre = rng.integers(len(GENRES), size=n_items)
    # Release days: most of the catalog is old; a tenth comes out in the year after EPOCH.
    # (Drawn even when a shape or the snm model replaces them, so the later draws stay put.)
    is_new = rng.random(n_items) < 0.1
    new_day = rng.integers(0, RELEASE_YEAR_DAYS, size=n_items)
    old_day = -rng.integers(30, 5 * 365, size=n_items)
    item_release = np.where(is_new, new_day, old_day)
    item_weight = (rng.permutation(n_items) + 1.0) ** -p.alpha
    if p.workload == "snm":
        item_release = snm.shot_starts(p, n_items)
    elif p.releases_per_day > 0:
        item_release = daily_releases(old_day, p.releases_per_day)

    rows = []
    for item, (length, per_season) in enumerate(shapes):
        name = fake.catch_phrase().title()
        movie = length == 1
        runtime = int(rng.integers(80, 160)) if movie else int(rng.integers(22, 60))
        released = EPOCH + dt.timedelta(days=int(item_release[item]))
        for ep in range(length):
            season = None if movie else ep // per_season + 1
            rows.append(
                {
                    "content_id": f"C{item_first[item] + ep + 1:05d}",
                    "title": name if movie else f"{name} S{season}E{ep % per_season + 1}",
                    "kind": "movie" if movie else "episode",
                    "series_id": None if movie else f"S{item + 1:05d}",
                    "season": season,
                    "episode": None if movie else ep + 1,  # position in the whole series, 1-based
                    "genre": GENRES[item_genre[item]],
                    "release_date": released.isoformat(),
                    "runtime_min": runtime,
                    "size_bytes": runtime * 60 * HD_BYTES_PER_SEC,
                }
            )
    catalog = pd.DataFrame(rows)
    catalog["season"] = catalog["season"].astype("Int64")
    catalog["episode"] = catalog["episode"].astype("Int64")

    # Regions: each edge likes some genres more; lower regional_skew, stronger preferences.
    # regional_skew 0 means none: every edge has the same taste (still drawn, to keep the draws after it).
    edge_genre_taste = rng.dirichlet(np.full(len(GENRES), p.regional_skew or 1.0), size=p.edges) * len(GENRES)
    if p.regional_skew == 0:
        edge_genre_taste = np.ones_like(edge_genre_taste)
    user_edge = rng.choice(p.edges, size=p.users, p=edge_weights(p.edges, p.edge_size_ratio)).astype(np.int16)
    taste = edge_genre_taste[user_edge]
    user_genre = (taste.cumsum(axis=1) / taste.sum(axis=1, keepdims=True) > rng.random((p.users, 1))).argmax(axis=1)
    user_genre = user_genre.astype(np.int8)
    user_device = rng.choice(len(DEVICES), size=p.users, p=DEVICE_MIX).astype(np.int8)
    user_activity = rng.lognormal(0.0, 1.0, size=p.users).astype(np.float32)  # heavy-tailed activity
    eids = edge_ids(p.edges)
    users = pd.DataFrame(
        {
            "user_id": user_ids(np.arange(p.users)).to_numpy(zero_copy_only=False),
            "name": [fake.name() for _ in range(p.users)] if p.users <= 100_000 else None,
            "edge_id": [eids[e] for e in user_edge],
            "favourite_genre": [GENRES[g] for g in user_genre],
            "device": [DEVICES[d] for d in user_device],
            "activity": user_activity,
        }
    )
    # Calibrate sessions so the day has about p.events views: follow sessions first, then
    # the rest as Poisson sessions in proportion to activity.
    series_len = item_len[item_len > 1]
    mean_binge = float(np.mean(np.minimum(series_len, 1 / (1 - p.binge_prob)))) if len(series_len) else 1.0
    follow_views = p.follow_prob * np.minimum(user_activity, 1.0).sum() * mean_binge
    # A session's expected views, weighting items by popularity (a movie is one view).
    mean_len = float(np.average(np.minimum(item_len, 1 / (1 - p.binge_prob)), weights=item_weight))
    sessions = max(p.events - follow_views, 0.0) / max(user_activity.sum() * mean_len, 1e-9)
    wl = Workload(
        p,
        catalog,
        users,
        eids,
        item_first,
        item_len,
        item_genre,
        item_release,
        item_weight,
        edge_genre_taste,
        user_edge,
        user_genre,
        user_device,
        user_activity,
        sessions,
        pa.array(catalog["content_id"], pa.string()),
        catalog["runtime_min"].to_numpy(),
        *chunk_plan(user_edge, p.edges),
    )
    if p.workload == "snm":
        # The session rate is calibrated without the new edges, as in the catalog model, so the
        # days before they open are those of the same workload without them.
        return snm.with_new_edges(with_new_edges(calibrate(snm.with_shots(wl))))
    return with_new_edges(calibrate(wl))


def with_new_edges(wl: Workload) -> Workload:
    """``wl`` with ``new_edges`` edges opening on ``new_edge_day`` (unchanged without them).

    Each new edge takes about the middle edge's share of the viewers, from every edge alike,
    and gets a taste drawn like the others'. The viewers keep their favourite genre."""
    p = wl.params
    if not p.new_edges:
        return wl
    assert wl.users is not None, "the driver's workload has its tables"
    rng = np.random.default_rng([p.seed, 8])  # a stream of its own: the draws before stay put
    taste = rng.dirichlet(np.full(len(GENRES), p.regional_skew or 1.0), size=p.new_edges) * len(GENRES)
    if p.regional_skew == 0:
        taste = np.ones_like(taste)
    share = min(float(edge_weights(p.edges, p.edge_size_ratio)[p.edges // 2]), 0.5 / p.new_edges)
    dest = rng.choice(p.new_edges + 1, size=p.users, p=[1 - share * p.new_edges] + [share] * p.new_edges)
    user_new_edge = np.where(dest > 0, p.edges + dest - 1, -1).astype(np.int16)
    eids = edge_ids(p.edges + p.new_edges)
    users = wl.users.assign(
        new_edge_id=[eids[e] if e >= 0 else None for e in user_new_edge],
        new_edge_from=[p.new_edge_day if e >= 0 else None for e in user_new_edge],
    )
    return replace(
        wl,
        users=users,
        edge_ids=eids,
        edge_genre_taste=np.vstack([wl.edge_genre_taste, taste]),
        user_new_edge=user_new_edge,
        new_edge_from=day_index(p.new_edge_day),
    )


def calibrate(wl: Workload, rounds: int = 3, pilots: int = 4) -> Workload:
    """Scale the session rate so a day has about ``events`` views.

    The estimate above misses views lost to the day's end and the exact mix of session
    lengths, so pilot chunks (spread over the edges) on fixed reference days measure the
    actual rate and correct it. The reference days are fixed so every day of one workload
    shares the same rate. The snm model's mix changes from day to day, so it takes the
    rate over a day in each quarter.
    """
    n = n_chunks(wl)
    chunks = sorted({int(c) for c in np.linspace(0, n - 1, min(pilots, n))})
    if wl.params.workload == "snm":
        # The pilots' share of a day follows their edges' shares of that day's requests.
        days: tuple[str, ...] = SNM_CALIBRATION_DAYS
        pilot_users = np.concatenate([chunk_users(wl, c) for c in chunks])
        want = wl.params.events * sum(snm.expected_share(wl, pilot_users, d) for d in days)
    else:
        days = (CALIBRATION_DAY,)
        users = sum(len(chunk_users(wl, c)) for c in chunks)
        want = wl.params.events * users / wl.params.users
    if want < 1:
        return wl
    for _ in range(rounds):
        got = sum(generate_chunk(wl, d, c).num_rows for d in days for c in chunks)
        if got == 0:
            break
        wl = replace(wl, sessions_per_activity=wl.sessions_per_activity * want / got)
    return wl


def for_workers(wl: Workload) -> Workload:
    """The workload without its DataFrames: what generate_chunk needs, small to broadcast."""
    return replace(wl, catalog=None, users=None)


def manifest(params: WorkloadParams) -> dict:
    """What identifies a workload's catalog and viewers (the day's knobs excluded)."""
    keys: tuple[str, ...] = (
        "workload",
        "seed",
        "users",
        "edges",
        "titles",
        "alpha",
        "edge_size_ratio",
        "regional_skew",
        "series_share",
        "releases_per_day",
    )
    if params.new_edges:
        keys += ("new_edges", "new_edge_day")  # only then: a workload without them keeps its manifest
    return {k: v for k, v in asdict(params).items() if k in keys}


def generate_chunk(wl: Workload, date: str, chunk: int) -> pa.RecordBatch:
    """One chunk of viewers' views on ``date`` as log lines, with sort keys (see LOG_SCHEMA)."""
    p = wl.params
    if p.workload == "snm":
        return snm.generate_snm_chunk(wl, date, chunk)
    day = day_index(date)
    users = chunk_users(wl, chunk)
    rng = np.random.default_rng([p.seed, 3, dt.date.fromisoformat(date).toordinal(), chunk])
    probs = item_probs(wl, day)

    # Sessions: at most one follow session per viewer (first), then Poisson other sessions.
    followed, resume = _followed_series(wl, users, day)
    happens, follow_len = _follow_draws(wl, users, day)
    happens &= followed >= 0
    n_other = rng.poisson(wl.user_activity[users] * wl.sessions_per_activity)
    n_sess = n_other + happens
    s_user = np.repeat(users, n_sess)
    n = len(s_user)
    local = np.repeat(np.arange(len(users)), n_sess)  # each session's viewer, as a position in the chunk
    first_of_user = np.r_[True, s_user[1:] != s_user[:-1]] if n else np.zeros(0, bool)
    follow = first_of_user & happens[local]
    item = np.where(follow, followed[local], session_items(wl, probs, s_user, rng, day))
    first_ep = np.where(follow, resume[local], 0)
    wanted = np.where(follow, follow_len[local], rng.geometric(1 - p.binge_prob, size=n))
    length = np.where(wl.item_len[item] == 1, 1, np.minimum(wanted, wl.item_len[item] - first_ep))
    return session_views(wl, date, users, s_user, local, item, first_ep, length, rng)
