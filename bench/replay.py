"""Benchmark: the evaluation's replay of every policy at every size on a 10-million-request day.

    python bench/replay.py [--requests 10000000] [--edges 8] [--titles 10000] [--workers N]

Builds a synthetic day with numpy (Zipf popularity over the catalog, a regional twist per
edge, edges of unequal size, sizes of 0.4-2.7 GB, every run of eight titles one series) and a
prediction drawn from a smaller "yesterday" of the same model (scores: its counts scaled to
a day), then times ``edgecache.evaluation.report.replay``: eight policies,
five sizes, caches counted in titles and in bytes, one cache per edge. The reference,
measured in the same run on the same machine, is one plain libCacheSim LRU pass over the
whole day as a single trace (10 % of the titles), so the ratio says how many such passes
the full replay costs. Results go to bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from edgecache.evaluation.report import SIZES_PCT, Catalog, replay, write_trace_csv
from edgecache.layout import write_json_atomic
from edgecache.evaluation.policies import POLICIES, Ranking, Trace, default_workers, oracle_ranking

SERIES_LEN = 8  # titles 1-8, 9-16, ... are the episodes of one series each

HERE = Path(__file__).resolve().parent
DAY = 1744502400  # 2025-04-13 00:00 UTC


def synthetic_day(
    requests: int, edges: int, titles: int, seed: int
) -> tuple[dict[str, Trace], dict[str, Ranking], Catalog]:
    rng = np.random.default_rng(seed)
    pos = np.arange(titles)
    catalog = Catalog.from_frame(pd.DataFrame({
        "content_id": [f"C{i:05d}" for i in range(1, titles + 1)],
        "size_bytes": rng.integers(22, 150, titles) * 60 * 300_000,  # minutes at HD bitrate
        "series_id": [f"S{i // SERIES_LEN:05d}" for i in pos],
        "episode": pos % SERIES_LEN + 1,
    }))
    base = np.arange(1, titles + 1, dtype=float) ** -0.9
    share = 1.0 / np.arange(1, edges + 1)
    counts = rng.multinomial(requests, share / share.sum())
    traces, rankings = {}, {}
    for e, n in enumerate(counts):
        probs = base[rng.permutation(titles)] * rng.lognormal(0.0, 0.5, titles)  # regional taste
        cdf = np.cumsum(probs / probs.sum())
        ids = (np.searchsorted(cdf, rng.random(n), side="right").clip(0, titles - 1) + 1).astype(np.uint64)
        name = f"edge-{e + 1:02d}"
        traces[name] = Trace(ids, catalog.sizes(ids), DAY + np.sort(rng.integers(0, 86400, n)))
        yesterday = (np.searchsorted(cdf, rng.random(max(1, n // 10)), side="right").clip(0, titles - 1) + 1)
        seen = Trace(yesterday.astype(np.uint64), catalog.sizes(yesterday.astype(np.uint64)),
                     np.zeros(len(yesterday), dtype=np.int64))
        ranked = oracle_ranking(seen)
        seen_counts = np.unique(seen.obj_id, return_counts=True)[1]  # the ranking is by count, then id
        score = np.sort(seen_counts)[::-1].astype(np.float64) * 10  # a tenth of a day, scaled to a day
        rankings[name] = Ranking(ranked.obj_id, ranked.size, score, catalog.sequels)
    return traces, rankings, catalog


def reference_lru_seconds(traces: dict[str, Trace], capacity: int, tmp: Path) -> float:
    import libcachesim as lcs

    whole = Trace(*(np.concatenate([getattr(t, f) for t in traces.values()]) for f in ("obj_id", "size", "timestamp")))
    path = tmp / "whole.oracleGeneral"
    whole.with_file(path)
    reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam(ignore_obj_size=True))
    cache = lcs.LRU(capacity, hashpower=20)
    started = time.perf_counter()
    cache.process_trace(reader)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000_000)
    parser.add_argument("--edges", type=int, default=8)
    parser.add_argument("--titles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--per-policy", action="store_true", help="also time each policy on its own")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    traces, rankings, catalog = synthetic_day(args.requests, args.edges, args.titles, args.seed)
    build = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="edgecache-bench-") as tmp:
        reference = reference_lru_seconds(traces, max(1, args.titles // 10), Path(tmp))
        started = time.perf_counter()
        result = replay(traces, rankings, catalog, SIZES_PCT, workers=args.workers)
        replay_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for edge, t in traces.items():
            write_trace_csv(t, Path(tmp) / f"edge={edge}.csv")
        csv_seconds = time.perf_counter() - started
        per_policy = {}
        if args.per_policy:
            for name in POLICIES:
                started = time.perf_counter()
                replay(traces, rankings, catalog, SIZES_PCT, workers=args.workers, policies=[name])
                per_policy[name] = time.perf_counter() - started

    cores = default_workers()
    print(f"{args.requests} requests at {args.edges} edges, {args.titles} titles; {cores} cores, "
          f"{args.workers} workers; synthetic day built in {build:.1f} s")
    print(f"reference: one libCacheSim LRU pass over the whole day   {reference:7.2f} s")
    print(f"{'step':<44}{'seconds':>9}{'x reference':>13}")
    rows = [(f"replay: {len(POLICIES)} policies x {len(SIZES_PCT)} sizes x titles/bytes", replay_seconds),
            ("per-edge CSV traces", csv_seconds)]
    rows += [(f"  {name} alone", s) for name, s in per_policy.items()]
    for label, secs in rows:
        print(f"{label:<44}{secs:9.2f}{secs / reference:13.1f}")
    lru10 = result["results"]["titles"]["LRU"]["10"]["object_hit_ratio"]
    print(f"(sanity: LRU object hit ratio at 10 % of the titles = {lru10:.3f}; "
          f"within 3 minutes: {'yes' if replay_seconds < 180 else 'NO'})")
    out = HERE / "results" / "replay.json"
    write_json_atomic(out, {
        "requests": args.requests, "edges": args.edges, "titles": args.titles, "seed": args.seed,
        "cores": cores, "workers": args.workers, "python": platform.python_version(), "machine": platform.machine(),
        "reference_lru_pass_seconds": round(reference, 3), "replay_seconds": round(replay_seconds, 2),
        "replay_x_reference": round(replay_seconds / reference, 1), "csv_seconds": round(csv_seconds, 2),
        "per_policy_seconds": {k: round(v, 2) for k, v in per_policy.items()},
        "cpu_count": os.cpu_count(),
    })
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
