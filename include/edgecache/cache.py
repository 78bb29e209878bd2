"""Warm Redis with the night's predictions.

Besides each viewer's predictions it writes what the delivery path needs (see
``edgecache.keys``): the catalog's sizes and next episodes, and per edge the cache loaded
with its prefetch set, the expected demand and the transitions between titles.

Every write is a whole value (a SET, or an edge's keys replaced inside MULTI/EXEC), so a
reader never sees half of one; the same predictions always give the same keys and values,
so a re-run is harmless; if a warm fails half-way, keys not yet rewritten keep serving
yesterday's predictions until their TTL runs out.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import redis

from edgecache.delivery.state import format_catalog_entry
from edgecache.evaluate import next_episode_rows
from edgecache.keys import (
    CATALOG_KEY,
    LAST_WARM_KEY,
    edge_cache_key,
    edge_meta_key,
    edge_prior_key,
    edge_sizes_key,
    edge_transitions_key,
    user_key,
    user_topk_key,
)
from edgecache.layout import Layout, write_json_atomic
from edgecache.policies import ADMISSION_EPS

BATCH = 2000  # commands per pipeline round trip
TRANSITIONS_PER_TITLE = 10  # followers kept per title for the delivery path's fresh predictions


@dataclass(frozen=True)
class WarmResult:
    users: int
    edges: int
    keys_written: int
    prefetched_titles: int


def _batches(path: Path, columns: list[str]):
    if not path.exists():
        raise FileNotFoundError(f"no predictions at {path}: run the predict step first")
    yield from ds.dataset(str(path), format="parquet").to_batches(columns=columns, batch_size=BATCH)


def _frame(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"no predictions at {path}: run the predict step first")
    return pq.read_table(path, columns=columns).to_pandas()


def day_start(date: str) -> int:
    """Midnight UTC of ``date`` in Unix seconds."""
    return int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.timezone.utc).timestamp())


def admission_values(scores: pd.Series) -> list[float]:
    """A prefetched title's value at the start of the day (``edgecache.policies``)."""
    return [math.log(float(s) + ADMISSION_EPS) for s in scores]


def catalog_entries(catalog: pd.DataFrame) -> dict[str, str]:
    """content id -> "<bytes> <next episode>" for the delivery path."""
    nxt = [None] * len(catalog)
    ids = catalog["content_id"].tolist()
    for row, row_next in zip(*next_episode_rows(catalog)):
        nxt[row] = ids[row_next]
    return {c: format_catalog_entry(size, n) for c, size, n in zip(ids, catalog["size_bytes"].tolist(), nxt)}


def top_followers(transitions: pd.DataFrame, n: int = TRANSITIONS_PER_TITLE) -> pd.DataFrame:
    """Per edge and title, the ``n`` titles watched after it most often (ties: lower id), as
    JSON lists: edge_id, from_content_id, to."""
    t = transitions.sort_values(["edge_id", "from_content_id", "transitions", "to_content_id"],
                                ascending=[True, True, False, True])
    t = t.groupby(["edge_id", "from_content_id"], sort=False).head(n)
    lists = t.groupby(["edge_id", "from_content_id"], sort=True)["to_content_id"].agg(lambda s: json.dumps(list(s)))
    return lists.rename("to").reset_index()


def warm_users(client: redis.Redis, layout: Layout, date: str, ttl_seconds: int) -> int:
    """Write every viewer's top title and ranked list; return how many viewers."""
    users = 0
    for batch in _batches(layout.predictions(date, "users"), ["user_id", "content_id", "ranked"]):
        pipe = client.pipeline(transaction=False)
        for user_id, top, ranked in zip(*(batch.column(i).to_pylist() for i in range(3))):
            pipe.set(user_key(user_id), top, ex=ttl_seconds)
            pipe.set(user_topk_key(user_id), json.dumps(ranked), ex=ttl_seconds)
        pipe.execute()
        users += batch.num_rows
    return users


def warm(client: redis.Redis, data_dir: Path, date: str, ttl_seconds: int) -> WarmResult:
    """Write day ``date``'s predictions from ``data_dir`` into Redis; return what was written."""
    if ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    layout = Layout(data_dir)
    users = warm_users(client, layout, date, ttl_seconds)

    catalog = pq.read_table(layout.catalog, columns=None).to_pandas()
    pipe = client.pipeline(transaction=True)
    pipe.delete(CATALOG_KEY)
    pipe.hset(CATALOG_KEY, mapping=catalog_entries(catalog))
    pipe.expire(CATALOG_KEY, ttl_seconds)
    pipe.execute()

    prefetch = _frame(layout.predictions(date, "prefetch"), ["edge_id", "content_id", "score", "size_bytes"])
    demand = _frame(layout.predictions(date, "edge_demand"), ["edge_id", "content_id", "score"])
    trans_path = layout.features(date, "transitions")
    followers = (top_followers(pq.read_table(trans_path).to_pandas()) if trans_path.exists()
                 else pd.DataFrame(columns=["edge_id", "from_content_id", "to"]))
    t0 = day_start(date) + 86400  # the predictions are for D+1
    edges = sorted(set(prefetch["edge_id"]) | set(demand["edge_id"]))
    prefetch_g, demand_g = dict(tuple(prefetch.groupby("edge_id"))), dict(tuple(demand.groupby("edge_id")))
    followers_g = dict(tuple(followers.groupby("edge_id")))
    empty = pd.DataFrame(columns=["content_id", "score", "size_bytes", "from_content_id", "to"])
    titles = edge_keys = 0
    for edge_id in edges:
        pf, dm, fo = (g.get(edge_id, empty) for g in (prefetch_g, demand_g, followers_g))
        keys = [edge_cache_key(edge_id), edge_sizes_key(edge_id), edge_prior_key(edge_id),
                edge_transitions_key(edge_id), edge_meta_key(edge_id)]
        # One transaction per edge: readers see the old state or the new one, never a mix.
        pipe = client.pipeline(transaction=True)
        pipe.delete(*keys)
        if len(pf):
            pipe.zadd(keys[0], dict(zip(pf["content_id"], admission_values(pf["score"]))))
            pipe.hset(keys[1], mapping=dict(zip(pf["content_id"], pf["size_bytes"].astype(int).tolist())))
        if len(dm):
            pipe.zadd(keys[2], dict(zip(dm["content_id"], dm["score"].astype(float).tolist())))
        if len(fo):
            pipe.hset(keys[3], mapping=dict(zip(fo["from_content_id"], fo["to"])))
        pipe.hset(keys[4], mapping={"date": date, "titles": len(pf), "used": int(pf["size_bytes"].sum()),
                                    "t0": t0})
        for key in keys:
            pipe.expire(key, ttl_seconds)
        pipe.execute()
        titles += len(pf)
        edge_keys += 1 + 2 * bool(len(pf)) + bool(len(dm)) + bool(len(fo))  # empty keys do not exist

    result = WarmResult(
        users=users,
        edges=len(edges),
        keys_written=2 * users + edge_keys + 2,  # + the catalog and last_warm
        prefetched_titles=titles,
    )
    # Written last: its presence says the whole warm for this date completed.
    client.hset(
        LAST_WARM_KEY,
        mapping={"date": date, "users": result.users, "edges": result.edges, "keys": result.keys_written},
    )
    client.expire(LAST_WARM_KEY, ttl_seconds)
    return result


def warm_stage(client: redis.Redis, data_dir: Path, date: str, ttl_seconds: int) -> dict:
    """Run the warm as a pipeline stage: time it and write its report beside the others."""
    started = time.perf_counter()
    result = warm(client, data_dir, date, ttl_seconds)
    report = {
        **asdict(result),
        "stage": "warm",
        "date": date,
        "ttl_seconds": ttl_seconds,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(Layout(data_dir).report(date, "warm"), report)
    return report
