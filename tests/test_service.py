"""The edge service over HTTP and the replay driver, against real redis-servers."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edgecache.serving.warm_cache import warm
from edgecache.serving.delivery import Delivery
from edgecache.serving.delivery.auth import auth_header
from edgecache.serving.delivery.metrics import DeliveryMetrics
from edgecache.serving.delivery.replay import loopback_url, read_logs, replay
from edgecache.serving.delivery.service import MAX_BODY, RateLimiter, TimeWindow, create_app
from edgecache.serving.keys import edge_cache_key
from edgecache.ops.redis_server import EmbeddedRedis, free_port
from tests.services import process
from tests.delivery_data import CATALOG, DATE, DEMAND, PREFETCH, T0, TRANSITIONS, TTL, write_day

TOKEN = "test-token-0123456789abcdef"
AUTH = auth_header(TOKEN)


@pytest.fixture
def api(small_delivery):
    """The service over the small day, on the replay clock (its requests carry the day's
    times), with the token on every request."""
    d, registry, _ = small_delivery
    return TestClient(create_app(d, registry, token=TOKEN, times=TimeWindow("replay")), headers=AUTH)


def post(api: TestClient, **body):  # noqa: ANN201
    return api.post("/deliver", json=body)


def redis_snapshot(client) -> dict:  # noqa: ANN001
    return {k: client.dump(k) for k in client.scan_iter()}


def rejected(registry, reason: str) -> float:  # noqa: ANN001
    return registry.get_sample_value("edgecache_rejected_requests_total", {"edge": "E1", "reason": reason})


def test_deliver_hit_and_miss_over_http(api):
    miss = post(api, user_id="U2", content_id="C05", edge_id="E1", timestamp=T0)
    body = miss.json()
    assert body["source"] == "origin" and body["admitted"] and body["prediction"] == ["C06", "C07", "C01", "C02"]
    hit = post(api, user_id="U1", content_id="C01", timestamp="2025-04-13 00:01:00")
    assert hit.status_code == 200 and hit.json()["source"] == "edge" and hit.json()["hit"] is True
    assert api.get("/predictions/U2").json() == {"user_id": "U2", "top": "C06",
                                                 "ranked": ["C06", "C07", "C01", "C02"]}
    metrics = {s.name: s.value for f in text_string_to_metric_families(api.get("/metrics").text)
               for s in f.samples if s.labels.get("edge") == "E1" and "source" not in s.labels}
    assert metrics["cache_hits_total"] == 1 and metrics["cache_misses_total"] == 1
    assert metrics["edgecache_active_users"] == 2 and metrics["edgecache_redis_up"] == 1


@pytest.mark.parametrize("body, status, needle", [
    ({"user_id": "U1:*", "content_id": "C01"}, 422, "user_id"),
    ({"user_id": "U1", "content_id": "C01\n"}, 422, "content_id"),
    ({"user_id": "U" * 65, "content_id": "C01"}, 422, "at most 64"),
    ({"user_id": "U1"}, 422, "content_id"),
    ({"user_id": "U1", "content_id": "C01", "extra": 1}, 422, "extra"),
    ({"user_id": "U1", "content_id": "C01", "timestamp": "yesterday"}, 422, "timestamp"),
    ({"user_id": "U1", "content_id": "C01", "timestamp": 1e300}, 422, "bad_time"),
    ({"user_id": "U1", "content_id": "C01", "edge_id": "E9"}, 404, "not served here"),
    ({"user_id": "U1", "content_id": "C99"}, 404, "not in the catalog"),
])
def test_bad_requests_get_a_clear_4xx(api, redis_client, body, status, needle):
    before = redis_snapshot(redis_client)
    resp = post(api, **body)
    assert resp.status_code == status and needle in resp.text
    assert redis_snapshot(redis_client) == before


# Bodies that used to get a 500 and a traceback: the input went back into the 422's detail,
# and bytes that are not UTF-8 or a NaN cannot be written as JSON.
@pytest.mark.parametrize("raw, needle", [
    (b'{"edge_id":"E1","user_id":NaN,"content_id":"C01"}', "string_type"),
    (b'{"user_id":"U1","content_id":Infinity}', "string_type"),
    (b'{"user_id":"U1","content_id":"C01","timestamp":NaN}', "bad_time"),
    (b'{"user_id":"U1","content_id":"C01","timestamp":-Infinity}', "bad_time"),
    (b'{"user_id":"U\xff\xfe","content_id":"C01"}', "json_invalid"),
    (b'{"user_id":"\\udc80","content_id":"C01"}', "json_invalid"),
    (b"\xef\xbb\xbf\x80", "json_invalid"),
    (b"", "json_invalid"),
    (b"user_id=U1&content_id=C01", "json_invalid"),
    (b"[" * 3000, "json_invalid"),
    (b'{"user_id":{"a":[1,{"b":null}]},"content_id":["C01"]}', "string_type"),
    (b'[{"user_id":"U1","content_id":"C01"}]', "model_type"),
    (b'{"user_id":"U1","content_id":"C01","timestamp":{"$date":1}}', "timestamp"),
])
def test_malformed_bodies_get_a_422_and_log_nothing(api, redis_client, caplog, raw, needle):
    caplog.set_level(logging.WARNING)
    before = redis_snapshot(redis_client)
    resp = api.post("/deliver", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and needle in resp.text
    json.loads(resp.text)  # the reply itself is valid JSON
    assert redis_snapshot(redis_client) == before
    assert not caplog.records


def test_oversize_and_unframed_bodies_are_refused(api):
    resp = api.post("/deliver", content=b"{" + b" " * MAX_BODY + b"}", headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "over" in resp.json()["detail"]
    assert api.get("/predictions/bad:id").status_code == 422
    assert api.get("/predictions/NOBODY").status_code == 404


def test_probes_docs_and_info(api):
    anonymous = TestClient(api.app)  # no token: all of these stay open
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["warm_date"] == {"E1": DATE}
    assert anonymous.get("/").json()["edges"] == ["E1"]
    schema = anonymous.get("/openapi.json").json()
    assert "/deliver" in schema["paths"] and "HTTPBearer" in schema["components"]["securitySchemes"]
    assert anonymous.get("/docs").status_code == 200
    assert "cache_hits_total" in anonymous.get("/metrics").text


# --- the token ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
])
def test_deliver_and_predictions_need_the_token(api, redis_client, headers):
    anonymous = TestClient(api.app, headers=headers)
    before = redis_snapshot(redis_client)
    resp = anonymous.post("/deliver", json={"user_id": "U2", "content_id": "C05", "timestamp": T0})
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert resp.json() == {"detail": "a valid 'Authorization: Bearer <token>' header is required"}
    # refused from the headers, before the body: no Content-Length needed to learn that
    assert anonymous.post("/deliver").status_code == 401
    assert anonymous.get("/predictions/U1").status_code == 401  # viewing data
    assert anonymous.get("/no-such-page").status_code == 401  # only the listed paths are open
    assert redis_snapshot(redis_client) == before
    # the same request with the token is decided: the 401 was the token's doing
    assert api.post("/deliver", json={"user_id": "U2", "content_id": "C05", "timestamp": T0}).status_code == 200


# --- the time window ----------------------------------------------------------------------


def test_far_future_times_cannot_pin_titles(small_delivery, redis_client):
    """The attack: requests for titles nobody predicted, stamped 2099. A title's admission
    value grows with its request time, so such titles would evict the prefetched ones and
    never be evicted themselves. Both clocks refuse them and the cache stays as warmed."""
    d, registry, _ = small_delivery
    cache = edge_cache_key("E1")
    warmed = redis_client.zrange(cache, 0, -1)
    assert sorted(warmed) == [b"C01", b"C04"]
    attack = [{"user_id": f"X{i}", "content_id": c, "timestamp": "2099-12-31 00:00:00"}
              for i, c in enumerate(["C05", "C06", "C07", "C08"] * 20)]
    for clock in ("wall", "replay"):
        api = TestClient(create_app(d, registry, token=TOKEN, times=TimeWindow(clock)), headers=AUTH)
        answers = [api.post("/deliver", json=body) for body in attack]
        assert {a.status_code for a in answers} == {422}
        assert all(a.json()["reason"] == "bad_time" for a in answers)
        assert redis_client.zrange(cache, 0, -1) == warmed
    assert rejected(registry, "bad_time") == 2 * len(attack)
    # Without the window (the decision alone accepts times up to 2100) the same requests
    # do take the cache: the refusal above is what keeps it.
    year_2099 = dt.datetime(2099, 12, 31, tzinfo=dt.timezone.utc).timestamp()
    for body in attack[:4]:
        d.decide("E1", body["user_id"], body["content_id"], year_2099)
    assert not set(redis_client.zrange(cache, 0, -1)) & set(warmed)


def test_wall_clock_window(small_delivery):
    d, registry, _ = small_delivery
    now = T0 + 7200.0  # the server's clock, fixed
    api = TestClient(create_app(d, registry, token=TOKEN, times=TimeWindow("wall", 3600, 300, now=lambda: now)),
                     headers=AUTH)

    def status(at: float | None) -> int:
        body = {"user_id": "U1", "content_id": "C01"}
        if at is not None:
            body["timestamp"] = at
        return api.post("/deliver", json=body).status_code

    assert [status(at) for at in (None, now, now - 3600, now + 299.5, now - 1800)] == [200] * 5
    assert [status(at) for at in (now + 300.5, now - 3600.5, now + 86400, 4e9, T0 - 86400)] == [422] * 5
    assert rejected(registry, "bad_time") == 5


def test_replay_clock_window(small_delivery, redis_client):
    """In replay mode the window is a day either side of the warm's t0 (the predicted day's
    start): from the warm's own day to the end of the predicted day."""
    d, registry, _ = small_delivery
    api = TestClient(create_app(d, registry, token=TOKEN, times=TimeWindow("replay")), headers=AUTH)

    def status(at: str | float | None, user: str = "U1") -> int:
        body = {"user_id": user, "content_id": "C01"}
        if at is not None:
            body["timestamp"] = at
        return api.post("/deliver", json=body).status_code

    ok = ["2025-04-12 00:00:00", "2025-04-13 23:59:59", "2025-04-13 10:00:00", T0 + 3600]
    assert [status(at) for at in ok] == [200] * 4
    bad = ["2025-04-11 23:59:59", "2025-04-14 00:00:00", "2099-12-31 00:00:00", time.time()]
    assert [status(at) for at in bad] == [422] * 4
    # no time: the latest one accepted at the edge, where the wall clock would be refused
    assert status(None, user="U7") == 200
    assert rejected(registry, "bad_time") == 4
    # an edge with no warm has no day to check against: refused, with the reason
    cold_registry = CollectorRegistry()
    cold = Delivery(redis_client, ["E1", "E2"], 200, TTL, metrics=DeliveryMetrics(cold_registry))
    cold_api = TestClient(create_app(cold, cold_registry, token=TOKEN, times=TimeWindow("replay")), headers=AUTH)
    resp = cold_api.post("/deliver", json={"edge_id": "E2", "user_id": "U1", "content_id": "C01",
                                           "timestamp": "2025-04-13 10:00:00"})
    assert resp.status_code == 422 and "no warm yet" in resp.json()["detail"]


# --- the rate limit -----------------------------------------------------------------------


def test_token_bucket():
    now = [100.0]
    bucket = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [0.0] * 3  # the burst
    assert bucket.take("a") == pytest.approx(0.5)  # empty: a token in half a second
    assert bucket.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert bucket.take("a") == 0.0 and bucket.take("a") == pytest.approx(0.5)
    now[0] += 60  # refilled to the burst, not beyond
    assert [bucket.take("a") for _ in range(4)][-1] > 0
    small = RateLimiter(rate=1, burst=1, clock=lambda: now[0], max_clients=2)
    for client in ("a", "b", "c"):
        small.take(client)
    assert len(small._buckets) == 2 and "a" not in small._buckets  # the least recent is dropped
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def test_rate_limit_over_http(small_delivery):
    d, registry, _ = small_delivery
    now = [0.0]
    limiter = RateLimiter(rate=1, burst=2, clock=lambda: now[0])
    app = create_app(d, registry, token=TOKEN, times=TimeWindow("replay"), limiter=limiter)
    one = TestClient(app, headers=AUTH, client=("10.0.0.1", 4000))
    other = TestClient(app, headers=AUTH, client=("10.0.0.2", 4000))
    body = {"user_id": "U1", "content_id": "C01", "timestamp": T0}
    assert [one.post("/deliver", json=body).status_code for _ in range(2)] == [200, 200]
    limited = one.post("/deliver", json=body)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "rate limit" in limited.json()["detail"]
    assert one.get("/predictions/U1").status_code == 429  # every API path counts
    assert TestClient(app, client=("10.0.0.1", 4000)).post("/deliver").status_code == 429  # before the token
    assert other.post("/deliver", json=body).status_code == 200  # per address
    # the probes and the metrics are never limited
    assert {one.get(p).status_code for p in ("/healthz", "/readyz", "/metrics") for _ in range(5)} == {200}
    now[0] += 1.0
    assert one.post("/deliver", json=body).status_code == 200
    assert registry.get_sample_value("cache_hits_total", {"edge": "E1"}) == 4  # 429s never reached Redis


# --- any body at all ----------------------------------------------------------------------


def _json_values(depth: int = 3):  # noqa: ANN202
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=70), st.sampled_from(["U1", "C01", "E1", "E9", "C99", "2025-04-13 10:00:00",
                                                               "2099-12-31 00:00:00", "", " "]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                        max_leaves=12)


FIELDS = ["user_id", "content_id", "edge_id", "timestamp"]
VALID = {"user_id": "U1", "content_id": "C01", "edge_id": "E1", "timestamp": "2025-04-13 10:00:00"}


@st.composite
def mutated_bodies(draw) -> bytes:  # noqa: ANN001
    """A valid request with some fields dropped, replaced by any JSON, or joined by others;
    sometimes not an object at all; written with NaN and Infinity allowed, and sometimes
    with bytes flipped, cut short or spliced in that are not UTF-8."""
    if draw(st.integers(0, 9)) == 0:
        doc = draw(_json_values())
    else:
        doc = {k: v for k, v in VALID.items() if draw(st.booleans()) or k in ("user_id", "content_id")}
        for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
            doc[key] = draw(_json_values())
        doc.update(draw(st.dictionaries(st.text(max_size=8), _json_values(), max_size=2)))
    raw = bytearray(json.dumps(doc).encode())  # NaN and Infinity written as such
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["flip", "cut", "splice"]))
        if action == "flip" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\u0000",
                                               b'\\ud800', b"NaN", b"-Infinity", b"1e999", b"[" * 50]))
    return bytes(raw)


@settings(derandomize=True, database=None, max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), mutated_bodies()))
def test_no_body_gets_a_5xx_or_logs_an_error(api, caplog, body):
    """Whatever the bytes, the answer is a decision or a 4xx with a JSON detail, and
    nothing is logged at ERROR (a 500 would log its traceback there)."""
    api_ = TestClient(api.app, headers=AUTH, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR):
        resp = api_.post("/deliver", content=body, headers={"content-type": "application/json"})
    assert resp.status_code < 500, (body, resp.status_code, resp.text)
    assert resp.status_code in (200, 404, 413, 422), (body, resp.status_code, resp.text)
    assert isinstance(json.loads(resp.text), dict)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], (body, caplog.records)
    caplog.clear()


# --- a real service process ------------------------------------------------------------


def write_logs(root: Path, lines: list[str]) -> Path:
    logs = root / "logs" / "date=2025-04-13"
    (logs / "edge=E1").mkdir(parents=True)
    (logs / "edge=E1" / "part-0.json").write_text("\n".join(lines) + "\n")
    return logs


def log_line(user: str, title: str, at: str, edge: str = "E1") -> str:
    return json.dumps({"user_id": user, "device": "TV", "content_id": title, "duration": 40, "timestamp": at,
                       "edge_id": edge})


def serve_cmd(port: int, url: str, *extra: str) -> list[str]:
    # 200 bytes: the small catalog's cache
    return [sys.executable, "-m", "edgecache.cli", "serve", "--edge", "E1", "--port", str(port), "--redis-url", url,
            "--cache-gb", "2e-7", "--top-k", "4", *extra]


@pytest.mark.parametrize("env, args, needle", [
    ({"EDGECACHE_API_TOKEN": "change-me"}, [], "placeholder"),
    ({"EDGECACHE_API_TOKEN": "too-short"}, [], "shorter than 16"),
    ({"EDGECACHE_API_TOKEN_FILE": "/nonexistent/api_token"}, [], "cannot read the API token file"),
    ({}, ["--clock", "sundial"], "clock must be one of"),
    ({"EDGECACHE_CLOCK": "sundial"}, [], "clock must be one of"),
    ({}, ["--rate-limit", "-5"], "must not be negative"),
    ({}, ["--rate-limit", "inf"], "finite"),
    ({"EDGECACHE_RATE_LIMIT": "nan"}, [], "finite"),
    ({}, ["--rate-limit", "5", "--rate-burst", "0.5"], "at least 1"),
    ({}, ["--workers", "0"], "between 1 and 64"),
    ({"EDGECACHE_WORKERS": "65"}, [], "between 1 and 64"),
    ({}, ["--max-ahead", "inf"], "finite"),
])
def test_serve_refuses_a_bad_configuration_in_one_line(tmp_path, env, args, needle):
    """Before it opens Redis or a port: one line on stderr, exit 2, no traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECACHE_")}
    out = subprocess.run([sys.executable, "-m", "edgecache.cli", "serve", "--edge", "E1", "--port", str(free_port()),
                          "--redis-url", "redis://127.0.0.1:1/0", *args],
                         env={**base, "EDGECACHE_LOCAL_DIR": str(tmp_path), **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    # neither a configured token, bad or not, nor a bad flag leads to a new token file
    assert not (tmp_path / "api_token").exists()


def metrics_of(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("edge") == "E1" and "source" not in s.labels and "reason" not in s.labels}


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_replay_driver_against_a_service(tmp_path, redis_server, monkeypatch):
    monkeypatch.setenv("EDGECACHE_API_TOKEN", TOKEN)  # the service's and the replay's
    client = redis_server.client()
    client.flushdb()
    write_day(tmp_path, CATALOG, PREFETCH, DEMAND, TRANSITIONS)
    warm(client, tmp_path, DATE, TTL)
    good = [log_line("U1", "C01", "2025-04-13 10:00:00"), log_line("U2", "C05", "2025-04-13 09:00:00"),
            log_line("U3", "C02", "2025-04-13 11:00:00")]
    logs = write_logs(tmp_path, [*good, "not json", log_line("U4", "C01", "13/04/2025"),
                                 log_line("U:5", "C01", "2025-04-13 12:00:00"),
                                 log_line("U6", "C01", "2025-04-13 12:00:00", edge="E2")])
    requests, skipped = read_logs(logs, {"E1"})
    assert [r.user_id for r in requests] == ["U2", "U1", "U3", "U:5"]  # by time within the edge
    assert skipped == {"bad_json": 1, "bad_timestamp": 1, "edge_not_served": 1}
    port = free_port()
    # the logs' times are history: the replay clock accepts them, the wall clock would not
    with process(serve_cmd(port, redis_server.url, "--clock", "replay"), f"http://127.0.0.1:{port}/healthz"):
        summary = replay([f"http://127.0.0.1:{port}"], logs, rate=50, duration=30, progress=None)
    # U2 misses C05, which is admitted; U1 hits C01, whose next episode C02 is admitted
    # (evicting C05); U3 hits C02; U:5 is refused
    assert summary["sent"] == 4 and summary["errors"] == {} and summary["rejected_4xx"] == {"422": 1}
    assert (summary["hits"], summary["misses"], summary["degraded"]) == (2, 1, 0)
    assert summary["hit_ratio"] == pytest.approx(2 / 3)
    assert summary["not_sent"] == {"bad_json": 1, "bad_timestamp": 1, "edge_not_served": 1}
    client.flushdb()


def test_served_with_the_defaults_and_a_rate_limit(tmp_path, redis_server, monkeypatch):
    """`edgecache serve` as an operator starts it: the wall clock, the token from the
    environment, and the rate limit from its flags."""
    monkeypatch.setenv("EDGECACHE_API_TOKEN", TOKEN)
    client = redis_server.client()
    client.flushdb()
    write_day(tmp_path, CATALOG, PREFETCH, DEMAND, TRANSITIONS)
    warm(client, tmp_path, DATE, TTL)
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def deliver(body: dict, headers: dict = AUTH) -> tuple[int, Any, dict]:  # noqa: B006
        req = urllib.request.Request(f"{base}/deliver", json.dumps(body).encode(),
                                     {"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.headers, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, json.loads(exc.read())

    try:
        with process(serve_cmd(port, redis_server.url, "--rate-limit", "0.01", "--rate-burst", "3"),
                     f"{base}/healthz") as proc:
            assert deliver({"user_id": "U1", "content_id": "C01"}, {})[0] == 401
            status, _, body = deliver({"user_id": "X1", "content_id": "C05", "timestamp": "2099-12-31 00:00:00"})
            assert status == 422 and body["reason"] == "bad_time"
            status, _, body = deliver({"user_id": "U1", "content_id": "C01"})  # now, by the server's clock
            assert status == 200 and body["hit"] is True
            status, headers, body = deliver({"user_id": "U1", "content_id": "C01"})
            # a token every 100 s: slow enough that no refill comes within the test
            assert status == 429 and 90 <= int(headers["Retry-After"]) <= 100 and "0.01 requests/s" in body["detail"]
            assert status_of(f"{base}/healthz") == 200 and status_of(f"{base}/readyz") == 200
    finally:
        client.flushdb()
    banner = proc.stdout.read().decode()
    assert "after this server's clock" in banner and "0.01 requests/s per client, bursts of 3" in banner


def wait_until(condition, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_redis_killed_and_restored_mid_traffic(tmp_path, monkeypatch):
    """The service keeps answering from the origin while Redis is down, says it is not
    ready, counts the failures, and decides again by itself once Redis is back."""
    monkeypatch.setenv("EDGECACHE_API_TOKEN", TOKEN)
    server = EmbeddedRedis(tmp_path / "redis", port=free_port())
    server.start()
    client = server.client()
    write_day(tmp_path, CATALOG, PREFETCH, DEMAND, TRANSITIONS)
    warm(client, tmp_path, DATE, TTL)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sent, answers, stop = [0], [], threading.Event()

    def traffic() -> None:
        titles = ["C01", "C05", "C02", "C06"]
        while not stop.is_set() and sent[0] < 3000:  # bounded
            body = json.dumps({"user_id": f"U{sent[0] % 7}", "content_id": titles[sent[0] % 4]}).encode()
            req = urllib.request.Request(f"{base}/deliver", body, {"Content-Type": "application/json", **AUTH})
            sent[0] += 1
            with urllib.request.urlopen(req, timeout=5) as resp:
                answers.append(json.loads(resp.read()))
            time.sleep(0.002)

    try:
        with process(serve_cmd(port, server.url), f"{base}/healthz"):
            worker = threading.Thread(target=traffic, daemon=True)
            worker.start()
            wait_until(lambda: len(answers) >= 50)
            os.kill(int(server.pidfile.read_text()), signal.SIGKILL)  # no clean shutdown
            server.pidfile.unlink()
            wait_until(lambda: sum(a["degraded"] for a in answers) >= 30)
            assert status_of(f"{base}/readyz") == 503
            assert status_of(f"{base}/healthz") == 200
            down = metrics_of(port)
            assert down["edgecache_redis_up"] == 0 and down["edgecache_redis_errors_total"] >= 1
            server.start()  # the same port, empty: the warm is gone
            warm(client, tmp_path, DATE, TTL)
            mark = len(answers)
            wait_until(lambda: any(a["hit"] for a in answers[mark:]))  # a hit: decisions again
            assert status_of(f"{base}/readyz") == 200
            stop.set()
            worker.join(timeout=10)
            assert not worker.is_alive()
            m = metrics_of(port)
    finally:
        stop.set()
        server.stop()
    assert len(answers) == sent[0]  # every request was answered, none failed
    degraded = sum(a["degraded"] for a in answers)
    assert m["cache_hits_total"] == sum(a["hit"] for a in answers)
    assert m["cache_misses_total"] == sum(not a["hit"] and not a["degraded"] for a in answers)
    assert m["edgecache_degraded_requests_total"] == degraded >= 30
    assert m["cache_hits_total"] + m["cache_misses_total"] + degraded == sent[0]
    assert m["edgecache_redis_up"] == 1
    assert 1 <= m["edgecache_redis_errors_total"] <= degraded  # one per failed call; the rest wait for the retry


def test_a_dead_workers_live_gauges_leave_the_metrics(tmp_path):
    """With several workers each gauge is the lowest (or highest, or sum) over the live
    ones: a worker that died reporting Redis down must not keep the service's figure at 0
    after uvicorn has replaced it."""
    from prometheus_client import CollectorRegistry, multiprocess

    from edgecache.serving.delivery.service import LiveWorkersCollector, reap_dead_workers

    code = ("import sys, time; from prometheus_client import Gauge; "
            "Gauge('edgecache_redis_up', 'up', ['edge'], multiprocess_mode='livemin').labels('E1').set(int(sys.argv[1])); "
            "print('set', flush=True); time.sleep(float(sys.argv[2]))")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    dead = subprocess.run([sys.executable, "-c", code, "0", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert dead.stdout == "set\n", dead.stderr
    alive = subprocess.Popen([sys.executable, "-c", code, "1", "60"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout.readline() == "set\n"
        assert len(list(tmp_path.glob("gauge_livemin_*.db"))) == 2

        def up(collector) -> float | None:  # noqa: ANN001
            registry = CollectorRegistry()
            collector(registry, path=str(tmp_path))
            return registry.get_sample_value("edgecache_redis_up", {"edge": "E1"})

        assert up(multiprocess.MultiProcessCollector) == 0.0  # prometheus_client alone: the dead 0 stays
        assert up(LiveWorkersCollector) == 1.0  # the dead worker's 0 was dropped
        assert len(list(tmp_path.glob("gauge_livemin_*.db"))) == 1
        assert reap_dead_workers(tmp_path) == []  # the live one stays
    finally:
        alive.kill()
        alive.wait(timeout=10)
    assert len(reap_dead_workers(tmp_path)) == 1 and not list(tmp_path.glob("gauge_livemin_*.db"))


def test_worker_connections_have_nagle_off():
    """uvicorn's workers accept on a socket made with protocol number 0, on which asyncio
    leaves Nagle's algorithm on: a small answer then waited ~40 ms for the client's delayed
    ACK. The service's HTTP protocol turns it off on every connection it is given."""
    import asyncio
    import socket

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from edgecache.serving.delivery.service import NoDelayHttp

    async def nodelay_of_accepted(protocol: type) -> int:
        config = Config(app=lambda scope, receive, send: None, lifespan="off")
        config.load()
        seen: list[int] = []

        class Probe(protocol):  # type: ignore[misc, valid-type]
            def connection_made(self, transport) -> None:  # noqa: ANN001
                super().connection_made(transport)
                sock = transport.get_extra_info("socket")
                seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        listener = socket.socket(family=socket.AF_INET)  # as uvicorn's Config.bind_socket makes it
        listener.bind(("127.0.0.1", 0))
        assert listener.proto == 0
        server = await asyncio.get_running_loop().create_server(
            lambda: Probe(config=config, server_state=ServerState(), app_state={}), sock=listener)
        try:
            _, writer = await asyncio.open_connection(*listener.getsockname())
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()
        finally:
            server.close()
        return seen[0]

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert asyncio.run(nodelay_of_accepted(HttpToolsProtocol)) == 0  # the default: Nagle on
    assert asyncio.run(nodelay_of_accepted(NoDelayHttp)) != 0
