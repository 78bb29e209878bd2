"""What the two workload models share: the workload's tables, the viewers' chunks, and
everything from a session's titles to the log lines.

``edgecache.simulate.workload`` builds a workload and draws a day with the ``catalog`` model;
``edgecache.simulate.snm`` draws which titles sessions pick with the shot noise model. Both
build on this module, which imports neither.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from edgecache.schema import DEVICES
from edgecache.settings import WorkloadParams

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
    item_edge_noise: np.ndarray | None = None  # snm: [item, edge] gamma noise in that mix (None: no skew)
    edge_activity: np.ndarray | None = None  # snm: [edge, genre] share of the viewers' activity
    user_new_edge: np.ndarray | None = None  # new edges: the edge each viewer moves to (-1: stays)
    new_edge_from: int = 0  # new edges: the day they open, in days since EPOCH


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


def edges_on(wl: Workload, day: int, users: np.ndarray) -> np.ndarray:
    """The edge index of each of ``users`` on ``day``: their own edge, or from the day the
    new edges open, the new edge they moved to."""
    edge = wl.user_edge[users]
    if wl.user_new_edge is None or day < wl.new_edge_from:
        return edge
    moved = wl.user_new_edge[users]
    return np.where(moved >= 0, moved, edge).astype(edge.dtype)


def n_chunks(wl: Workload) -> int:
    return len(wl.chunk_bounds) - 1


def chunk_users(wl: Workload, chunk: int) -> np.ndarray:
    """Viewer indices of ``chunk`` (all at one edge, until some move to a new edge)."""
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
        _pick(
            np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1),
            edges_on(wl, block_start, users),
            rng.random(len(users)),
        )
    ]
    n_eps = wl.item_len[followed]
    pos = np.zeros(len(users), dtype=np.int64)
    for d in range(block_start, day):
        happens, length = _follow_draws(wl, users, d)
        # A session stops at the series' end; the next one starts it over.
        pos = np.where(happens, (pos + np.minimum(length, n_eps - pos)) % n_eps, pos)
    return followed, pos


def session_items(
    wl: Workload, probs: np.ndarray, s_user: np.ndarray, rng: np.random.Generator, day: int
) -> np.ndarray:
    """The item each session picks on ``day``: from the viewer's favourite genre half the time,
    else from their edge's whole mix (``probs``: [edge, item] rows summing to 1)."""
    n = len(s_user)
    edge = edges_on(wl, day, s_user)
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
    edge = eids.take(pa.array(edges_on(wl, day_index(date), user)))
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
