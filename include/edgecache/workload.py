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

This is the ``catalog`` model. The ``snm`` model (``edgecache.snm``, the shot noise model)
shares the catalog, the viewers and everything from sessions to lines, but draws which
title a session picks from bursts of requests that start at each title's release and fade.
Shapes that break assumptions work with either: ``series_share`` 0 (movies only),
``regional_skew`` 0 (every edge has the same taste), ``releases_per_day`` (high churn),
``edges`` 1, and a large ``edge_size_ratio`` (a smallest edge of a few viewers).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from faker import Faker

from edgecache.schema import DEVICES
from edgecache.settings import WORKLOAD_CHOICES, WorkloadParams

CHUNK_USERS = 4096  # most viewers per chunk; fixed so output never depends on partitioning
EPOCH = dt.date(2025, 1, 1)
CALIBRATION_DAY = "2025-06-01"
SNM_CALIBRATION_DAYS = ("2025-03-01", "2025-06-01", "2025-09-01", "2025-12-01")
FOLLOW_BLOCK_DAYS = 28  # a viewer follows one series per block, then moves on
RELEASE_YEAR_DAYS = 365  # releases_per_day releases items on each day of the year from EPOCH
GENRES = ("Drama", "Comedy", "Action", "Documentary", "Kids", "Thriller", "Sci-Fi", "Romance")
DEVICE_MIX = (0.40, 0.30, 0.10, 0.15, 0.05)  # TV, Mobile, Tablet, Laptop, Desktop
# Streaming bitrate per device in bytes per second: a title's size depends on the device.
DEVICE_BYTES_PER_SEC = {"TV": 1_000_000, "Mobile": 250_000, "Tablet": 400_000, "Laptop": 600_000, "Desktop": 600_000}
HD_BYTES_PER_SEC = DEVICE_BYTES_PER_SEC["Laptop"]

# Every time of day as "HH:MM:SS", so rendering a timestamp is an array look-up.
_CLOCK = pa.array([f"{h:02d}:{m:02d}:{x:02d}" for h in range(24) for m in range(60) for x in range(60)])

LOG_DDL = "edge_id string, ts int, user_idx int, seq int, value string"  # the same, for Spark
LOG_SCHEMA = pa.schema(
    [
        ("edge_id", pa.string()),
        ("ts", pa.int32()),
        ("user_idx", pa.int32()),
        ("seq", pa.int32()),
        ("value", pa.string()),
    ]
)


@dataclass(frozen=True)
class Workload:
    """Catalog and viewers as arrays, cheap to broadcast to Spark workers."""

    params: WorkloadParams
    catalog: pd.DataFrame | None  # one row per title, row i is content id i + 1 (None on workers)
    users: pd.DataFrame | None  # one row per viewer (None on workers)
    edge_ids: list[str]
    item_first: np.ndarray  # first title row of each item (a movie, or a whole series)
    item_len: np.ndarray  # titles in the item (1 for a movie)
    item_genre: np.ndarray  # genre index of each item
    item_release: np.ndarray  # release day of each item, in days since EPOCH
    item_weight: np.ndarray  # Zipf weight of each item (before region, genre and release)
    edge_genre_taste: np.ndarray  # [edge, genre] multiplier of an item's weight at the edge
    user_edge: np.ndarray  # edge index of each viewer
    user_genre: np.ndarray  # favourite genre of each viewer
    user_device: np.ndarray  # primary device index of each viewer
    user_activity: np.ndarray  # relative sessions per day of each viewer
    sessions_per_activity: float  # scales activity to the expected views per day
    content_id_arrow: pa.Array  # content ids as Arrow strings, for fast rendering
    title_runtime: np.ndarray  # runtime in minutes of each title
    users_by_edge: np.ndarray  # viewer indices grouped by edge (ascending within an edge)
    chunk_bounds: np.ndarray  # chunk c holds users_by_edge[chunk_bounds[c]:chunk_bounds[c + 1]]
    item_lifetime: np.ndarray | None = None  # snm: lifetime of each item's burst, in days
    item_edge_mix: np.ndarray | None = None  # snm: [item, edge] share of an item's requests per edge
    edge_activity: np.ndarray | None = None  # snm: [edge, genre] share of the viewers' activity


def user_ids(index: np.ndarray) -> pa.Array:
    """Viewer ids for 0-based indices: U000001, U000002, ... (vectorised)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(index + 1), pa.string()), 6, "0")
    return pc.binary_join_element_wise("U", digits, "")


def edge_ids(n: int) -> list[str]:
    return [f"edge-{i + 1:02d}" for i in range(n)]


def edge_weights(n: int, ratio: float) -> np.ndarray:
    """Share of viewers per edge: geometric, so the largest has ``ratio`` x the smallest."""
    w = ratio ** (-np.arange(n) / max(n - 1, 1))
    return w / w.sum()


def hour_weights(peak_hour: int) -> np.ndarray:
    """Relative session starts per hour: a low base plus an evening bump around peak_hour."""
    hours = np.arange(24)
    dist = np.minimum(np.abs(hours - peak_hour), 24 - np.abs(hours - peak_hour))
    w = 0.15 + np.exp(-0.5 * (dist / 2.5) ** 2)
    return w / w.sum()


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
        from edgecache import snm  # snm builds on this module

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
        wl = snm.with_shots(wl)
    return calibrate(wl)


def daily_releases(back_catalog: np.ndarray, per_day: int) -> np.ndarray:
    """Release days with ``per_day`` items out on each day of the year from EPOCH (the newest
    items, in id order); the other items keep their ``back_catalog`` days (all before EPOCH)."""
    new = per_day * RELEASE_YEAR_DAYS
    if new > len(back_catalog):
        raise ValueError(
            f"releases_per_day {per_day} needs {new} catalog items (movies or series) for a year of "
            f"releases, but the catalog has {len(back_catalog)}: raise titles or lower series_share"
        )
    release = back_catalog.copy()
    release[len(release) - new :] = np.arange(new) // per_day
    return release


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
        from edgecache.snm import expected_share

        # The pilots' share of a day follows their edges' shares of that day's requests.
        days: tuple[str, ...] = SNM_CALIBRATION_DAYS
        pilot_users = np.concatenate([chunk_users(wl, c) for c in chunks])
        want = wl.params.events * sum(expected_share(wl, pilot_users, d) for d in days)
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
    keys = (
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
    return {k: v for k, v in asdict(params).items() if k in keys}


def chunk_plan(user_edge: np.ndarray, n_edges: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the viewers into chunks of at most CHUNK_USERS, each chunk within one edge.

    One edge per chunk lets a Spark task write its chunk straight to that edge's folder,
    with no shuffle; the plan depends only on the workload, never on the partitioning.
    """
    by_edge = np.argsort(user_edge, kind="stable").astype(np.int32)
    bounds = [0]
    for count in np.bincount(user_edge, minlength=n_edges):
        start = bounds[-1]
        bounds += [min(start + k, start + count) for k in range(CHUNK_USERS, count + CHUNK_USERS, CHUNK_USERS)]
    return by_edge, np.array(bounds, dtype=np.int64)


def n_chunks(wl: Workload) -> int:
    return len(wl.chunk_bounds) - 1


def chunk_users(wl: Workload, chunk: int) -> np.ndarray:
    """Viewer indices of ``chunk`` (all at one edge)."""
    return wl.users_by_edge[wl.chunk_bounds[chunk] : wl.chunk_bounds[chunk + 1]]


def day_index(date: str) -> int:
    return (dt.date.fromisoformat(date) - EPOCH).days


def item_probs(wl: Workload, day: int) -> np.ndarray:
    """[edge, item] probability of a session picking each item on ``day``."""
    age = day - wl.item_release
    launch = 1.0 + wl.params.launch_boost * np.exp(-np.clip(age, 0, None) / wl.params.launch_decay_days)
    w = np.where(age >= 0, wl.item_weight * launch, 0.0)  # nothing before its release
    probs = wl.edge_genre_taste[:, wl.item_genre] * w
    return probs / probs.sum(axis=1, keepdims=True)


def _pick(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one column per row of ``cdf`` (rows are CDFs ending at 1)."""
    rows = rows.astype(np.int64)  # row * columns overflows the small ints viewer arrays use
    offset = rows.astype(np.float64)
    flat = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()
    idx = np.searchsorted(flat, offset + u * (1 - 1e-12), side="right")
    return np.minimum(idx - rows * cdf.shape[1], cdf.shape[1] - 1)


def _follow_draws(wl: Workload, users: np.ndarray, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Whether each viewer has a follow session on ``day``, and how many episodes it covers.

    Drawn from a stream of their own, seeded by (seed, day, first viewer), so any day can
    recompute any earlier day's follow sessions without state kept between runs.
    """
    p = wl.params
    rng = np.random.default_rng([p.seed, 2, day, int(users[0]) if len(users) else 0])
    happens = rng.random(len(users)) < p.follow_prob * np.minimum(wl.user_activity[users], 1.0)
    length = rng.geometric(1 - p.binge_prob, size=len(users)).astype(np.int64)
    return happens, length


def _followed_series(wl: Workload, users: np.ndarray, day: int) -> tuple[np.ndarray, np.ndarray]:
    """The series each viewer follows on ``day`` (-1: none) and the episode offset to resume at.

    A viewer follows one series per FOLLOW_BLOCK_DAYS block, picked by their edge's taste,
    and resumes where the previous follow session stopped: day D+1 picks up exactly where
    day D ended.
    """
    p = wl.params
    block_start = (day // FOLLOW_BLOCK_DAYS) * FOLLOW_BLOCK_DAYS
    series = np.flatnonzero((wl.item_len > 1) & (wl.item_release <= block_start))
    if len(series) == 0 or len(users) == 0:
        return np.full(len(users), -1), np.zeros(len(users), dtype=np.int64)
    rng = np.random.default_rng([p.seed, 1, block_start, int(users[0])])
    w = wl.edge_genre_taste[:, wl.item_genre[series]] * wl.item_weight[series]  # [edge, series]
    followed = series[
        _pick(np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1), wl.user_edge[users], rng.random(len(users)))
    ]
    n_eps = wl.item_len[followed]
    pos = np.zeros(len(users), dtype=np.int64)
    for d in range(block_start, day):
        happens, length = _follow_draws(wl, users, d)
        # A session stops at the series' end; the next one starts it over.
        pos = np.where(happens, (pos + np.minimum(length, n_eps - pos)) % n_eps, pos)
    return followed, pos


def generate_chunk(wl: Workload, date: str, chunk: int) -> pa.RecordBatch:
    """One chunk of viewers' views on ``date`` as log lines, with sort keys (see LOG_SCHEMA)."""
    p = wl.params
    if p.workload == "snm":
        from edgecache.snm import generate_snm_chunk

        return generate_snm_chunk(wl, date, chunk)
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
    item = np.where(follow, followed[local], session_items(wl, probs, s_user, rng))
    first_ep = np.where(follow, resume[local], 0)
    wanted = np.where(follow, follow_len[local], rng.geometric(1 - p.binge_prob, size=n))
    length = np.where(wl.item_len[item] == 1, 1, np.minimum(wanted, wl.item_len[item] - first_ep))
    return session_views(wl, date, users, s_user, local, item, first_ep, length, rng)


def session_items(wl: Workload, probs: np.ndarray, s_user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The item each session picks: from the viewer's favourite genre half the time, else from
    their edge's whole mix (``probs``: [edge, item] rows summing to 1)."""
    n = len(s_user)
    edge = wl.user_edge[s_user]
    genre_only = rng.random(n) < 0.5
    pick_edge = _pick(np.cumsum(probs, axis=1), edge, rng.random(n))
    gp = genre_probs(wl, probs)
    gcdf = np.cumsum(gp, axis=2).reshape(-1, gp.shape[2])
    pick_genre = _pick(gcdf, edge * len(GENRES) + wl.user_genre[s_user], rng.random(n))
    return np.where(genre_only, pick_genre, pick_edge)


def genre_probs(wl: Workload, probs: np.ndarray) -> np.ndarray:
    """[edge, genre, item]: ``probs`` within each genre (the whole row where a genre has nothing)."""
    in_genre = wl.item_genre[None, :] == np.arange(len(GENRES))[:, None]  # [genre, item]
    gp = probs[:, None, :] * in_genre[None, :, :]
    gp_sum = gp.sum(axis=2, keepdims=True)
    return np.where(gp_sum > 0, gp / np.where(gp_sum > 0, gp_sum, 1), probs[:, None, :])


def session_views(
    wl: Workload,
    date: str,
    users: np.ndarray,
    s_user: np.ndarray,
    local: np.ndarray,
    item: np.ndarray,
    first_ep: np.ndarray,
    length: np.ndarray,
    rng: np.random.Generator,
) -> pa.RecordBatch:
    """Sessions (viewer, item, first episode offset, titles) as a chunk's log lines.

    ``s_user`` lists each session's viewer, grouped by viewer; ``local`` is that viewer's
    position in ``users``, the chunk. Views run back to back within a session; a viewer's
    sessions start on the diurnal curve, never overlap and end by midnight.
    """
    p = wl.params
    n = len(s_user)
    # Views: expand sessions into consecutive titles.
    v_sess = np.repeat(np.arange(n), length)
    v_pos = np.arange(len(v_sess)) - np.repeat(np.cumsum(length) - length, length)
    title = wl.item_first[item[v_sess]] + first_ep[v_sess] + v_pos
    runtime = wl.title_runtime[title]
    abandoned = rng.random(len(v_sess)) < p.abandon_prob
    watched = np.where(abandoned, np.maximum(1, (runtime * rng.random(len(v_sess)) * 0.3).astype(np.int64)), runtime)
    device = np.where(
        rng.random(len(v_sess)) < 0.8,
        wl.user_device[s_user[v_sess]],
        rng.choice(len(DEVICES), size=len(v_sess), p=DEVICE_MIX),
    )

    # Times: session starts on the diurnal curve; a viewer's sessions run one after another.
    hour = rng.choice(24, size=n, p=hour_weights(p.peak_hour))
    start = hour * 3600 + rng.integers(0, 3600, size=n)
    order = np.lexsort((start, s_user))  # sessions by viewer, then start
    sess_secs = np.bincount(v_sess, weights=watched * 60, minlength=n).astype(np.int64)
    s_sorted, st_sorted, dur_sorted = s_user[order], start[order], sess_secs[order]
    before = np.cumsum(dur_sorted) - dur_sorted  # viewer's earlier sessions' total time
    user_first = np.r_[True, s_sorted[1:] != s_sorted[:-1]] if n else np.zeros(0, bool)
    base = np.maximum.accumulate(np.where(user_first, before, 0))  # reset per viewer
    slack = st_sorted - (before - base)
    big = np.int64(1) << 40  # keeps the running max from crossing viewers
    seg = np.cumsum(user_first)
    shifted = np.maximum.accumulate(slack + seg * big) - seg * big
    real_start = np.empty(n, dtype=np.int64)
    real_start[order] = shifted + (before - base)
    # A viewer whose sessions would run past midnight starts them earlier instead.
    last_end = np.zeros(len(users), dtype=np.int64)
    np.maximum.at(last_end, local, real_start + sess_secs)
    real_start -= np.maximum(last_end - 86399, 0)[local]
    v_start = real_start[v_sess] + (
        np.cumsum(watched * 60) - watched * 60 - np.repeat(np.cumsum(sess_secs) - sess_secs, length)
    )
    keep = (v_start >= 0) & (v_start < 86400)  # only a viewer watching over 24 h loses views
    v_sess, title, watched, device, v_start = v_sess[keep], title[keep], watched[keep], device[keep], v_start[keep]
    v_user = s_user[v_sess]

    return render(wl, date, v_user, title, watched, device, v_start, rng)


def render(
    wl: Workload,
    date: str,
    user: np.ndarray,
    title: np.ndarray,
    duration: np.ndarray,
    device: np.ndarray,
    secs: np.ndarray,
    rng: np.random.Generator,
) -> pa.RecordBatch:
    """Format views as seed-style JSON lines (vectorised in Arrow), corrupting bad_rate of them."""
    order = np.lexsort((title, secs, user))
    user, title, duration, device, secs = user[order], title[order], duration[order], device[order], secs[order]
    seq = np.arange(len(user)) - np.searchsorted(user, user)  # position within the viewer's day
    by_time = np.lexsort((seq, user, secs))  # a log is written in time order
    user, title, duration, device, secs, seq = (a[by_time] for a in (user, title, duration, device, secs, seq))
    cids = wl.content_id_arrow
    eids = pa.array(wl.edge_ids, pa.string())
    ts = _CLOCK.take(pa.array(secs))  # "HH:MM:SS"; the date is joined in below
    edge = eids.take(pa.array(wl.user_edge[user]))
    cols = [
        user_ids(user),
        pa.array(np.array(DEVICES, dtype=object)[device], pa.string()),
        cids.take(pa.array(title)),
        pc.cast(pa.array(duration), pa.string()),
        ts,
        edge,
    ]
    value = pc.binary_join_element_wise(
        '{"user_id": "',
        cols[0],
        '", "device": "',
        cols[1],
        '", "content_id": "',
        cols[2],
        '", "duration": ',
        cols[3],
        f', "timestamp": "{date} ',
        cols[4],
        '", "edge_id": "',
        cols[5],
        '"}',
        "",
    )
    bad = np.flatnonzero(rng.random(len(user)) < wl.params.bad_rate)
    if len(bad):
        kinds = rng.integers(len(CORRUPTIONS), size=len(bad))
        broken = [CORRUPTIONS[k](json.loads(value[int(i)].as_py())) for i, k in zip(bad, kinds)]
        mask = np.zeros(len(user), dtype=bool)
        mask[bad] = True
        value = pc.replace_with_mask(value, pa.array(mask), pa.array(broken, pa.string()))
    return pa.RecordBatch.from_arrays(
        [edge, pa.array(secs, pa.int32()), pa.array(user, pa.int32()), pa.array(seq, pa.int32()), value],
        schema=LOG_SCHEMA,
    )


def _drop(r: dict) -> str:
    return json.dumps({k: v for k, v in r.items() if k != "content_id"})


def _other_day(r: dict) -> str:
    day = dt.date.fromisoformat(r["timestamp"][:10]) - dt.timedelta(days=7)
    return json.dumps({**r, "timestamp": day.isoformat() + r["timestamp"][10:]})


# A malformed variant per quarantine reason, so a day of logs exercises the checks (all but
# line_too_long and bad_utf8: the lines are Arrow strings, and a day needs no 64 KiB lines).
CORRUPTIONS = (
    lambda r: json.dumps(r)[:-7],  # truncated line: bad_json
    _drop,  # missing content_id: missing_field
    lambda r: json.dumps({**r, "user_id": "U1:*"}),  # id that could forge a key: bad_id
    lambda r: json.dumps({**r, "device": "Toaster"}),  # unknown_device
    lambda r: json.dumps({**r, "duration": "forty"}),  # bad_duration
    lambda r: json.dumps({**r, "duration": -r["duration"] - 1}),  # negative_duration
    lambda r: json.dumps({**r, "timestamp": "12/04/2025 25:61"}),  # bad_timestamp
    lambda r: json.dumps(r) + " }",  # trailing_data
    lambda r: json.dumps(r) + json.dumps(r),  # multiple_records
    lambda r: json.dumps({**r, "duration": 10**12}),  # duration_too_long
    _other_day,  # wrong_day: a week before the file's day
)
