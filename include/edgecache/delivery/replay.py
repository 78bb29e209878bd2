"""The replay driver: send a day's viewing logs to edge services, at a bounded rate.

    edgecache replay --date 2025-04-13 --service http://127.0.0.1:8101 [--service ...]
                     [--rate 500] [--duration 60] [--max-requests N]

Each service says which edges it serves (``GET /``); every log record of those edges is
sent to its service in the order the evaluation replays them (by edge, time, viewer,
title), each edge's requests one after another so a cache sees them in that order.
Requests leave on an open-loop schedule (request i at start + i / rate, over all
edges), so latencies count the wait behind a slow service too. The run stops at the end
of the logs, after ``duration`` seconds or after ``max_requests``, whichever comes first.
Only loopback addresses are accepted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import numpy as np

from edgecache.schema import TIMESTAMP_STRFTIME

MAX_RATE = 20000.0  # requests per second
MAX_DURATION = 3600.0  # seconds
LOOPBACK_NAMES = {"localhost"}


def loopback_url(url: str) -> str:
    """``url`` without a trailing slash, if it is http on a loopback address; else ValueError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    ok = host in LOOPBACK_NAMES
    if not ok:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
    if parts.scheme != "http" or not ok:
        raise ValueError(f"replays go to loopback http services only (127.0.0.1, ::1, localhost), got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class LogRequest:
    edge_id: str
    user_id: str
    content_id: str
    timestamp: str  # as in the log
    ts: float  # Unix seconds


def read_logs(logs: Path, edges: set[str] | None = None) -> tuple[list[LogRequest], Counter]:
    """A day's log records (of ``edges``, or all) in replay order, and what could not be read.

    Records whose id fields are not strings or whose time does not parse are counted, not
    sent; ids are sent as they are, so malformed ones meet the service's validation."""
    out: list[LogRequest] = []
    skipped: Counter = Counter()
    files = sorted(p for p in logs.glob("edge=*/*") if p.is_file() and not p.name.startswith(("_", ".")))
    if not files:
        raise FileNotFoundError(f"no log files under {logs}")
    for path in files:
        folder_edge = path.parent.name.removeprefix("edge=")
        with open(path, encoding="utf-8-sig", errors="replace") as fh:  # -sig: a BOM is no data
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    skipped["bad_json"] += 1
                    continue
                if isinstance(rec, dict) and rec.get("edge_id") is None:  # as validation does
                    rec["edge_id"] = folder_edge
                if not isinstance(rec, dict) or not all(
                        isinstance(rec.get(k), str) for k in ("edge_id", "user_id", "content_id", "timestamp")):
                    skipped["missing_field"] += 1
                    continue
                if edges is not None and rec["edge_id"] not in edges:
                    skipped["edge_not_served"] += 1
                    continue
                try:
                    when = dt.datetime.strptime(rec["timestamp"], TIMESTAMP_STRFTIME).replace(tzinfo=dt.timezone.utc)
                except ValueError:
                    skipped["bad_timestamp"] += 1
                    continue
                out.append(LogRequest(rec["edge_id"], rec["user_id"], rec["content_id"], rec["timestamp"],
                                      when.timestamp()))
    out.sort(key=lambda r: (r.edge_id, r.ts, r.user_id, r.content_id))
    return out, skipped


@dataclass
class Tally:
    """What came back, overall and per edge."""

    sent: int = 0
    hits: int = 0
    misses: int = 0
    degraded: int = 0
    errors: Counter = field(default_factory=Counter)  # status code or exception name -> count
    latencies: list[float] = field(default_factory=list)  # seconds, from the scheduled send time
    per_edge: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # hits, decided

    @property
    def hit_ratio(self) -> float | None:
        decided = self.hits + self.misses
        return self.hits / decided if decided else None

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else None

    def add(self, edge: str, body: dict[str, Any], latency: float) -> None:
        self.latencies.append(latency)
        if body.get("degraded"):
            self.degraded += 1
            return
        hit = bool(body.get("hit"))
        self.hits += hit
        self.misses += not hit
        self.per_edge[edge][0] += hit
        self.per_edge[edge][1] += 1


def _progress(t: Tally, total: int, started: float, out: TextIO, end: str = "\r") -> None:
    elapsed = max(time.perf_counter() - started, 1e-9)
    hr = "-" if t.hit_ratio is None else f"{t.hit_ratio:.3f}"
    p99 = "-" if not t.latencies else f"{t.percentile_ms(99):.1f} ms"
    out.write(f"replay: {t.sent}/{total} requests  {t.sent / elapsed:,.0f}/s  hit ratio {hr}  p99 {p99}  "
              f"degraded {t.degraded}  errors {sum(t.errors.values())}   {end}")
    out.flush()


async def _service_edges(session, urls: list[str]) -> dict[str, str]:  # noqa: ANN001
    """edge id -> the service URL that serves it."""
    route: dict[str, str] = {}
    for url in urls:
        async with session.get(f"{url}/") as resp:
            resp.raise_for_status()
            for edge in (await resp.json())["edges"]:
                if edge in route:
                    raise ValueError(f"edge {edge} is served by both {route[edge]} and {url}")
                route[edge] = url
    return route


async def replay_async(
    urls: list[str],
    logs: Path,
    rate: float,
    duration: float,
    max_requests: int | None = None,
    connections_per_edge: int = 1,
    progress: TextIO | None = sys.stderr,
    send_timestamps: bool = True,
) -> dict[str, Any]:
    import aiohttp

    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be within (0, {MAX_RATE:g}] requests/s, got {rate}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be within (0, {MAX_DURATION:g}] seconds, got {duration}")
    urls = [loopback_url(u) for u in urls]
    if not urls:
        raise ValueError("name at least one service")
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        route = await _service_edges(session, urls)
        requests, skipped = read_logs(logs, set(route))
        if max_requests is not None:
            # the first max_requests in time order over all edges, still in replay order
            keep = sorted(range(len(requests)), key=lambda i: (requests[i].ts, i))[:max_requests]
            requests = [requests[i] for i in sorted(keep)]
        # open-loop schedule over all edges in time order; each edge works through its own queue
        order = sorted(range(len(requests)), key=lambda i: (requests[i].ts, requests[i].edge_id, i))
        slot = np.empty(len(requests))
        slot[order] = np.arange(len(requests)) / rate
        by_edge: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            by_edge[r.edge_id].append(i)

        tally = Tally()
        started = time.perf_counter()
        deadline = started + duration

        async def one(i: int) -> None:
            r = requests[i]
            due = started + slot[i]
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            body = {"edge_id": r.edge_id, "user_id": r.user_id, "content_id": r.content_id}
            if send_timestamps:
                body["timestamp"] = r.timestamp
            tally.sent += 1
            try:
                async with session.post(f"{route[r.edge_id]}/deliver", json=body) as resp:
                    payload = await resp.json(content_type=None)
                    if resp.status == 200:
                        tally.add(r.edge_id, payload, time.perf_counter() - due)
                    else:
                        tally.errors[str(resp.status)] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                tally.errors[type(exc).__name__] += 1

        async def edge_worker(ids: list[int]) -> None:
            queue = iter(ids)
            lock = asyncio.Lock()

            async def lane() -> None:
                while True:
                    async with lock:
                        i = next(queue, None)
                    if i is None or started + slot[i] > deadline:
                        return
                    await one(i)

            await asyncio.gather(*(lane() for _ in range(connections_per_edge)))

        async def ticker() -> None:
            while True:
                await asyncio.sleep(1.0)
                _progress(tally, len(requests), started, progress)

        tick = asyncio.create_task(ticker()) if progress is not None else None
        try:
            await asyncio.gather(*(edge_worker(ids) for ids in by_edge.values()))
        finally:
            if tick is not None:
                tick.cancel()
        elapsed = time.perf_counter() - started
        if progress is not None:
            _progress(tally, len(requests), started, progress, end="\n")
    return {
        "services": urls,
        "edges": sorted(route),
        "requests_in_logs": len(requests),
        "not_sent": dict(sorted(skipped.items())),
        "sent": tally.sent,
        "hits": tally.hits,
        "misses": tally.misses,
        "degraded": tally.degraded,
        "errors": dict(sorted(tally.errors.items())),
        "hit_ratio": tally.hit_ratio,
        "per_edge": {e: {"hits": h, "decided": n, "hit_ratio": h / n if n else None}
                     for e, (h, n) in sorted(tally.per_edge.items())},
        "seconds": round(elapsed, 3),
        "throughput_per_second": round(tally.sent / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {"p50": tally.percentile_ms(50), "p90": tally.percentile_ms(90),
                       "p99": tally.percentile_ms(99), "max": tally.percentile_ms(100)},
    }


def replay(urls: list[str], logs: Path, rate: float, duration: float, **kwargs: Any) -> dict[str, Any]:
    """``replay_async`` on a fresh event loop."""
    return asyncio.run(replay_async(urls, logs, rate, duration, **kwargs))


def iter_lines(summary: dict[str, Any]) -> Iterator[str]:
    """The final summary, for people."""
    lat = summary["latency_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} ms"

    hr = summary["hit_ratio"]
    yield (f"sent {summary['sent']} requests to {len(summary['services'])} service(s) for "
           f"{len(summary['edges'])} edge(s) in {summary['seconds']:.1f} s "
           f"({summary['throughput_per_second']}/s)")
    yield (f"hits {summary['hits']}  misses {summary['misses']}  hit ratio {'-' if hr is None else f'{hr:.4f}'}  "
           f"degraded {summary['degraded']}  errors {summary['errors'] or 0}")
    yield f"latency p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  max {ms(lat['max'])}"
    if summary["not_sent"]:
        yield f"log records not sent: {summary['not_sent']}"
