"""The edge service over HTTP and the replay driver, against real redis-servers."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from edgecache.cache import warm
from edgecache.delivery.replay import loopback_url, read_logs, replay
from edgecache.delivery.service import MAX_BODY, create_app
from edgecache.redis_server import EmbeddedRedis, free_port
from tests.services import process
from tests.delivery_data import CATALOG, DATE, DEMAND, PREFETCH, T0, TRANSITIONS, TTL, write_day


@pytest.fixture
def api(small_delivery):
    d, registry, _ = small_delivery
    return TestClient(create_app(d, registry))


def post(api: TestClient, **body):  # noqa: ANN201
    return api.post("/deliver", json=body)


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
    ({"user_id": "U1", "content_id": "C01", "timestamp": 1e300}, 422, "between 2000 and 2100"),
    ({"user_id": "U1", "content_id": "C01", "edge_id": "E9"}, 404, "not served here"),
    ({"user_id": "U1", "content_id": "C99"}, 404, "not in the catalog"),
])
def test_bad_requests_get_a_clear_4xx(api, redis_client, body, status, needle):
    before = {k: redis_client.dump(k) for k in redis_client.scan_iter()}
    resp = post(api, **body)
    assert resp.status_code == status and needle in resp.text
    assert {k: redis_client.dump(k) for k in redis_client.scan_iter()} == before


def test_oversize_and_unframed_bodies_are_refused(api):
    resp = api.post("/deliver", content=b"{" + b" " * MAX_BODY + b"}", headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "over" in resp.json()["detail"]
    assert api.get("/predictions/bad:id").status_code == 422
    assert api.get("/predictions/NOBODY").status_code == 404


def test_probes_docs_and_info(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["warm_date"] == {"E1": DATE}
    assert api.get("/").json()["edges"] == ["E1"]
    assert "/deliver" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200


def test_replay_urls_must_be_loopback():
    assert loopback_url("http://127.0.0.1:8100/") == "http://127.0.0.1:8100"
    assert loopback_url("http://localhost:1") == "http://localhost:1"
    for url in ("http://10.1.2.3:8100", "http://example.com", "https://127.0.0.1:8100", "ftp://127.0.0.1"):
        with pytest.raises(ValueError, match="loopback"):
            loopback_url(url)


# --- a real service process ------------------------------------------------------------


def write_logs(root: Path, lines: list[str]) -> Path:
    logs = root / "logs" / "date=2025-04-13"
    (logs / "edge=E1").mkdir(parents=True)
    (logs / "edge=E1" / "part-0.json").write_text("\n".join(lines) + "\n")
    return logs


def log_line(user: str, title: str, at: str, edge: str = "E1") -> str:
    return json.dumps({"user_id": user, "device": "TV", "content_id": title, "duration": 40, "timestamp": at,
                       "edge_id": edge})


def serve_cmd(port: int, url: str) -> list[str]:
    # 200 bytes: the small catalog's cache
    return [sys.executable, "-m", "edgecache.cli", "serve", "--edge", "E1", "--port", str(port), "--redis-url", url,
            "--cache-gb", "2e-7", "--top-k", "4"]


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


def test_replay_driver_against_a_service(tmp_path, redis_server):
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
    with process(serve_cmd(port, redis_server.url), f"http://127.0.0.1:{port}/healthz"):
        summary = replay([f"http://127.0.0.1:{port}"], logs, rate=50, duration=30, progress=None)
    # U2 misses C05, which is admitted; U1 hits C01, whose next episode C02 is admitted
    # (evicting C05); U3 hits C02; U:5 is refused
    assert summary["sent"] == 4 and summary["errors"] == {"422": 1}
    assert (summary["hits"], summary["misses"], summary["degraded"]) == (2, 1, 0)
    assert summary["hit_ratio"] == pytest.approx(2 / 3)
    assert summary["not_sent"] == {"bad_json": 1, "bad_timestamp": 1, "edge_not_served": 1}
    client.flushdb()


def wait_until(condition, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_redis_killed_and_restored_mid_traffic(tmp_path):
    """The service keeps answering from the origin while Redis is down, says it is not
    ready, counts the failures, and decides again by itself once Redis is back."""
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
            req = urllib.request.Request(f"{base}/deliver", body, {"Content-Type": "application/json"})
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
