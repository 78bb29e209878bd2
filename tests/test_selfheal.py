"""Self-healing after Redis loses the warm, and one-line errors for Redis credentials, against
real redis-servers (and, end to end, a real edge service process)."""

from __future__ import annotations

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

import pyarrow as pa
import psutil
import pyarrow.parquet as pq
import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edgecache.serving.warm_cache import warm_stage
from edgecache.serving.delivery import Delivery
from edgecache.serving.delivery.metrics import DeliveryMetrics
from edgecache.serving.keys import edge_meta_key, user_key, user_topk_key
from edgecache.layout import COMMIT_MARKER, Layout, write_json_atomic
from edgecache.serving.redis_conn import RedisAccessError, check_access
from edgecache.ops.redis_server import EmbeddedRedis, free_port, redis_server_binary
from tests.delivery_data import CATALOG, DATE, DEMAND, PREFETCH, T0, TRANSITIONS, TTL, write_day
from tests.services import require_binary, wait_http

TOKEN = "selfheal-test-token-0123456789abcdef"
# The night's viewers: two at E1, one at E2 (an E1 re-warm must leave E2's alone).
VIEWERS = [("U1", "E1", ["C02", "C05"]), ("U2", "E1", ["C05", "C06"]), ("U9", "E2", ["C01"])]


def write_complete_day(root: Path) -> None:
    """The small day of ``tests.delivery_data`` with viewers, as the predict job leaves it
    complete (its summary.json is written last)."""
    write_day(root, CATALOG, PREFETCH, DEMAND, TRANSITIONS)
    layout = Layout(root)
    pq.write_table(pa.table({"user_id": [v[0] for v in VIEWERS], "edge_id": [v[1] for v in VIEWERS],
                             "content_id": [v[2][0] for v in VIEWERS], "ranked": [v[2] for v in VIEWERS]}),
                   layout.predictions(DATE, "users") / "part-0.parquet")
    layout.predictions(DATE, "summary.json").write_text("{}")
    (layout.predictions_day(DATE) / COMMIT_MARKER).touch()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def delivery(client: redis.Redis, data_dir: Path | None) -> tuple[Delivery, CollectorRegistry, Clock]:
    registry, clock = CollectorRegistry(), Clock()
    d = Delivery(client, ["E1"], 200, TTL, top_k=4, metrics=DeliveryMetrics(registry), clock=clock,
                 data_dir=data_dir, rewarm_interval=60)
    return d, registry, clock


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"edge": "E1", **labels}) or 0.0


def all_ttls(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): client.ttl(k) for k in client.scan_iter()}


def lines_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edgecache.serving.delivery"]


# --- in process: the marker, the re-warm and its bounds ---------------------------------------


def test_a_lost_warm_is_reported_and_rewarmed_from_disk(tmp_path, redis_client, caplog):
    caplog.set_level(logging.WARNING, logger="edgecache.serving.delivery")
    write_complete_day(tmp_path)
    warm_stage(redis_client, tmp_path, DATE, TTL)
    d, registry, _ = delivery(redis_client, tmp_path)
    assert d.heal() == {}  # warm: nothing to do
    assert d.readiness().ready and sample(registry, "edgecache_edge_warm") == 1

    redis_client.flushall()  # what a restart without persistence leaves
    lost = d.readiness()
    assert (lost.ready, lost.redis_up, lost.warm, lost.warm_date) == (False, True, {"E1": "missing"}, {"E1": None})
    assert sample(registry, "edgecache_edge_warm") == 0

    assert d.heal() == {"E1": "ok"}
    assert sample(registry, "edgecache_rewarms_total", outcome="ok") == 1
    assert sample(registry, "edgecache_edge_warm") == 1
    back = d.readiness()
    assert back.ready and back.warm == {"E1": "ok"} and back.warm_date == {"E1": DATE}
    # E1's viewers, the catalog and E1's keys, every one expiring; E2's viewer is not E1's to restore
    assert redis_client.get(user_key("U1")) == b"C02" and json.loads(redis_client.get(user_topk_key("U2"))) == [
        "C05", "C06"]
    assert not redis_client.exists(user_key("U9"))
    assert redis_client.hmget(edge_meta_key("E1"), "date", "t0") == [DATE.encode(), str(T0).encode()]
    assert d.deliver("E1", "U5", "C01", T0 + 60).hit
    d.deliver("E1", "U6", "C05", T0 + 61)  # a miss: writes a prediction and creates ranking keys
    ttls = all_ttls(redis_client)
    assert "edge:{E1}:rank:slow" in ttls and "user:U6" in ttls
    assert all(0 < t <= TTL for t in ttls.values()), ttls
    [line] = lines_of(caplog)
    assert "E1" in line and "re-warmed" in line and DATE in line and "\n" not in line


def test_a_warm_made_elsewhere_is_taken_up_at_the_next_check(tmp_path, redis_client):
    """Two workers of one service: one re-warms a lost warm, the other must serve from it at
    its next marker check, not after its state's refresh interval (it answered 422 "no warm
    yet" until then under the replay clock)."""
    write_complete_day(tmp_path)
    a, b = (Delivery(redis_client, ["E1"], 200, TTL, top_k=4, metrics=DeliveryMetrics(CollectorRegistry()),
                     data_dir=tmp_path, refresh_seconds=3600) for _ in range(2))
    for d in (a, b):
        d.refresh("E1", force=True)  # what each worker reads at start: nothing yet
    assert b.states["E1"].warm_date is None
    assert a.heal() == {"E1": "ok"}
    assert b.heal() == {}  # the marker is back: nothing for b to re-warm
    state = b.states["E1"]
    assert state.warm_date == DATE and state.popular and state.catalog


def test_rewarm_attempts_are_bounded_logged_and_counted(tmp_path, redis_client, caplog):
    caplog.set_level(logging.WARNING, logger="edgecache.serving.delivery")
    data = tmp_path / "data"
    d, registry, clock = delivery(redis_client, data)
    assert d.heal() == {"E1": "no_predictions"}  # Redis empty, nothing on disk
    assert d.heal() == {}  # within the interval: no second attempt
    clock.now += 59
    assert d.heal() == {}
    clock.now += 2
    assert d.heal() == {"E1": "no_predictions"}
    assert sample(registry, "edgecache_rewarms_total", outcome="no_predictions") == 2
    assert len(lines_of(caplog)) == 2 and all("no complete predictions" in x for x in lines_of(caplog))

    write_complete_day(data)  # the night's predictions land
    clock.now += 30
    assert d.heal() == {}  # still within the interval of the last attempt
    clock.now += 31
    assert d.heal() == {"E1": "ok"} and d.readiness().ready
    assert sample(registry, "edgecache_rewarms_total", outcome="ok") == 1
    assert sample(registry, "edgecache_rewarms_total", outcome="failed") == 0
    assert len(lines_of(caplog)) == 3


def test_stale_predictions_are_left_expired(tmp_path, redis_client):
    """Predictions warmed longer than the TTL ago expired on purpose: no re-warm revives them."""
    write_complete_day(tmp_path)
    write_json_atomic(Layout(tmp_path).report(DATE, "warm"), {"finished_at": time.time() - TTL - 5})
    d, registry, _ = delivery(redis_client, tmp_path)
    assert d.heal() == {"E1": "expired"}
    assert redis_client.dbsize() == 0 and not d.readiness().ready
    assert sample(registry, "edgecache_rewarms_total", outcome="expired") == 1


def test_the_alert_rule_and_its_unit_test_pass_promtool():
    mon = Path(__file__).resolve().parents[1] / "monitoring" / "prometheus"
    out = subprocess.run([require_binary("promtool", "prometheus"), "test", "rules",
                          str(mon / "tests" / "alerts_test.yml")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "EdgeNotWarm" in (mon / "rules" / "alerts.yml").read_text()


# --- end to end: a service process, Redis killed mid-day and back empty ----------------------

HEAL_BOUND = 15.0  # seconds from Redis answering again (empty) to hits again, with no manual step


def http(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json",
                                             "Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(condition, timeout: float, what: str, every: float = 0.01) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def metrics_of(base: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, s.labels.get("outcome", "")): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.labels.get("edge") == "E1" and "source" not in s.labels}


def serve(tmp_path: Path, port: int, url: str, log: Path, workers: int = 1) -> subprocess.Popen:
    env = dict(os.environ, EDGECACHE_DATA_DIR=str(tmp_path), EDGECACHE_API_TOKEN=TOKEN,
               EDGECACHE_LOCAL_DIR=str(tmp_path / "local"))
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "edgecache.cli", "serve", "--edge", "E1", "--port", str(port),
                                 "--redis-url", url, "--cache-gb", "2e-7", "--top-k", "4", "--ttl", str(TTL),
                                 "--workers", str(workers)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("workers", [1, 2])
def test_redis_killed_mid_day_and_back_empty_heals_without_a_manual_step(tmp_path, workers):
    """With two worker processes too: both see the loss, one re-warms, and the metrics
    (counters and gauges) add up over both."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port())
    server.start()
    client = server.client()
    write_complete_day(tmp_path)
    warm_stage(client, tmp_path, DATE, TTL)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    answers: list[tuple[float, dict]] = []
    refused: list[tuple[int, dict]] = []  # any answer but a 200: the test fails on it
    stop_traffic = threading.Event()

    def traffic() -> None:
        titles = ["C01", "C05", "C02", "C06"]
        for i in range(20000):  # bounded
            if stop_traffic.is_set() or refused:
                return
            status, body = http(f"{base}/deliver", {"user_id": f"V{i % 7}", "content_id": titles[i % 4]})
            if status != 200:
                refused.append((status, body))
            else:
                answers.append((time.monotonic(), body))
            time.sleep(0.005)

    proc = serve(tmp_path, port, server.url, log, workers)
    worker = threading.Thread(target=traffic, daemon=True)
    try:
        wait_http(f"{base}/healthz", timeout=60)
        if workers > 1:  # uvicorn's workers: spawned children of the serve process
            spawned = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
            assert len(spawned) == workers
        assert http(f"{base}/readyz") == (200, {"ready": True, "redis": "up", "warm": {"E1": "ok"},
                                                "warm_date": {"E1": DATE}})
        worker.start()
        wait_for(lambda: sum(a["hit"] for _, a in answers) >= 10, 30, "hits before the kill")

        os.kill(int(server.pidfile.read_text()), signal.SIGKILL)  # mid-day, no clean shutdown
        server.pidfile.unlink()
        wait_for(lambda: http(f"{base}/readyz")[0] == 503, 10, "readiness to drop")
        assert http(f"{base}/readyz")[1]["redis"] == "down"

        server.start()  # the same port, empty
        back = time.monotonic()
        seen = []  # every readiness answer until it is 200 again
        wait_for(lambda: seen.append(http(f"{base}/readyz")) or seen[-1][0] == 200, 30, "readiness again")
        ready_after = time.monotonic() - back
        wait_for(lambda: any(a["hit"] for t, a in answers if t > back), 30, "a hit after the restart")
        hit_after = min(t for t, a in answers if t > back and a["hit"]) - back
        mark = len(answers)
        wait_for(lambda: len(answers) >= mark + 40, 30, "traffic after the heal")
        stop_traffic.set()
        worker.join(timeout=20)
        assert not worker.is_alive()
        # each worker checks its edges' markers every second: the other worker sees the
        # re-warm within that (the gauge is the lowest of the workers')
        wait_for(lambda: metrics_of(base)[("edgecache_edge_warm", "")] == 1, 5, "every worker to see the warm", 0.1)
        m = metrics_of(base)
        ttls = all_ttls(client)
        meta = client.hgetall(edge_meta_key("E1"))
    finally:
        stop_traffic.set()
        stop(proc)
        server.stop()

    assert not refused, refused[:3]
    assert ready_after < HEAL_BOUND and hit_after < HEAL_BOUND, (ready_after, hit_after)
    # Redis back but the warm missing: not ready, saying so, until the re-warm (here about
    # 2 s: the retry after the failure, loading the warm's modules, the warm itself)
    assert all(status == 503 and not body["ready"] for status, body in seen[:-1])
    missing = [body for status, body in seen if body.get("redis") == "up" and status == 503]
    assert missing and all(b["warm"] == {"E1": "missing"} and b["warm_date"] == {"E1": None} for b in missing)
    assert seen[-1][1]["warm"] == {"E1": "ok"} and seen[-1][1]["warm_date"] == {"E1": DATE}
    assert m[("edgecache_rewarms_total", "ok")] == 1 and m[("edgecache_edge_warm", "")] == 1
    assert m[("edgecache_rewarms_total", "failed")] == 0 and m[("edgecache_not_warm_requests_total", "")] > 0
    # every key written since the restart expires, and the meta is the warm's, t0 and all
    assert ttls and all(0 < t <= TTL for t in ttls.values()), ttls
    assert {"user:U1", "user:V1", "edge:{E1}:rank:slow"} <= set(ttls)  # the re-warm's, a delivery's
    assert meta[b"t0"] == str(T0).encode() and meta[b"date"] == DATE.encode() and int(meta[b"clock"]) > 0
    # every request answered: hits, misses and degraded add up
    bodies = [a for _, a in answers]
    assert m[("cache_hits_total", "")] == sum(a["hit"] for a in bodies)
    assert m[("cache_hits_total", "")] + m[("cache_misses_total", "")] + m[
        ("edgecache_degraded_requests_total", "")] == len(bodies)
    healed = [line for line in log.read_text().splitlines() if "re-warmed" in line]
    assert len(healed) == 1 and "E1" in healed[0] and DATE in healed[0]


# --- credentials: one line and a non-zero exit -----------------------------------------------

PASSWORD = "the-right-password-42"
WRONG = "not-the-password-17"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory):
    """A redis-server that requires a password, and an ACL user that may not even PING."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("locked-redis")
    proc = subprocess.Popen([redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(workdir), "--requirepass", PASSWORD],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=PASSWORD, socket_timeout=2)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, 10, "the locked redis-server", every=0.05)
        client.execute_command("ACL", "SETUSER", "viewer", "on", f">{PASSWORD}", "~*", "-@all", "+auth", "+hello")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_cli(tmp_path: Path, *args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, EDGECACHE_API_TOKEN=TOKEN, EDGECACHE_LOCAL_DIR=str(tmp_path / "local"))
    env.pop("REDIS_URL", None)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "edgecache.cli", *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    return out, time.monotonic() - started


@pytest.mark.parametrize("command", ["warm", "serve"])
@pytest.mark.parametrize(("password", "needle"), [
    (WRONG, "refused the password (WRONGPASS"),
    (None, "requires a password (NOAUTH): set REDIS_URL"),
])
def test_refused_credentials_are_one_line_and_a_non_zero_exit(tmp_path, locked_redis, command, password, needle):
    url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{locked_redis}/0"
    write_complete_day(tmp_path)  # the warm names missing inputs first; here only Redis is wrong
    args = (["warm", "--date", DATE, "--data-dir", str(tmp_path)] if command == "warm"
            else ["serve", "--edge", "E1", "--port", str(free_port())])
    # serve must exit by itself: a service that started would run into the timeout
    out, took = run_cli(tmp_path, *args, "--redis-url", url)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: Redis at 127.0.0.1:{locked_redis} ") and needle in lines[0], lines[0]
    assert "Traceback" not in out.stderr and WRONG not in out.stderr and PASSWORD not in out.stderr
    assert took < 25, took  # no 30 s wait on redis-cli's replies


def test_serve_starts_degraded_when_redis_is_merely_down(tmp_path):
    port = free_port()
    proc = serve(tmp_path, port, f"redis://127.0.0.1:{free_port()}/0", tmp_path / "service.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        status, body = http(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and body["redis"] == "down" and body["warm"] == {"E1": "unknown"}
        assert proc.poll() is None
    finally:
        stop(proc)
    assert "could not read the warm state of E1" in (tmp_path / "service.log").read_text()


def test_a_user_without_permissions_is_named(locked_redis):
    client = redis.Redis(port=locked_redis, username="viewer", password=PASSWORD)
    with pytest.raises(RedisAccessError, match=r"does not let user 'viewer' run PING \(NOPERM\)"):
        check_access(client)
    check_access(redis.Redis(port=locked_redis, password=PASSWORD))  # the right password passes
