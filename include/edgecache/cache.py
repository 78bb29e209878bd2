"""Warm Redis with the night's predictions.

Every write is a whole value (a SET, or an edge's cache replaced inside MULTI/EXEC), so a
reader never sees half of one; the same predictions always give the same keys and values,
so a re-run is harmless; if a warm fails half-way, keys not yet rewritten keep serving
yesterday's predictions until their TTL runs out.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.dataset as ds
import redis

from edgecache.keys import LAST_WARM_KEY, edge_cache_key, edge_meta_key, user_key, user_topk_key
from edgecache.layout import Layout, write_json_atomic

BATCH = 2000  # commands per pipeline round trip


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


def warm(client: redis.Redis, data_dir: Path, date: str, ttl_seconds: int) -> WarmResult:
    """Write day ``date``'s predictions from ``data_dir`` into Redis; return what was written."""
    if ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    layout = Layout(data_dir)
    users = 0
    for batch in _batches(layout.predictions(date, "users"), ["user_id", "content_id", "ranked"]):
        pipe = client.pipeline(transaction=False)
        for user_id, top, ranked in zip(*(batch.column(i).to_pylist() for i in range(3))):
            pipe.set(user_key(user_id), top, ex=ttl_seconds)
            pipe.set(user_topk_key(user_id), json.dumps(ranked), ex=ttl_seconds)
        pipe.execute()
        users += batch.num_rows

    per_edge: dict[str, dict[str, int]] = defaultdict(dict)
    for batch in _batches(layout.predictions(date, "prefetch"), ["edge_id", "content_id", "rank"]):
        for edge_id, content_id, rank in zip(*(batch.column(i).to_pylist() for i in range(3))):
            per_edge[edge_id][content_id] = rank
    for edge_id, members in sorted(per_edge.items()):
        # One transaction per edge: readers see the old cache or the new one, never a mix.
        pipe = client.pipeline(transaction=True)
        pipe.delete(edge_cache_key(edge_id))
        pipe.zadd(edge_cache_key(edge_id), members)
        pipe.expire(edge_cache_key(edge_id), ttl_seconds)
        pipe.hset(edge_meta_key(edge_id), mapping={"date": date, "titles": len(members)})
        pipe.expire(edge_meta_key(edge_id), ttl_seconds)
        pipe.execute()

    result = WarmResult(
        users=users,
        edges=len(per_edge),
        keys_written=2 * users + 2 * len(per_edge) + 1,
        prefetched_titles=sum(len(m) for m in per_edge.values()),
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
