"""The warm step against a real (embedded) redis-server."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgecache.serving.warm_cache import json_lists, latest_predictions, rewarm_ttl, warm, warm_stage
from edgecache.serving.keys import (
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
from edgecache.layout import COMMIT_MARKER, Layout, read_json
from edgecache.serving.admission import ADMISSION_EPS

DATE = "2025-04-12"
TTL = 3600


CATALOG = pa.table({
    "content_id": ["C1", "C2", "C3", "C4"], "size_bytes": [100, 200, 300, 400],
    "series_id": ["S1", "S1", None, None], "episode": [1, 2, None, None],
})


def write_predictions(root: Path, users: list[tuple[str, str, list[str]]], prefetch: list[tuple[str, int, str]]):
    """Predictions, catalog and transitions as the pipeline writes them; every prefetched title
    is in edge_demand with score 10 / rank, and C4 is expected at edge-01 but not prefetched."""
    layout = Layout(root)
    demand = [*prefetch, ("edge-01", 9, "C4")]
    for path, table in (
        (layout.predictions(DATE, "users"),
         pa.table({"user_id": [u[0] for u in users], "edge_id": [u[1] for u in users],
                   "content_id": [u[2][0] for u in users], "ranked": [u[2] for u in users]})),
        (layout.predictions(DATE, "prefetch"),
         pa.table({"edge_id": [p[0] for p in prefetch], "rank": [p[1] for p in prefetch],
                   "content_id": [p[2] for p in prefetch], "score": [10.0 / p[1] for p in prefetch],
                   "size_bytes": [100] * len(prefetch)})),
        (layout.predictions(DATE, "edge_demand"),
         pa.table({"edge_id": [p[0] for p in demand], "content_id": [p[2] for p in demand],
                   "score": [10.0 / p[1] for p in demand], "rank": [p[1] for p in demand]})),
        (layout.features(DATE, "transitions"),
         pa.table({"edge_id": ["edge-01", "edge-01", "edge-01"], "from_content_id": ["C1", "C1", "C2"],
                   "to_content_id": ["C3", "C2", "C4"], "transitions": [2, 5, 1]})),
    ):
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-0.parquet")
    layout.reference.mkdir(parents=True, exist_ok=True)
    pq.write_table(CATALOG, layout.catalog)


USERS = [(f"U{i:03d}", "edge-01" if i % 2 else "edge-02", [f"C{i % 7}", f"C{i % 5 + 10}"]) for i in range(5000)]
PREFETCH = [("edge-01", 1, "C1"), ("edge-01", 2, "C2"), ("edge-02", 1, "C3")]


def snapshot(client) -> dict:
    """Every key with its type and value (TTL excluded: it counts down)."""
    keys = sorted(client.scan_iter(count=10000))
    pipe = client.pipeline(transaction=False)  # two round trips, not two per key
    for key in keys:
        pipe.type(key)
    kinds = pipe.execute()
    read = {b"string": lambda k: pipe.get(k), b"zset": lambda k: pipe.zrange(k, 0, -1, withscores=True),
            b"hash": lambda k: pipe.hgetall(k)}
    for key, kind in zip(keys, kinds):
        if kind not in read:
            raise AssertionError(f"unexpected type {kind} of {key}")
        read[kind](key)
    return dict(zip(keys, pipe.execute()))


def ttls(client) -> dict:
    """Every key's TTL in seconds (-1: none)."""
    keys = list(client.scan_iter(count=10000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.ttl(key)
    return dict(zip(keys, pipe.execute()))


def test_warm_writes_the_seed_key_and_the_scheme(tmp_path, redis_client):
    write_predictions(tmp_path, USERS, PREFETCH)
    result = warm(redis_client, tmp_path, DATE, TTL)
    assert result.users == 5000 and result.edges == 2 and result.prefetched_titles == 3
    for user_id, _, ranked in USERS[:50]:
        assert redis_client.get(user_key(user_id)) == ranked[0].encode()  # the seed's GET user:<id>
        assert json.loads(redis_client.get(user_topk_key(user_id))) == ranked
    # the cache holds the prefetch set, valued ln(expected requests + eps): C1 (10) above C2 (5)
    cache = redis_client.zrange(edge_cache_key("edge-01"), 0, -1, withscores=True)
    assert [c for c, _ in cache] == [b"C2", b"C1"]
    assert [v for _, v in cache] == pytest.approx([math.log(5 + ADMISSION_EPS), math.log(10 + ADMISSION_EPS)])
    assert redis_client.hgetall(edge_sizes_key("edge-01")) == {b"C1": b"100", b"C2": b"100"}
    assert redis_client.hgetall(edge_meta_key("edge-02")) == {
        b"date": DATE.encode(), b"titles": b"1", b"used": b"100", b"t0": str(1744416000 + 86400).encode()}
    # the delivery path's state: every expected title, the followers most frequent first, the catalog
    assert redis_client.zrevrange(edge_prior_key("edge-01"), 0, -1) == [b"C1", b"C2", b"C4"]
    assert json.loads(redis_client.hget(edge_transitions_key("edge-01"), "C1")) == ["C2", "C3"]
    assert redis_client.hgetall(CATALOG_KEY) == {b"C1": b"100 C2", b"C2": b"200 -", b"C3": b"300 -",
                                                 b"C4": b"400 -"}
    assert redis_client.hget(LAST_WARM_KEY, "users") == b"5000"
    assert result.keys_written == len(list(redis_client.scan_iter()))


def test_every_key_expires(tmp_path, redis_client):
    write_predictions(tmp_path, USERS[:100], PREFETCH)
    warm(redis_client, tmp_path, DATE, TTL)
    left = ttls(redis_client)
    assert left and all(0 < t <= TTL for t in left.values())


def test_rewarming_gives_identical_state(tmp_path, redis_client):
    write_predictions(tmp_path, USERS, PREFETCH)
    warm(redis_client, tmp_path, DATE, TTL)
    first = snapshot(redis_client)
    warm(redis_client, tmp_path, DATE, TTL)
    assert snapshot(redis_client) == first


def test_edge_cache_is_replaced_not_merged(tmp_path, redis_client):
    redis_client.zadd(edge_cache_key("edge-01"), {"OLD": 1})
    write_predictions(tmp_path, USERS[:10], PREFETCH)
    warm(redis_client, tmp_path, DATE, TTL)
    assert sorted(redis_client.zrange(edge_cache_key("edge-01"), 0, -1)) == [b"C1", b"C2"]


def test_failed_warm_leaves_previous_predictions_serving(tmp_path, redis_client, monkeypatch):
    monkeypatch.setattr("edgecache.serving.warm_cache.USERS_PER_BATCH", 2000)
    redis_client.set(user_key("U004999"), "YESTERDAY")
    redis_client.hset(LAST_WARM_KEY, mapping={"date": "2025-04-11"})
    # A forged id in the last batch: the warm must stop before writing that batch.
    bad = USERS[:4000] + [("U1:*", "edge-01", ["C1"])] + [(f"U00{4000 + i}", "edge-01", ["C9"]) for i in range(1000)]
    write_predictions(tmp_path, bad, PREFETCH)
    with pytest.raises(ValueError, match="invalid user id"):
        warm(redis_client, tmp_path, DATE, TTL)
    assert redis_client.get(user_key("U004999")) == b"YESTERDAY"
    assert redis_client.hget(LAST_WARM_KEY, "date") == b"2025-04-11"
    assert redis_client.get(user_key(USERS[0][0])) == USERS[0][2][0].encode()  # earlier batches landed whole
    assert not redis_client.exists("user:U1:*") and not redis_client.exists("user:U1:*:topk")


def test_missing_predictions_is_a_clear_error(tmp_path, redis_client):
    with pytest.raises(FileNotFoundError, match="run the predict step first"):
        warm(redis_client, tmp_path, DATE, TTL)


def test_warm_stage_writes_its_report(tmp_path, redis_client):
    write_predictions(tmp_path, USERS[:10], PREFETCH)
    report = warm_stage(redis_client, tmp_path, DATE, TTL)
    assert read_json(Layout(tmp_path).report(DATE, "warm")) == report
    assert report["users"] == 10 and report["wall_seconds"] >= 0


def test_viewer_values_are_written_as_json_dumps_writes_them():
    lists = [["C1", "C2"], [], ["C3"]]
    assert json_lists(pa.array(lists)).to_pylist() == [json.dumps(x) for x in lists]


def test_a_null_viewer_id_is_refused(tmp_path, redis_client):
    write_predictions(tmp_path, [("U1", "edge-01", ["C1"])], PREFETCH)
    path = Layout(tmp_path).predictions(DATE, "users") / "part-0.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(0, "user_id", pa.array([None], pa.string())), path)
    with pytest.raises(ValueError, match="invalid user id None"):
        warm(redis_client, tmp_path, DATE, TTL)


def test_warm_of_some_edges_writes_their_viewers_catalog_and_keys_only(tmp_path, redis_client):
    write_predictions(tmp_path, USERS[:10], PREFETCH)
    result = warm(redis_client, tmp_path, DATE, TTL, edges=["edge-02"])
    assert result.edges == 1 and result.users == 5 and result.prefetched_titles == 1
    keys = {k.decode() for k in redis_client.scan_iter()}
    # the viewers of edge-02 (even ids), not those of edge-01; no record of a whole warm
    assert {k for k in keys if k.startswith("user:")} == {f"user:U{i:03d}{s}" for i in range(0, 10, 2)
                                                          for s in ("", ":topk")}
    assert not any("edge-01" in k for k in keys) and LAST_WARM_KEY not in keys and CATALOG_KEY in keys
    assert redis_client.hmget(edge_meta_key("edge-02"), "date", "t0") == [DATE.encode(), b"1744502400"]
    assert result.keys_written == len(keys)


def test_warm_of_an_edge_the_predictions_lack_writes_nothing(tmp_path, redis_client):
    write_predictions(tmp_path, USERS[:10], PREFETCH)
    with pytest.raises(ValueError, match="nothing for edge edge-09"):
        warm(redis_client, tmp_path, DATE, TTL, edges=["edge-01", "edge-09"])
    assert redis_client.dbsize() == 0


def complete(root: Path, date: str = DATE) -> None:
    """What the predict job writes last: the summary, then the day's commit marker."""
    Layout(root).predictions(date, "summary.json").write_text("{}")
    (Layout(root).predictions_day(date) / COMMIT_MARKER).touch()


def test_latest_predictions_is_the_newest_complete_day(tmp_path):
    assert latest_predictions(tmp_path) is None
    write_predictions(tmp_path, USERS[:10], PREFETCH)
    assert latest_predictions(tmp_path) is None  # not committed: the predict job has not finished
    complete(tmp_path)
    assert latest_predictions(tmp_path) == DATE
    newer = Layout(tmp_path).predictions("2025-04-13", "users")
    newer.mkdir(parents=True)
    Layout(tmp_path).predictions("2025-04-13", "summary.json").write_text("{}")  # but no marker
    assert latest_predictions(tmp_path) == DATE


def test_a_rewarm_keeps_the_nightly_warms_expiry(tmp_path, redis_client):
    write_predictions(tmp_path, USERS[:10], PREFETCH)
    complete(tmp_path)
    report = warm_stage(redis_client, tmp_path, DATE, TTL)
    assert rewarm_ttl(tmp_path, DATE, TTL, now=report["finished_at"] + 600) == TTL - 600
    assert rewarm_ttl(tmp_path, DATE, TTL, now=report["finished_at"] + TTL + 1) < 1  # stale: not re-warmed
    Layout(tmp_path).report(DATE, "warm").unlink()  # never warmed: the clock starts with the predictions
    made = Layout(tmp_path).predictions(DATE, "summary.json").stat().st_mtime
    assert rewarm_ttl(tmp_path, DATE, TTL, now=made + 10) == TTL - 10


# --- a warm killed part-way -----------------------------------------------------------------

KILL_USERS, KILL_EDGES = 30000, 120


def write_many(root: Path) -> list[str]:
    """Predictions big enough that a warm takes seconds: many viewers, many edges."""
    layout = Layout(root)
    edges = [f"edge-{i:03d}" for i in range(KILL_EDGES)]
    n, e = KILL_USERS, KILL_EDGES
    tables = {
        "users": pa.table({"user_id": [f"U{i:06d}" for i in range(n)], "edge_id": [edges[i % e] for i in range(n)],
                           "content_id": [f"C{i % 4 + 1}" for i in range(n)],
                           "ranked": [[f"C{i % 4 + 1}", f"C{(i + 1) % 4 + 1}"] for i in range(n)]}),
        "prefetch": pa.table({"edge_id": [x for x in edges for _ in range(2)], "rank": [1, 2] * e,
                              "content_id": ["C1", "C2"] * e, "score": [10.0, 5.0] * e, "size_bytes": [100, 200] * e}),
        "edge_demand": pa.table({"edge_id": [x for x in edges for _ in range(3)], "content_id": ["C1", "C2", "C4"] * e,
                                 "score": [10.0, 5.0, 1.0] * e, "rank": [1, 2, 3] * e}),
    }
    for name, table in tables.items():
        path = layout.predictions(DATE, name)
        path.mkdir(parents=True)
        pq.write_table(table, path / "part-0.parquet")
    layout.reference.mkdir(parents=True)
    pq.write_table(CATALOG, layout.catalog)
    return edges


def test_a_warm_killed_part_way_and_run_again_equals_an_uninterrupted_one(tmp_path, redis_server):
    """SIGKILL `edgecache warm` (and its redis-cli) while it writes the viewers, right after
    the catalog, and half-way through the edges; the next warm leaves exactly the keys,
    types and values of an uninterrupted warm, every one with a TTL."""
    client = redis_server.client()
    edges = write_many(tmp_path)
    client.flushdb()
    warm(client, tmp_path, DATE, TTL)
    expected = snapshot(client)
    assert len(expected) == 2 * KILL_USERS + KILL_EDGES * 9 + 2

    def meta(i: int) -> bool:
        return bool(client.exists(edge_meta_key(edges[i])))

    points = {  # where to kill: a test on Redis, polled while the warm runs
        "viewers": lambda: client.dbsize() >= KILL_USERS // 3,
        "catalog": lambda: bool(client.exists(CATALOG_KEY)),
        "edges": lambda: meta(KILL_EDGES // 2),
    }
    for point, reached in points.items():
        client.flushdb()
        proc = subprocess.Popen([sys.executable, "-m", "edgecache.cli", "warm", "--date", DATE, "--data-dir",
                                 str(tmp_path), "--redis-url", redis_server.url, "--ttl", str(TTL)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        try:
            while not reached():
                assert proc.poll() is None, f"the warm ended before the {point} point"
                assert time.monotonic() < deadline, f"the warm did not reach the {point} point in 120 s"
                time.sleep(0.002)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the warm and its redis-cli, mid-write
            proc.wait(timeout=30)
        # killed part-way: never the whole warm
        assert not client.exists(LAST_WARM_KEY) and not meta(KILL_EDGES - 1), point
        assert 0 < client.dbsize() < len(expected), point
        if point == "viewers":
            assert not client.exists(CATALOG_KEY)
        warm(client, tmp_path, DATE, TTL)
        assert snapshot(client) == expected, point
        left = ttls(client)
        assert len(left) == len(expected) and all(0 < t <= TTL for t in left.values()), point
    client.flushdb()
