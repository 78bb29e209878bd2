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

Every request carries the edge API token (``edgecache.serving.delivery.auth``). What comes back is
sorted three ways: a decision (a JSON object with 200); a rejection of the request itself
(4xx: the logs hold malformed lines on purpose, and the service refuses them); or an error
(5xx, a reply that is not a JSON object, a timeout, a broken connection). Errors fail the
run, and so does a run in which no request got a decision. A 401 or 403 stops it at once:
a token the service refuses would refuse every request after it.
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
from edgecache.serving.delivery.auth import auth_header, default_path, load_token

MAX_RATE = 20000.0  # requests per second
MAX_DURATION = 3600.0  # seconds
LOOPBACK_NAMES = {"localhost"}
TOKEN_REFUSED = {401, 403}
# 4xx that say the service is busy or slow rather than that the request was malformed
NOT_THE_REQUESTS_FAULT = {408, 429}


class ReplayError(RuntimeError):
    """A replay that cannot start or go on; the message is one line for people."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TokenRefused(ReplayError):
    """The service answered 401 or 403: a missing or wrong token, a set-up problem (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


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
                    isinstance(rec.get(k), str) for k in ("edge_id", "user_id", "content_id", "timestamp")
                ):
                    skipped["missing_field"] += 1
                    continue
                if edges is not None and rec["edge_id"] not in edges:
                    skipped["edge_not_served"] += 1
                    continue
                try:
                    when = dt.datetime.strptime(rec["timestamp"], TIMESTAMP_STRFTIME).replace(tzinfo=dt.UTC)
                except ValueError:
                    skipped["bad_timestamp"] += 1
                    continue
                out.append(
                    LogRequest(rec["edge_id"], rec["user_id"], rec["content_id"], rec["timestamp"], when.timestamp())
                )
    out.sort(key=lambda r: (r.edge_id, r.ts, r.user_id, r.content_id))
    return out, skipped


@dataclass
class Tally:
    """What came back, overall and per edge."""

    sent: int = 0
    hits: int = 0
    misses: int = 0
    degraded: int = 0
    errors: Counter = field(default_factory=Counter)  # server and transport: status or exception name -> count
    rejected: Counter = field(default_factory=Counter)  # 4xx status -> count: the request's own fault
    refused: str | None = None  # why the service refused the token; once set, no lane sends again
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
    out.write(
        f"replay: {t.sent}/{total} requests  {t.sent / elapsed:,.0f}/s  hit ratio {hr}  p99 {p99}  "
        f"degraded {t.degraded}  rejected {sum(t.rejected.values())}  errors {sum(t.errors.values())}   "
        f"{end}"
    )
    out.flush()


def classify(status: int, raw: bytes) -> tuple[str, Any]:
    """What one reply to ``POST /deliver`` means, as (kind, value):

    ``("decided", body)``, ``("rejected", "422")``, ``("error", "500")`` or
    ``("error", "200 not a JSON object")``, and ``("refused", None)`` for 401 and 403."""
    if status in TOKEN_REFUSED:
        return "refused", None
    if 400 <= status < 500 and status not in NOT_THE_REQUESTS_FAULT:
        return "rejected", str(status)
    if 200 <= status < 300:
        try:
            body = json.loads(raw)
        except ValueError:  # UnicodeDecodeError included
            body = None
        if isinstance(body, dict):
            return "decided", body
        return "error", f"{status} not a JSON object"
    return "error", str(status)


def _detail(raw: bytes, limit: int = 200) -> str:
    """A reply's ``detail`` (FastAPI's error field), else its text, on one short line."""
    try:
        body = json.loads(raw)
        text = str(body["detail"]) if isinstance(body, dict) and "detail" in body else raw.decode()
    except (ValueError, UnicodeDecodeError):
        text = raw.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _refusal(status: int, url: str, raw: bytes) -> str:
    return (
        f"the edge service refused the token: HTTP {status} from {url} ({_detail(raw) or 'no detail'}); "
        f"the service and the replay must read the same one ($EDGECACHE_API_TOKEN, "
        f"$EDGECACHE_API_TOKEN_FILE or {default_path()})"
    )


async def _service_edges(session, urls: list[str]) -> dict[str, str]:  # noqa: ANN001
    """edge id -> the service URL that serves it."""
    import aiohttp

    route: dict[str, str] = {}
    for url in urls:
        try:
            async with session.get(f"{url}/") as resp:
                status, raw = resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ReplayError(f"cannot reach the edge service at {url}: {str(exc) or type(exc).__name__}") from None
        if status in TOKEN_REFUSED:
            raise TokenRefused(_refusal(status, f"{url}/", raw))
        try:
            edges = json.loads(raw)["edges"] if status == 200 else None
        except (ValueError, KeyError, TypeError):
            edges = None
        if not isinstance(edges, list) or not all(isinstance(e, str) for e in edges):
            raise ReplayError(
                f"{url}/ answered HTTP {status} without the list of edges it serves "
                f"({_detail(raw) or 'empty reply'}); is it an edge service?"
            )
        for edge in edges:
            if edge in route:
                raise ReplayError(f"edge {edge} is served by both {route[edge]} and {url}", exit_code=2)
            route[edge] = url
    return route


def check_arguments(urls: list[str], rate: float, duration: float) -> list[str]:
    """The service URLs without trailing slashes, if rate, duration and URLs are acceptable; else ValueError."""
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be within (0, {MAX_RATE:g}] requests/s, got {rate}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be within (0, {MAX_DURATION:g}] seconds, got {duration}")
    urls = [loopback_url(u) for u in urls]
    if not urls:
        raise ValueError("name at least one service")
    return urls


async def replay_async(
    urls: list[str],
    logs: Path,
    rate: float,
    duration: float,
    max_requests: int | None = None,
    connections_per_edge: int = 1,
    progress: TextIO | None = sys.stderr,
    send_timestamps: bool = True,
    token: str | None = None,
) -> dict[str, Any]:
    """Send the logs (see the module's docstring) and sum up what came back.

    ``token`` defaults to ``load_token()`` (TokenError when there is none). Raises
    TokenRefused on a 401 or 403, ReplayError when a service cannot be asked for its edges."""
    import aiohttp

    urls = check_arguments(urls, rate, duration)
    headers = auth_header(token or load_token())  # once: every request carries the same token
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
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
            if tally.refused:  # another edge's lane met a 401 or 403 while this one waited
                return
            body = {"edge_id": r.edge_id, "user_id": r.user_id, "content_id": r.content_id}
            if send_timestamps:
                body["timestamp"] = r.timestamp
            tally.sent += 1
            url = f"{route[r.edge_id]}/deliver"
            try:
                async with session.post(url, json=body) as resp:
                    status, raw = resp.status, await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.errors[type(exc).__name__] += 1
                return
            kind, value = classify(status, raw)
            if kind == "decided":
                tally.add(r.edge_id, value, time.perf_counter() - due)
            elif kind == "rejected":
                tally.rejected[value] += 1
            elif kind == "error":
                tally.errors[value] += 1
            elif tally.refused is None:
                tally.refused = _refusal(status, url, raw)

        async def edge_worker(ids: list[int]) -> None:
            queue = iter(ids)
            lock = asyncio.Lock()

            async def lane() -> None:
                while True:
                    async with lock:
                        i = next(queue, None)
                    if tally.refused or i is None or started + slot[i] > deadline:
                        return
                    await one(i)

            await asyncio.gather(*(lane() for _ in range(connections_per_edge)))

        async def ticker(progress: TextIO) -> None:
            while True:
                await asyncio.sleep(1.0)
                _progress(tally, len(requests), started, progress)

        tick = asyncio.create_task(ticker(progress)) if progress is not None else None
        try:
            await asyncio.gather(*(edge_worker(ids) for ids in by_edge.values()))
        finally:
            if tick is not None:
                tick.cancel()
        elapsed = time.perf_counter() - started
        if progress is not None:
            _progress(tally, len(requests), started, progress, end="\n")
    if tally.refused:
        raise TokenRefused(tally.refused)
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
        "rejected_4xx": dict(sorted(tally.rejected.items())),
        "hit_ratio": tally.hit_ratio,
        "per_edge": {
            e: {"hits": h, "decided": n, "hit_ratio": h / n if n else None}
            for e, (h, n) in sorted(tally.per_edge.items())
        },
        "seconds": round(elapsed, 3),
        "throughput_per_second": round(tally.sent / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {
            "p50": tally.percentile_ms(50),
            "p90": tally.percentile_ms(90),
            "p99": tally.percentile_ms(99),
            "max": tally.percentile_ms(100),
        },
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
    yield (
        f"sent {summary['sent']} requests to {len(summary['services'])} service(s) for "
        f"{len(summary['edges'])} edge(s) in {summary['seconds']:.1f} s "
        f"({summary['throughput_per_second']}/s)"
    )
    yield (
        f"hits {summary['hits']}  misses {summary['misses']}  hit ratio {'-' if hr is None else f'{hr:.4f}'}  "
        f"degraded {summary['degraded']}"
    )
    if summary["rejected_4xx"]:
        yield (
            f"rejected by the service (4xx, malformed requests; expected for bad log lines): {summary['rejected_4xx']}"
        )
    yield f"errors (server and transport; any fails the run): {summary['errors'] or 0}"
    yield f"latency p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  max {ms(lat['max'])}"
    if summary["not_sent"]:
        yield f"log records not sent: {summary['not_sent']}"
    if summary["sent"] and not decided(summary):
        yield "no request got a decision: the service rejected or failed every one"


def decided(summary: dict[str, Any]) -> int:
    """Requests the service answered with a decision (degraded ones included)."""
    return summary["hits"] + summary["misses"] + summary["degraded"]


def exit_code(summary: dict[str, Any]) -> int:
    """0 when some request got a decision and none met a server or transport error, else 1.

    Rejections (4xx) do not count: the logs hold malformed lines on purpose. A run in which
    every request was rejected fails all the same, since it measured nothing."""
    return 0 if decided(summary) and not summary["errors"] else 1


def main(
    urls: list[str],
    logs: Path,
    rate: float,
    duration: float,
    *,
    max_requests: int | None = None,
    connections_per_edge: int = 1,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``edgecache replay``: the summary on ``out``, progress on ``err``, and a failure to start
    or a refused token as one line on ``err``. Returns the exit code (2: set-up, 1: errors)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        urls = check_arguments(urls, rate, duration)
        token = load_token()  # before anything is read or sent
    except ValueError as exc:  # TokenError is one
        print(f"error: {exc}", file=err)
        return 2
    try:
        summary = replay(
            urls,
            logs,
            rate,
            duration,
            token=token,
            max_requests=max_requests,
            connections_per_edge=connections_per_edge,
            progress=err,
        )
    except ReplayError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_code
    print(json.dumps(summary, indent=2) if as_json else "\n".join(iter_lines(summary)), file=out)
    return exit_code(summary)
