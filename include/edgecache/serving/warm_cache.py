"""Warm Redis with the night's predictions.

Besides each viewer's predictions it writes what the delivery path needs (see
``edgecache.serving.keys``): the catalog's sizes and next episodes, and per edge the cache loaded
with its prefetch set, the expected demand, the pred ranking valued from it (the counting
rankings start empty, and value a prefetched title below every requested one until it is
asked for) and the transitions between titles.

Every write is a whole value (a SET, or an edge's keys replaced inside MULTI/EXEC), so a
reader never sees half of one; the same predictions always give the same keys and values,
so a re-run is harmless; if a warm fails half-way, keys not yet rewritten keep serving
yesterday's predictions until their TTL runs out. Each edge's warm marker (its meta's date
and t0, see ``edgecache.serving.keys``) lands in the same transaction as the rest of the edge's
keys, after the viewers and the catalog.

``warm(..., edges=[...])`` re-warms some edges only (their viewers, the catalog and their
keys): an edge service does that when it finds an edge's marker gone from Redis, from the
newest complete predictions (``latest_predictions``), with the keys expiring when the
nightly warm's would have (``rewarm_ttl``), so a re-warm never extends stale predictions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import redis
from redis.cluster import REDIS_CLUSTER_HASH_SLOTS as REDIS_CLUSTER_SLOTS
from redis.cluster import RedisCluster, key_slot

from edgecache.layout import Layout, committed, write_json_atomic
from edgecache.schema import ID_RE
from edgecache.serving.admission import ADMISSION_COUNTS, ADMISSION_EPS, ADMISSION_UNASKED, RANKINGS, next_episode_rows
from edgecache.serving.delivery.state import format_catalog_entry
from edgecache.serving.keys import (
    CATALOG_KEY,
    LAST_WARM_KEY,
    TOPK_SUFFIX,
    USER_PREFIX,
    edge_cache_key,
    edge_meta_key,
    edge_prior_key,
    edge_rank_key,
    edge_sizes_key,
    edge_transitions_key,
    user_key,
)
from edgecache.serving.redis_conn import Client, check_access, is_cluster, redis_cli_binary

ID_RE2 = f"^{ID_RE.pattern}$"  # RE2 (pyarrow): $ is the end of the text
TRANSITIONS_PER_TITLE = 10  # followers kept per title for the delivery path's fresh predictions


@dataclass(frozen=True)
class WarmResult:
    users: int
    edges: int
    keys_written: int
    prefetched_titles: int


def _frame(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"no predictions at {path}: run the predict step first")
    return pq.read_table(path, columns=columns).to_pandas()


def day_start(date: str) -> int:
    """Midnight UTC of ``date`` in Unix seconds."""
    return int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp())


def admission_values(scores: pd.Series) -> list[float]:
    """A prefetched title's value at the start of the day (``edgecache.evaluation.policies``)."""
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
    t = transitions.sort_values(
        ["edge_id", "from_content_id", "transitions", "to_content_id"], ascending=[True, True, False, True]
    )
    t = t.groupby(["edge_id", "from_content_id"], sort=False).head(n)
    lists = t.groupby(["edge_id", "from_content_id"], sort=True)["to_content_id"].agg(lambda s: json.dumps(list(s)))
    return lists.rename("to").reset_index()


USERS_PER_BATCH = 20000


def _checked_ids(ids: pa.Array) -> pa.Array:
    """``ids`` if every one is a valid id; else the ValueError ``edgecache.serving.keys`` raises."""
    ok = pc.match_substring_regex(ids, ID_RE2)
    if ids.null_count or not pc.all(ok, min_count=0).as_py():
        bad = next(v for v, good in zip(ids.to_pylist(), ok.to_pylist()) if not good)
        user_key(bad)  # raises with the message every key check gives
        raise ValueError(f"invalid user id {bad!r}")
    return ids


def json_lists(lists: pa.Array) -> pa.Array:
    """Each list of ids as JSON, exactly as ``json.dumps`` writes it (ids need no escaping)."""
    joined = pc.binary_join(lists, '", "')
    out = pc.binary_join_element_wise('["', joined, '"]', "")
    return pc.if_else(pc.equal(pc.list_value_length(lists), 0), pa.scalar("[]"), out)


def resp_sets(keys: pa.Array, values: pa.Array, ttl_seconds: int) -> bytes:
    """``SET key value EX ttl`` for every row, in the Redis protocol (RESP), as one buffer."""
    keys, values = keys.cast(pa.binary()), values.cast(pa.binary())
    if values.null_count:
        raise ValueError("a prediction is null")
    ttl = str(int(ttl_seconds))

    def length(a: pa.Array) -> pa.Array:
        return pc.binary_length(a).cast(pa.string()).cast(pa.binary())

    cmds = pc.binary_join_element_wise(
        b"*5\r\n$3\r\nSET\r\n$",
        length(keys),
        b"\r\n",
        keys,
        b"\r\n$",
        length(values),
        b"\r\n",
        values,
        f"\r\n$2\r\nEX\r\n${len(ttl)}\r\n{ttl}\r\n".encode(),
        b"",
    )
    return b"".join(cmds.to_pylist())


def redis_cli_pipe(client: redis.Redis) -> tuple[list[str], dict[str, str]]:
    """``redis-cli --pipe`` for the server ``client`` talks to (the password goes in the
    environment, never on the command line)."""
    kw = client.connection_pool.connection_kwargs
    cmd = [redis_cli_binary(), "-n", str(kw.get("db") or 0)]
    cmd += (
        ["-s", kw["path"]]
        if kw.get("path")
        else ["-h", str(kw.get("host", "127.0.0.1")), "-p", str(kw.get("port", 6379))]
    )
    if kw.get("username"):
        cmd += ["--user", kw["username"]]
    if client.connection_pool.connection_class.__name__ == "SSLConnection":
        cmd.append("--tls")
    env = dict(os.environ)
    if kw.get("password"):
        env["REDISCLI_AUTH"] = kw["password"]
    return [*cmd, "--pipe"], env


class MassInsert:
    """``redis-cli --pipe`` streams, one per server (one per primary of a Redis Cluster, each
    sent the keys of its own slots); ``close`` checks that every command got an OK."""

    def __init__(self, client: Client) -> None:
        self.cluster = is_cluster(client)
        nodes: list[Any] = client.get_primaries() if is_cluster(client) else [None]
        self.names = [n.name if n else "redis" for n in nodes]
        self.sent = [0] * len(nodes)
        self.outs = [tempfile.TemporaryFile() for _ in nodes]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._said: list[str] = []  # what each redis-cli said, once closed
        self._closed = False
        for node, out in zip(nodes, self.outs):
            cmd, env = redis_cli_pipe(node.redis_connection if node else cast(redis.Redis, client))
            self.procs.append(
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env)
            )
        if self.cluster:
            # slot -> index of the primary that holds it
            index = {n.name: i for i, n in enumerate(nodes)}
            self.slot_node = np.array(
                [
                    index[cast(RedisCluster, client).nodes_manager.get_node_from_slot(s).name]
                    for s in range(REDIS_CLUSTER_SLOTS)
                ],
                dtype=np.int64,
            )

    def set_many(self, keys: pa.Array, values: pa.Array, ttl_seconds: int) -> None:
        if not self.cluster:
            self._write(0, resp_sets(keys, values, ttl_seconds), len(keys))
            return
        node = self.slot_node[[key_slot(k) for k in keys.cast(pa.binary()).to_pylist()]]
        for i in np.unique(node):
            mask = pa.array(node == i)
            self._write(int(i), resp_sets(keys.filter(mask), values.filter(mask), ttl_seconds), int((node == i).sum()))

    def _write(self, i: int, payload: bytes, commands: int) -> None:
        try:
            stdin = self.procs[i].stdin
            assert stdin is not None  # opened with stdin=PIPE
            stdin.write(payload)
        except BrokenPipeError:  # redis-cli gave up (e.g. AUTH failed): say why, not where
            self.close(check=False)
            raise RuntimeError(f"redis-cli --pipe to {self.names[i]} stopped early: {self._said[i]}") from None
        self.sent[i] += commands

    def close(self, check: bool = True) -> None:
        """Wait for every stream; with ``check``, raise unless every command was answered OK."""
        if self._closed:
            return
        self._closed = True
        problems = []
        for name, proc, out, sent in zip(self.names, self.procs, self.outs, self.sent):
            try:
                assert proc.stdin is not None
                proc.stdin.close()  # what was written so far lands whole
            except BrokenPipeError:
                pass
            rc = proc.wait(timeout=600)
            out.seek(0)
            report = out.read().decode(errors="replace")
            out.close()
            self._said.append(pipe_summary(report))
            m = re.search(r"errors: (\d+), replies: (\d+)", report)
            if rc != 0 or m is None or int(m.group(1)) or int(m.group(2)) != sent:
                problems.append(f"{name} (exit {rc}, {sent} sent): {self._said[-1]}")
        if check and problems:
            raise RuntimeError("redis-cli --pipe did not write every key: " + "; ".join(problems))


def pipe_summary(report: str) -> str:
    """What ``redis-cli --pipe`` said, in one line: its first error and its counts."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    counts = next((line for line in lines if line.startswith("errors:")), None)
    errors = [line for line in lines if not line.startswith(("All data transferred", "errors:"))]
    said = "; ".join(x for x in (errors[0] if errors else None, counts) if x)
    return said or "no output"


def warm_users(client: Client, layout: Layout, date: str, ttl_seconds: int, edges: list[str] | None = None) -> int:
    """Write every viewer's top title and ranked list (only the viewers of ``edges`` when
    given); return how many viewers.

    Redis's mass insertion: the SETs are written in the Redis protocol by pyarrow, a batch
    at a time, and streamed through ``redis-cli --pipe``, which reads the replies and counts
    the errors. A redis-py pipeline spends most of its time packing each command and
    parsing each reply in Python (about a sixth of the server's rate here). A batch is
    written only once all its ids passed the key check."""
    path = layout.predictions(date, "users")
    if not path.exists():
        raise FileNotFoundError(f"no predictions at {path}: run the predict step first")
    users = 0
    only = None if edges is None else ds.field("edge_id").isin(edges)
    streams = MassInsert(client)
    try:
        for batch in ds.dataset(str(path), format="parquet").to_batches(
            columns=["user_id", "content_id", "ranked"], filter=only, batch_size=USERS_PER_BATCH
        ):
            ids = _checked_ids(batch.column("user_id"))
            streams.set_many(pc.binary_join_element_wise(USER_PREFIX, ids, ""), batch.column("content_id"), ttl_seconds)
            streams.set_many(
                pc.binary_join_element_wise(USER_PREFIX, ids, TOPK_SUFFIX, ""),
                json_lists(batch.column("ranked")),
                ttl_seconds,
            )
            users += batch.num_rows
    except BaseException:
        streams.close(check=False)
        raise
    streams.close()
    return users


def warm(client: Client, data_dir: Path, date: str, ttl_seconds: int, edges: list[str] | None = None) -> WarmResult:
    """Write day ``date``'s predictions from ``data_dir`` into Redis; return what was written.

    With ``edges``, only those edges (their viewers, the catalog and the edges' keys) and no
    ``edgecache:last_warm``, which records whole warms; an edge the predictions do not
    cover is an error before anything is written."""
    if ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    wanted = None
    if edges is not None:
        for e in edges:
            edge_meta_key(e)  # raises on a malformed id
        wanted = sorted(set(edges))
    layout = Layout(data_dir)
    # read before writing anything, so a missing or wrong input leaves Redis as it was
    prefetch = _frame(layout.predictions(date, "prefetch"), ["edge_id", "content_id", "score", "size_bytes"])
    demand = _frame(layout.predictions(date, "edge_demand"), ["edge_id", "content_id", "score"])
    trans_path = layout.features(date, "transitions")
    followers = (
        top_followers(pq.read_table(trans_path).to_pandas())
        if trans_path.exists()
        else pd.DataFrame(columns=["edge_id", "from_content_id", "to"])
    )
    catalog = pq.read_table(layout.catalog).to_pandas()
    covered = set(prefetch["edge_id"]) | set(demand["edge_id"])
    if wanted is not None and (uncovered := [e for e in wanted if e not in covered]):
        raise ValueError(f"the predictions of {date} have nothing for edge {', '.join(uncovered)}")
    edges = sorted(covered) if wanted is None else wanted
    # one clear line for a refused or missing password, before redis-cli meets it (and
    # after the inputs, so a missing day is named as such even when Redis is down too)
    check_access(client)

    users = warm_users(client, layout, date, ttl_seconds, wanted)
    pipe = client.pipeline(transaction=True)
    pipe.delete(CATALOG_KEY)
    pipe.hset(CATALOG_KEY, mapping=catalog_entries(catalog))  # type: ignore[arg-type]  # str keys are keys
    pipe.expire(CATALOG_KEY, ttl_seconds)
    pipe.execute()

    t0 = day_start(date) + 86400  # the predictions are for D+1
    prefetch_g, demand_g = dict(tuple(prefetch.groupby("edge_id"))), dict(tuple(demand.groupby("edge_id")))
    followers_g = dict(tuple(followers.groupby("edge_id")))
    empty = pd.DataFrame(columns=["content_id", "score", "size_bytes", "from_content_id", "to"])
    titles = edge_keys = 0
    for edge_id in edges:
        pf, dm, fo = (g.get(edge_id, empty) for g in (prefetch_g, demand_g, followers_g))
        keys = [
            edge_cache_key(edge_id),
            edge_sizes_key(edge_id),
            edge_prior_key(edge_id),
            edge_transitions_key(edge_id),
            edge_meta_key(edge_id),
        ]
        # the rankings' keys (yesterday's request counts must not carry over): the cache under
        # each counting ranking, then every ranking's titles, pred's first
        counting = [edge_cache_key(edge_id, name) for name, _ in ADMISSION_COUNTS]
        ranked = counting + [edge_rank_key(edge_id, r) for r in RANKINGS]
        # One transaction per edge: readers see the old state or the new one, never a mix.
        pipe = client.pipeline(transaction=True)
        pipe.delete(*keys, *ranked)
        values = dict(zip(dm["content_id"], admission_values(dm["score"])))
        if len(pf):
            cached = dict(zip(pf["content_id"], admission_values(pf["score"])))
            pipe.zadd(keys[0], cached)
            pipe.hset(keys[1], mapping=dict(zip(pf["content_id"], pf["size_bytes"].astype(int).tolist())))
            # the counting rankings: below every requested title, the least predicted lowest
            unasked = {c: v - ADMISSION_UNASKED for c, v in cached.items()}
            for key in counting:
                pipe.zadd(key, unasked)
            values = {**cached, **values}
        if len(dm):
            pipe.zadd(keys[2], dict(zip(dm["content_id"], dm["score"].astype(float).tolist())))
        if values:
            pipe.zadd(ranked[len(counting)], values)
        if len(fo):
            pipe.hset(keys[3], mapping=dict(zip(fo["from_content_id"], fo["to"])))
        # the warm marker (date, t0) goes in with the rest of the edge: present means all of it is
        pipe.hset(keys[4], mapping={"date": date, "titles": len(pf), "used": int(pf["size_bytes"].sum()), "t0": t0})
        for key in keys + ranked:
            pipe.expire(key, ttl_seconds)
        pipe.execute()
        titles += len(pf)
        # empty keys do not exist
        edge_keys += 1 + (2 + len(counting)) * bool(len(pf)) + bool(len(dm)) + bool(values) + bool(len(fo))

    result = WarmResult(
        users=users,
        edges=len(edges),
        keys_written=2 * users + edge_keys + (2 if wanted is None else 1),  # + the catalog (and last_warm)
        prefetched_titles=titles,
    )
    if wanted is not None:
        return result
    # Written last: its presence says the whole warm for this date completed.
    client.hset(
        LAST_WARM_KEY, mapping={"date": date, "users": result.users, "edges": result.edges, "keys": result.keys_written}
    )
    client.expire(LAST_WARM_KEY, ttl_seconds)
    return result


def warm_stage(client: Client, data_dir: Path, date: str, ttl_seconds: int) -> dict:
    """Run the warm as a pipeline stage: time it and write its report beside the others."""
    started = time.perf_counter()
    result = warm(client, data_dir, date, ttl_seconds)
    report = {
        **asdict(result),
        "stage": "warm",
        "date": date,
        "ttl_seconds": ttl_seconds,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "finished_at": round(time.time(), 3),  # when the keys' TTLs started (see rewarm_ttl)
    }
    write_json_atomic(Layout(data_dir).report(date, "warm"), report)
    return report


# --- re-warming from disk ----------------------------------------------------------------

DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def predictions_complete(layout: Layout, date: str) -> bool:
    """Whether day ``date``'s predictions are all on disk: the predict job committed the
    day's folder (``layout.staging``) and the catalog is there."""
    return committed(layout.predictions_day(date)) and layout.catalog.is_file()


def latest_predictions(data_dir: Path) -> str | None:
    """The newest day whose predictions are complete under ``data_dir``, or None."""
    layout = Layout(data_dir)
    days = sorted(
        (p.name.removeprefix("date=") for p in (data_dir / "predictions").glob("date=*") if p.is_dir()), reverse=True
    )
    return next((d for d in days if DATE_RE.fullmatch(d) and predictions_complete(layout, d)), None)


def rewarm_ttl(data_dir: Path, date: str, ttl_seconds: int, now: float | None = None) -> int:
    """Seconds a re-warm of day ``date``'s predictions may keep its keys: what is left of
    ``ttl_seconds`` since the nightly warm of that day finished (its report), or since the
    predictions were made when no warm report is there. Zero or less: they are stale, and
    re-warming them would undo the expiry that retires stale predictions."""
    layout = Layout(data_dir)
    report = layout.report(date, "warm")
    if report.is_file():
        try:
            started = float(json.loads(report.read_text())["finished_at"])
        except (KeyError, TypeError, ValueError):  # a report from before finished_at was written
            started = report.stat().st_mtime
    else:
        started = layout.predictions(date, "summary.json").stat().st_mtime
    return int(started + ttl_seconds - (time.time() if now is None else now))
