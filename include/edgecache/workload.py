"""Synthetic streaming workload: catalog, viewers and one day of viewing logs.

The catalog and viewers are drawn once per workload (seed and sizes) in the driver with
numpy and Faker. A day's events are drawn per chunk of viewers, each chunk with its own
random stream seeded by (seed, day, chunk), so the output depends only on the seed and the
date, not on how Spark spreads the chunks over partitions.

The model is deliberately simple but not trivial: Zipf-like popularity over movies and
series with a per-edge twist, series watched episode after episode (binge sessions),
progress that carries over from one day to the next, an evening peak and abandoned views.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from faker import Faker

from edgecache.schema import DEVICES, TIMESTAMP_STRFTIME
from edgecache.settings import WorkloadParams

CHUNK_USERS = 256  # viewers per random stream; fixed so output never depends on partitioning
EPOCH = dt.date(2025, 1, 1)  # day 0 of series progress
EPISODES_PER_DAY = 2  # how far a viewer's series progress moves on per day

# Relative viewing activity per hour of day: quiet at night, peak around 21:00.
HOURLY_WEIGHTS = np.array(
    [3, 2, 1, 1, 1, 1, 1, 2, 3, 3, 3, 4, 5, 5, 4, 4, 5, 6, 8, 10, 12, 13, 11, 6], dtype=float
)
GENRES = ("Drama", "Comedy", "Action", "Documentary", "Kids", "Thriller", "Sci-Fi", "Romance")


@dataclass(frozen=True)
class Workload:
    """Catalog and viewers as plain arrays, cheap to ship to Spark workers."""

    params: WorkloadParams
    catalog: pd.DataFrame  # one row per title (movie or episode)
    users: pd.DataFrame  # one row per viewer
    edge_ids: list[str]
    # Items are what a viewer picks: a movie or a whole series (index into item arrays).
    item_first_title: np.ndarray  # first title row of the item
    item_length: np.ndarray  # number of titles in the item (1 for a movie)
    edge_item_probs: np.ndarray  # [edge, item] probability of picking the item at the edge


def edge_ids(n: int) -> list[str]:
    return [f"edge-{i + 1:02d}" for i in range(n)]


def build_workload(params: WorkloadParams) -> Workload:
    """Draw the catalog and the viewers for ``params`` (deterministic for its seed)."""
    if params.users < 1 or params.edges < 1 or params.titles < 1 or params.events < 0:
        raise ValueError(f"workload sizes must be positive: {params}")
    rng = np.random.default_rng([params.seed, 0])
    fake = Faker()
    fake.seed_instance(params.seed)

    # Items: about a third movies, the rest series of 4 to 12 episodes.
    lengths: list[int] = []
    remaining = params.titles
    while remaining > 0:
        n = 1 if rng.random() < 0.35 else int(rng.integers(4, 13))
        n = min(n, remaining)
        lengths.append(n)
        remaining -= n
    item_length = np.array(lengths, dtype=np.int64)
    item_first = np.concatenate([[0], np.cumsum(item_length)[:-1]]).astype(np.int64)

    rows = []
    for item, (first, n) in enumerate(zip(item_first, item_length)):
        name = fake.catch_phrase().title()
        genre = GENRES[int(rng.integers(len(GENRES)))]
        runtime = int(rng.integers(80, 150)) if n == 1 else int(rng.integers(22, 60))
        for ep in range(n):
            title_idx = int(first) + ep
            rows.append(
                {
                    "content_id": f"C{title_idx + 1:05d}",
                    "title": name if n == 1 else f"{name} E{ep + 1}",
                    "kind": "movie" if n == 1 else "episode",
                    "series_id": None if n == 1 else f"S{item + 1:05d}",
                    "episode": None if n == 1 else ep + 1,
                    "genre": genre,
                    "runtime_min": runtime,
                    # about 1 GB per hour at HD bitrate
                    "size_bytes": runtime * 60 * 300_000,
                }
            )
    catalog = pd.DataFrame(rows)
    catalog["episode"] = catalog["episode"].astype("Int64")

    # Popularity: Zipf over a random order of items, twisted per edge for regional taste.
    n_items = len(item_length)
    ranks = rng.permutation(n_items) + 1
    base = ranks.astype(float) ** -params.alpha
    twist = rng.lognormal(0.0, 0.5, size=(params.edges, n_items))
    probs = base * twist
    probs /= probs.sum(axis=1, keepdims=True)

    # Viewers: edges of unequal size (weights 1, 1/2, 1/3, ...), a favourite device.
    eids = edge_ids(params.edges)
    edge_w = 1.0 / np.arange(1, params.edges + 1)
    home = rng.choice(params.edges, size=params.users, p=edge_w / edge_w.sum())
    device = rng.choice(len(DEVICES), size=params.users, p=[0.4, 0.3, 0.1, 0.15, 0.05])
    activity = rng.lognormal(0.0, 1.0, size=params.users)  # heavy-tailed viewing activity
    users = pd.DataFrame(
        {
            "user_id": [f"U{i + 1:05d}" for i in range(params.users)],
            "name": [fake.name() for _ in range(params.users)],
            "edge_id": [eids[h] for h in home],
            "device": [DEVICES[d] for d in device],
            "activity": activity,
        }
    )
    return Workload(params, catalog, users, eids, item_first, item_length, probs)


def manifest(params: WorkloadParams) -> dict:
    """What identifies a workload's catalog and viewers (the day's events excluded)."""
    keys = ("seed", "users", "edges", "titles", "alpha")
    return {k: v for k, v in asdict(params).items() if k in keys}


def n_chunks(params: WorkloadParams) -> int:
    return (params.users + CHUNK_USERS - 1) // CHUNK_USERS


def generate_chunk(wl: Workload, date: str, chunk: int) -> Iterator[tuple[str, str, int, str]]:
    """Yield ``(edge_id, user_id, seq, json_line)`` for the viewers of one chunk on ``date``."""
    p = wl.params
    day = dt.date.fromisoformat(date)
    day_index = (day - EPOCH).days
    rng = np.random.default_rng([p.seed, day.toordinal(), chunk])
    day_start = dt.datetime.combine(day, dt.time())
    hour_cdf = np.cumsum(HOURLY_WEIGHTS / HOURLY_WEIGHTS.sum())
    # Inverse-CDF draws: one uniform and a binary search instead of rng.choice's O(n) set-up.
    item_cdf = np.cumsum(wl.edge_item_probs, axis=1)
    edge_pos = {e: i for i, e in enumerate(wl.edge_ids)}
    cat = wl.catalog
    runtimes = cat["runtime_min"].to_numpy()
    content_ids = cat["content_id"].to_numpy()
    n_items = len(wl.item_length)
    mean_events = p.events * wl.users["activity"].to_numpy() / wl.users["activity"].sum()

    lo, hi = chunk * CHUNK_USERS, min((chunk + 1) * CHUNK_USERS, p.users)
    for u in range(lo, hi):
        user = wl.users.iloc[u]
        e = edge_pos[user["edge_id"]]
        n_views = int(rng.poisson(mean_events[u]))
        if n_views == 0:
            continue
        views: list[tuple[float, int]] = []  # (seconds since midnight, title row)
        while len(views) < n_views:
            item = min(int(np.searchsorted(item_cdf[e], rng.random(), side="right")), n_items - 1)
            first, length = int(wl.item_first_title[item]), int(wl.item_length[item])
            # Progress in a series continues from yesterday: an offset per (viewer, series)
            # that moves on EPISODES_PER_DAY a day.
            ep = (u * 7919 + item * 104729 + day_index * EPISODES_PER_DAY) % length if length > 1 else 0
            hour = min(int(np.searchsorted(hour_cdf, rng.random(), side="right")), 23)
            t = hour * 3600 + float(rng.uniform(0, 3600))
            while True:
                views.append((t, first + ep))
                t += runtimes[first + ep] * 60
                ep += 1
                if ep >= length or len(views) >= n_views or rng.random() >= p.binge_prob:
                    break
        views.sort()
        for seq, (secs, title) in enumerate(views):
            runtime = int(runtimes[title])
            watched = runtime if rng.random() < 0.8 else int(rng.integers(1, max(2, runtime // 3)))
            device = user["device"] if rng.random() < 0.8 else DEVICES[int(rng.integers(len(DEVICES)))]
            ts = day_start + dt.timedelta(seconds=min(int(secs), 86399))
            record = {
                "user_id": user["user_id"],
                "device": device,
                "content_id": content_ids[title],
                "duration": watched,
                "timestamp": ts.strftime(TIMESTAMP_STRFTIME),
                "edge_id": user["edge_id"],
            }
            line = json.dumps(record)
            if p.bad_rate > 0 and rng.random() < p.bad_rate:
                line = corrupt_line(record, int(rng.integers(len(CORRUPTIONS))))
            yield user["edge_id"], user["user_id"], seq, line


def _drop(r: dict) -> str:
    return json.dumps({k: v for k, v in r.items() if k != "content_id"})


# One malformed variant per quarantine reason, so a day of logs exercises every check.
CORRUPTIONS = (
    lambda r: json.dumps(r)[:-7],  # truncated line: bad_json
    _drop,  # missing content_id: missing_field
    lambda r: json.dumps({**r, "user_id": "U1:*"}),  # id that could forge a key: bad_id
    lambda r: json.dumps({**r, "device": "Toaster"}),  # unknown_device
    lambda r: json.dumps({**r, "duration": "forty"}),  # bad_duration
    lambda r: json.dumps({**r, "duration": -r["duration"] - 1}),  # negative_duration
    lambda r: json.dumps({**r, "timestamp": "12/04/2025 25:61"}),  # bad_timestamp
)


def corrupt_line(record: dict, kind: int) -> str:
    """A malformed rendering of ``record`` (kind indexes CORRUPTIONS)."""
    return CORRUPTIONS[kind](record)
