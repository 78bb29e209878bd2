"""The edge service: an ASGI app over ``Delivery``, started by ``edgecache serve --edge E``.

    POST /deliver              {"user_id", "content_id", "edge_id"?, "timestamp"?} -> hit or miss
    GET  /predictions/{user}   the viewer's ranked list in Redis
    GET  /healthz              the process answers (liveness)
    GET  /readyz               Redis answers (readiness): 200, else 503
    GET  /metrics              Prometheus
    GET  /                     which edges this service serves; OpenAPI docs at /docs

Every id is checked against the id contract before anything reaches Redis, so no request
can name a key of its own making; bodies over ``MAX_BODY`` bytes are refused.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Literal

import redis
from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgecache.delivery.core import Delivery, DeliveryError, parse_time

MAX_BODY = 4096  # bytes: a delivery request is well under 300
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
STATUS = {"bad_id": 422, "bad_time": 422, "unknown_edge": 404, "unknown_title": 404}


class DeliverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    content_id: Id
    edge_id: Id | None = Field(None, description="the edge asked; default: the service's only edge")
    timestamp: dt.datetime | float | None = Field(
        None, description="when the request happened (a log's 'YYYY-MM-DD HH:MM:SS', UTC, or Unix seconds); "
                          "default now. Replays pass the log's time so values decay in the log's clock.")


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


def create_app(delivery: Delivery, registry: CollectorRegistry = REGISTRY) -> EdgeService:
    app = FastAPI(
        title="edgecache edge service",
        summary="Serves titles from the edge cache in Redis, falls back to the origin on a miss.",
        version="1",
    )

    def refuse(exc: DeliveryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=STATUS.get(exc.reason, 400))

    @app.get("/")
    def info() -> dict:
        return {"service": "edgecache edge service", "edges": delivery.edges,
                "capacity_bytes": delivery.capacity, "origin_latency_seconds": delivery.origin_latency,
                "docs": "/docs"}

    async def handle_deliver(req: DeliverRequest) -> Response:
        if req.edge_id is None and len(delivery.edges) > 1:
            return JSONResponse({"detail": f"edge_id is required: this service serves {delivery.edges}"},
                                status_code=422)
        edge = req.edge_id or delivery.edges[0]
        try:
            d = await delivery.deliver_async(edge, req.user_id, req.content_id, parse_time(req.timestamp))
        except DeliveryError as exc:
            return refuse(exc)
        # a plain Response: FastAPI would validate the model again on the way out
        return Response(json.dumps({
            "edge_id": d.edge_id, "user_id": d.user_id, "content_id": d.content_id, "source": d.source,
            "hit": d.hit, "degraded": d.degraded, "admitted": d.admitted, "next_admitted": d.next_admitted,
            "evicted": d.evicted, "size_bytes": d.size, "prediction": d.prediction}), media_type="application/json")

    app.post("/deliver", response_model=DeliverResponse,
             responses={404: {"description": "unknown edge or title"}, 413: {"description": "body too large"},
                        422: {"description": "malformed id or body"}})(handle_deliver)

    @app.get("/predictions/{user_id}")
    def prediction(user_id: str) -> JSONResponse:
        try:
            ranked = delivery.prediction(user_id)
        except DeliveryError as exc:
            return refuse(exc)
        except redis.RedisError:
            return JSONResponse({"detail": "Redis is unreachable"}, status_code=503)
        if ranked is None:
            return JSONResponse({"detail": f"no prediction for {user_id!r}"}, status_code=404)
        return JSONResponse({"user_id": user_id, "top": ranked[0] if ranked else None, "ranked": ranked})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ok = delivery.check_ready()
        warmed = {e: s.warm_date for e, s in delivery.states.items()}
        return JSONResponse({"ready": ok, "redis": "up" if ok else "down", "warm_date": warmed},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return EdgeService(app, handle_deliver)


class EdgeService:
    """The app behind a thin ASGI layer: POST bodies over ``MAX_BODY`` bytes are refused
    before they are read, and ``POST /deliver`` goes straight to its handler, validated by
    the same model, past FastAPI's routing and request machinery, which costs more per
    request than the decision itself. Everything else is the FastAPI app (docs included)."""

    def __init__(self, app: FastAPI, handle_deliver) -> None:  # noqa: ANN001
        self.app = app
        self.handle_deliver = handle_deliver

    async def __call__(self, scope, receive, send):  # noqa: ANN001, ANN204
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        problem = None
        if length is None:
            problem = (411, "a Content-Length header is required")
        elif not length.isdigit() or int(length) > MAX_BODY:
            problem = (413, f"request body over {MAX_BODY} bytes")
        if problem:
            return await JSONResponse({"detail": problem[1]}, status_code=problem[0])(scope, receive, send)
        if scope["path"] != "/deliver":
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            req = DeliverRequest.model_validate_json(body)
        except ValidationError as exc:
            # FastAPI's own 422 shape, with the location in the body
            errors = [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False)]
            response: Response = JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
        else:
            response = await self.handle_deliver(req)
        await response(scope, receive, send)
