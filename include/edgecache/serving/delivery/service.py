"""The edge service: an ASGI app over ``Delivery``, started by ``edgecache serve --edge E``.

    POST /deliver              {"user_id", "content_id", "edge_id"?, "timestamp"?} -> hit or miss
    GET  /predictions/{user}   the viewer's ranked list in Redis
    GET  /healthz              the process answers (liveness)
    GET  /readyz               Redis answers and every edge's warm marker is there: 200, else 503
    GET  /metrics              Prometheus
    GET  /                     which edges this service serves; OpenAPI docs at /docs

``/deliver`` and ``/predictions`` need ``Authorization: Bearer <token>``
(``edgecache.serving.delivery.auth``); the probes, the metrics, the docs and ``/`` stay open.
Every id is checked against the id contract before anything reaches Redis, so no request
can name a key of its own making; bodies over ``MAX_BODY`` bytes are refused, and a body
that is not a valid request of any kind gets a 4xx, never a 500.

A request's time is bounded (``TimeWindow``): a title's admission value grows with the
time it was asked for, so a far-future time would keep it cached for good. An optional
token bucket per client address (``RateLimiter``) answers 429 beyond its rate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import redis
from fastapi import FastAPI, Security
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgecache.serving.delivery.auth import authorized, load_token
from edgecache.serving.delivery.core import Delivery, DeliveryError, delivery_client, parse_time, warm_keeper

MAX_BODY = 4096  # bytes: a delivery request is well under 300
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
STATUS = {"bad_id": 422, "bad_time": 422, "unknown_edge": 404, "unknown_title": 404}
DAY = 86400.0
CLOCKS = ("wall", "replay")
# Answered without a token (GET only). The probes and the metrics are not rate limited either:
# a throttled readiness probe would take a healthy service out of rotation.
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
UNAUTHORIZED = "a valid 'Authorization: Bearer <token>' header is required"
# Where ``edgecache serve --workers N`` hands its settings to the worker processes.
SERVE_CONFIG_ENV = "EDGECACHE_SERVE_CONFIG"


class NoDelayHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with Nagle's algorithm off on every connection.

    asyncio turns Nagle off only on sockets it opened itself; uvicorn's workers accept on a
    socket the parent made (protocol number 0), so their connections kept Nagle on. A small
    answer then waited for the client's delayed ACK: /healthz took 44 ms at p50 under 200
    connections with two workers, against 1 ms with one."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


class DeliverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    content_id: Id
    edge_id: Id | None = Field(None, description="the edge asked; default: the service's only edge")
    timestamp: dt.datetime | float | None = Field(
        None,
        description="when the request happened (a log's 'YYYY-MM-DD HH:MM:SS', UTC, or Unix seconds); "
        "default now. It must lie within the service's time window (see `edgecache serve "
        "--clock`); replays pass the log's time so values decay in the log's clock.",
    )


class DeliverResponse(BaseModel):
    edge_id: str
    user_id: str
    content_id: str
    source: Literal["edge", "origin"]
    hit: bool
    degraded: bool = Field(description="served from the origin because Redis is unreachable")
    admitted: bool
    next_admitted: bool
    evicted: int
    size_bytes: int | None
    prediction: list[str] | None = Field(description="the fresh ranked list written back on a miss")


def problem(status: int, detail: Any, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """A JSON error reply. ASCII-escaped: a detail may quote a client's text, which can hold
    lone surrogates that a UTF-8 encoder would choke on."""
    return Response(
        json.dumps({"detail": detail, **extra}, ensure_ascii=True),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _when(at: float) -> str:
    """A Unix time for a message: ISO UTC where it has one."""
    try:
        return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # nan, inf, or outside years 1-9999
        return repr(at)


class TimeWindow:
    """Which request times an edge service accepts.

    ``wall`` (the default, for live traffic): within ``max_age`` seconds before and
    ``max_ahead`` seconds after the server's clock; no time means now.

    ``replay`` (for sending a day's logs, whose times are history): within a day either side
    of the edge's warm t0 (the start of the day the warm predicts), that is from the warm's
    own day to the end of the predicted day; no time means the latest time accepted at that
    edge. The bound follows the warm, not the requests, so no run of requests can move it.
    """

    def __init__(
        self,
        clock: str = "wall",
        max_age: float = 3600.0,
        max_ahead: float = 300.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        if not (0 <= max_age < math.inf and 0 <= max_ahead < math.inf):
            raise ValueError(f"max_age and max_ahead must be finite and not negative, got {max_age}, {max_ahead}")
        self.clock = clock
        self.max_age = max_age
        self.max_ahead = max_ahead
        self.now = now
        self._latest: dict[str, float] = {}  # replay: the latest time accepted per edge
        self._days: dict[str, float] = {}  # warm date -> its midnight (UTC)

    def describe(self) -> str:
        if self.clock == "wall":
            return f"request times within {self.max_age:g} s before and {self.max_ahead:g} s after this server's clock"
        return "replay clock: request times within a day either side of each edge's warm t0"

    def _warm_day(self, delivery: Delivery, edge: str) -> float | None:
        """Midnight UTC of the edge's warm date (t0 minus a day); None before any warm."""
        date = delivery.states[edge].warm_date
        if date is None:
            # the service may have started before the first warm: look again (at most every
            # refresh_seconds), since only the decision would otherwise re-read the state
            try:
                date = delivery.refresh(edge).warm_date
            except redis.RedisError:
                date = None
        if date is None:
            return None
        if date not in self._days:
            self._days[date] = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()
        return self._days[date]

    def resolve(self, delivery: Delivery, edge: str, value: dt.datetime | float | None) -> float:
        """The request's time in Unix seconds, or DeliveryError("bad_time") outside the window."""
        if edge not in delivery.states:  # the decision refuses the edge itself
            return parse_time(value)
        if self.clock == "wall":
            now = self.now()
            at = now if value is None else parse_time(value)
            low, high = now - self.max_age, now + self.max_ahead
            why = lambda: (  # noqa: E731
                f"more than {self.max_age:g} s before or {self.max_ahead:g} s after the server's clock ({_when(now)})"
            )
        else:
            day = self._warm_day(delivery, edge)
            if day is None:
                delivery.metrics.rejected.labels(edge, "bad_time").inc()
                raise DeliveryError(
                    "bad_time",
                    f"edge {edge!r} has no warm yet: with --clock replay a request's "
                    "time is checked against the warm's day",
                )
            at = self._latest.get(edge, day + DAY) if value is None else parse_time(value)
            low, high = day, day + 2 * DAY
            why = lambda: f"outside {_when(low)} .. {_when(high)} (a day either side of the warm's t0 for {edge})"  # noqa: E731
        if not low <= at < high:  # NaN fails too
            delivery.metrics.rejected.labels(edge, "bad_time").inc()
            # the message is built only here: formatting the times cost 4 % of a decision
            raise DeliveryError("bad_time", f"request time {_when(at)} is {why()}")
        if self.clock == "replay" and at > self._latest.get(edge, -math.inf):
            self._latest[edge] = at
        return at


class RateLimiter:
    """A token bucket per client address: on average ``rate`` requests a second, in bursts
    of up to ``burst``. Behind a proxy every client shares the proxy's address."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic, max_clients: int = 65536
    ) -> None:
        if not (0 < rate < math.inf and 1 <= burst < math.inf):
            raise ValueError(f"rate must be positive and burst at least 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when), least recent first

    def take(self, client: str) -> float:
        """Spend one token of ``client``'s: 0.0 if it had one, else the seconds until it will."""
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)  # re-inserted last: the dict stays in order of use
        if len(self._buckets) > self.max_clients:
            # the least recently seen client's bucket has had the longest to refill: dropping
            # it costs that client at most what it would have got back anyway
            del self._buckets[next(iter(self._buckets))]
        return wait


def create_app(
    delivery: Delivery,
    registry: CollectorRegistry = REGISTRY,
    *,
    token: str,
    times: TimeWindow | None = None,
    limiter: RateLimiter | None = None,
) -> EdgeService:
    """The service over ``delivery``: requests that need it must carry ``token``; request
    times are bounded by ``times`` (default: the wall clock's window); ``limiter`` (default
    none) throttles each client address."""
    times = times or TimeWindow()
    app = FastAPI(
        title="edgecache edge service",
        summary="Serves titles from the edge cache in Redis, falls back to the origin on a miss.",
        version="1",
        lifespan=warm_keeper(delivery),  # checks the edges' warm markers, re-warms lost ones
    )
    # Declares the scheme in the OpenAPI document (the docs' Authorize button); the check
    # itself is made in EdgeService, before any body is read.
    bearer = Security(HTTPBearer(auto_error=False, description="the edge API token (see the README)"))

    def refuse(exc: DeliveryError) -> Response:
        return problem(STATUS.get(exc.reason, 400), str(exc), reason=exc.reason)

    @app.get("/")
    def info() -> dict:
        return {
            "service": "edgecache edge service",
            "edges": delivery.edges,
            "capacity_bytes": delivery.capacity,
            "origin_latency_seconds": delivery.origin_latency,
            "clock": times.clock,
            "docs": "/docs",
        }

    async def handle_deliver(req: DeliverRequest) -> Response:
        if req.edge_id is None and len(delivery.edges) > 1:
            return problem(422, f"edge_id is required: this service serves {delivery.edges}")
        edge = req.edge_id or delivery.edges[0]
        try:
            at = times.resolve(delivery, edge, req.timestamp)
            d = await delivery.deliver_async(edge, req.user_id, req.content_id, at)
        except DeliveryError as exc:
            return refuse(exc)
        # a plain Response: FastAPI would validate the model again on the way out
        return Response(
            json.dumps(
                {
                    "edge_id": d.edge_id,
                    "user_id": d.user_id,
                    "content_id": d.content_id,
                    "source": d.source,
                    "hit": d.hit,
                    "degraded": d.degraded,
                    "admitted": d.admitted,
                    "next_admitted": d.next_admitted,
                    "evicted": d.evicted,
                    "size_bytes": d.size,
                    "prediction": d.prediction,
                }
            ),
            media_type="application/json",
        )

    app.post(
        "/deliver",
        response_model=DeliverResponse,
        dependencies=[bearer],
        responses={
            401: {"description": "no valid bearer token"},
            404: {"description": "unknown edge or title"},
            413: {"description": "body too large"},
            422: {"description": "malformed id or body, or a time outside the window"},
            429: {"description": "over the client's rate limit (see Retry-After)"},
        },
    )(handle_deliver)

    @app.get("/predictions/{user_id}", dependencies=[bearer], responses={401: {"description": "no valid bearer token"}})
    def prediction(user_id: str) -> Response:
        try:
            ranked = delivery.prediction(user_id)
        except DeliveryError as exc:
            return refuse(exc)
        except redis.RedisError:
            return problem(503, "Redis is unreachable")
        if ranked is None:
            return problem(404, f"no prediction for {user_id!r}")
        return JSONResponse({"user_id": user_id, "top": ranked[0] if ranked else None, "ranked": ranked})

    # async: on the event loop, not in the thread pool a plain def runs in, which under 200
    # connections made the liveness probe slower than a delivery decision
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        # ready: Redis answers and every edge's warm marker is there ("missing": the edge
        # serves from the origin until the service has re-warmed it)
        r = delivery.readiness()
        return JSONResponse(
            {"ready": r.ready, "redis": "up" if r.redis_up else "down", "warm": r.warm, "warm_date": r.warm_date},
            status_code=200 if r.ready else 503,
        )

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return EdgeService(app, handle_deliver, token, limiter)


class EdgeService:
    """The app behind a thin ASGI layer, which does in order, from the headers alone:

    1. the rate limit (every path but the probes and the metrics), 429 with Retry-After;
    2. the token (every request but a GET of ``OPEN_PATHS``), 401;
    3. POST bodies: a Content-Length is required and over ``MAX_BODY`` bytes is refused.

    Then ``POST /deliver`` goes straight to its handler, validated by the same model, past
    FastAPI's routing and request machinery, which costs more per request than the
    decision itself. Everything else is the FastAPI app (docs included)."""

    def __init__(
        self,
        app: FastAPI,
        handle_deliver,
        token: str,  # noqa: ANN001
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.handle_deliver = handle_deliver
        self.token = token
        self.limiter = limiter

    async def __call__(self, scope, receive, send):  # noqa: ANN001, ANN204
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            return await self.app(scope, receive, send)
        if self.limiter is not None:
            client = scope.get("client")
            wait = self.limiter.take(client[0] if client else "")
            if wait:
                return await problem(
                    429,
                    f"over the rate limit of {self.limiter.rate:g} requests/s",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )(scope, receive, send)
        headers = dict(scope["headers"])
        method = scope["method"]
        if not (method == "GET" and scope["path"] in OPEN_PATHS) and not authorized(
            headers.get(b"authorization"), self.token
        ):
            return await problem(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if method != "POST":
            return await self.app(scope, receive, send)
        length = headers.get(b"content-length")
        if length is None:
            return await problem(411, "a Content-Length header is required")(scope, receive, send)
        if not length.isdigit() or int(length) > MAX_BODY:
            return await problem(413, f"request body over {MAX_BODY} bytes")(scope, receive, send)
        if scope["path"] != "/deliver":
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:  # the server holds a body to its Content-Length; this is cheap insurance
                return await problem(413, f"request body over {MAX_BODY} bytes")(scope, receive, send)
            if not message.get("more_body"):
                break
        try:
            req = DeliverRequest.model_validate_json(body)
        except ValidationError as exc:
            # FastAPI's 422 shape, with the location in the body; without the input, which
            # may be bytes that are not UTF-8 or a NaN that JSON cannot carry
            errors = [
                {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False, include_context=False)
            ]
            response = problem(422, errors)
        else:
            response = await self.handle_deliver(req)
        await response(scope, receive, send)


@dataclass(frozen=True)
class ServeConfig:
    """What ``edgecache serve`` was asked for, enough for each worker process to build the
    same service (it travels as JSON in ``$EDGECACHE_SERVE_CONFIG``)."""

    edges: list[str]
    redis_url: str
    cache_bytes: int
    ttl: int
    top_k: int
    origin_latency: float
    clock: str = "wall"
    max_age: float = 3600.0
    max_ahead: float = 300.0
    rate_limit: float = 0.0  # requests/s per client address over the whole service; 0: none
    rate_burst: float = 0.0  # 0: one second's worth
    workers: int = 1

    def __post_init__(self) -> None:
        TimeWindow(self.clock, self.max_age, self.max_ahead)  # raises ValueError on a bad window
        if not 1 <= self.workers <= 64:
            raise ValueError(f"--workers must be between 1 and 64, not {self.workers}")
        if not (0 <= self.rate_limit < math.inf and 0 <= self.rate_burst < math.inf):
            raise ValueError("--rate-limit and --rate-burst must be finite and must not be negative")
        if self.rate_burst and self.rate_burst < 1:
            raise ValueError(f"--rate-burst must be at least 1 (or 0 for one second's worth), not {self.rate_burst:g}")
        self.limiter()  # any other bad pair fails here, before a worker starts

    def times(self) -> TimeWindow:
        return TimeWindow(self.clock, self.max_age, self.max_ahead)

    def limiter(self) -> RateLimiter | None:
        """The per-client limiter of one process. Each worker holds its own buckets and the
        kernel spreads connections over the workers, so each gets its share of the rate."""
        if self.rate_limit <= 0:
            return None
        burst = self.rate_burst or max(1.0, self.rate_limit)  # at least 1 (checked above)
        return RateLimiter(self.rate_limit / self.workers, max(1.0, burst / self.workers))

    def delivery(self) -> Delivery:
        """The delivery path, with each edge's warm state read once (a Redis that does not
        answer yet is only a warning: the service starts degraded and recovers)."""
        from edgecache.serving.redis_conn import redact

        delivery = Delivery(
            delivery_client(self.redis_url),
            self.edges,
            self.cache_bytes,
            self.ttl,
            self.top_k,
            origin_latency=self.origin_latency,
        )
        for edge in delivery.edges:
            try:
                delivery.refresh(edge, force=True)
            except redis.RedisError as exc:
                print(
                    f"warning: could not read the warm state of {edge} from {redact(self.redis_url)}: {exc}",
                    file=sys.stderr,
                )
        return delivery

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def app_from_env() -> EdgeService:
    """One worker process's app (uvicorn's factory for ``edgecache serve --workers N``):
    the settings from ``$EDGECACHE_SERVE_CONFIG``, the token as the parent found it, and
    ``/metrics`` adding up every worker's samples (prometheus_client's multiprocess mode,
    whose folder the parent set in ``$PROMETHEUS_MULTIPROC_DIR``)."""
    config = ServeConfig(**json.loads(os.environ[SERVE_CONFIG_ENV]))
    registry = CollectorRegistry()
    LiveWorkersCollector(registry)
    return create_app(config.delivery(), registry, token=load_token(), times=config.times(), limiter=config.limiter())


def reap_dead_workers(path: str | Path) -> list[int]:
    """Drop the live gauges of worker processes that are gone, and return their pids.

    uvicorn replaces a worker that died or hung, but its gauge files stay in the metrics
    folder: without this, a worker that died while Redis was down would keep
    ``edgecache_redis_up`` (the lowest of the workers') at 0 for good."""
    pids = {int(f.stem.rsplit("_", 1)[1]) for f in Path(path).glob("gauge_live*_*.db")}
    gone = []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)  # no signal: only asks whether the process exists
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(path))
            gone.append(pid)
        except PermissionError:  # it exists, under another user
            pass
    return gone


class LiveWorkersCollector(multiprocess.MultiProcessCollector):
    """Every worker's samples (prometheus_client's multiprocess mode), after the dead
    workers' live gauges are dropped."""

    def collect(self):  # noqa: ANN201
        reap_dead_workers(self._path)
        return super().collect()
