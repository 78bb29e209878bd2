"""Benchmark: the delivery path, in process and over HTTP, and the warm's write rate.

    python bench/delivery.py [--date 2025-04-12] [--requests 20000] [--rate 2000] [--replay-rate 1000]
                             [--seconds 10] [--services 2] [--users 1000000] [--connections 200]
                             [--connections-rate 1000,2000,3000] [--workers 1,2,3] [--only inproc,http,connections,warm]

Needs day D's predictions and D+1's logs in the data directory (``make run`` makes both).
Every figure is set beside a reference measured in the same run against the same
redis-server (a fresh embedded one on 127.0.0.1):

- inproc: ``Delivery.decide`` on D+1's first ``--requests`` requests in time order, each
  paired with a plain redis-py ``GET`` round trip; p50 and p99 of both, and their ratios.
- http: ``--services`` edge services (``edgecache serve --clock replay``, since the requests
  carry the logs' times; the edges split between them by volume), driven by the replay
  driver (open loop at ``--replay-rate`` requests/s for at most ``--seconds``; a Python
  client, it takes its own share of the two cores) and by ``wrk`` for ``--seconds``:
  saturated (4 connections per service) and paced (12 connections per service, each waiting
  after every answer so that together they offer about ``--rate``); throughput and latency
  percentiles. Every request carries the API token, as a client's would: the services and
  the drivers share one made for the run.
- connections: one service for every edge, with 1, 2 and 3 worker processes
  (``--workers``), under ``--connections`` (200) concurrent wrk connections, saturated and
  paced to each of ``--connections-rate`` (1,000, 2,000 and 3,000/s) in all; beside each,
  the same server's ``/healthz`` under the same load, with the ratios of throughput and p99,
  wrk's timeouts (2 s) and every answer's status (a fast error is not throughput).
- warm: the warm's viewer writes for ``--users`` synthetic viewers (2 keys each) against
  ``redis-benchmark -c 1 -P 16 -t set`` on the same server.

Results go to bench/results/delivery.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry

from edgecache.serving.warm_cache import warm, warm_users
from edgecache.serving.delivery import Delivery, delivery_client
from edgecache.serving.delivery.auth import auth_header
from edgecache.serving.delivery.metrics import DeliveryMetrics
from edgecache.serving.delivery.replay import read_logs, replay
from edgecache.evaluation.evaluate import next_day
from edgecache.layout import Layout, write_json_atomic
from edgecache.ops.redis_server import EmbeddedRedis, free_port
from edgecache.settings import DEFAULT_DATE, Settings

HERE = Path(__file__).resolve().parent
TTL = 3600


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_inproc(url: str, data_dir: Path, date: str, n: int) -> dict:
    client = delivery_client(url, timeout=5)
    warm(client, data_dir, date, TTL)
    requests, _ = read_logs(Layout(data_dir).logs(next_day(date)))
    requests = sorted(requests, key=lambda r: (r.ts, r.edge_id))[:n]
    edges = sorted({r.edge_id for r in requests})
    settings = Settings.from_env()
    d = Delivery(client, edges, int(settings.cache_gb * 1e9), TTL, metrics=DeliveryMetrics(CollectorRegistry()))
    for e in edges:
        d.refresh(e, force=True)
    client.set("bench:get", "C00001")
    for r in requests[:500]:  # warm up connections and caches
        client.get("bench:get")
    warm(client, data_dir, date, TTL)
    client.config_resetstat()
    get_s, decide_s, hits, rejected = [], [], 0, 0
    clock = time.perf_counter
    for r in requests:
        t = clock()
        client.get("bench:get")
        get_s.append(clock() - t)
        t = clock()
        try:
            hits += d.decide(r.edge_id, r.user_id, r.content_id, r.ts).hit
        except ValueError:
            rejected += 1
            continue
        decide_s.append(clock() - t)
    us = {name: {"p50": pct(v, 50) * 1e6, "p99": pct(v, 99) * 1e6, "mean": float(np.mean(v)) * 1e6}
          for name, v in (("get", get_s), ("decide", decide_s))}
    stats = client.info("commandstats")
    return {
        "server_microseconds_per_call": {c: stats[f"cmdstat_{c}"]["usec_per_call"] for c in ("get", "evalsha")},
        "requests": len(decide_s), "rejected": rejected, "hit_ratio": hits / max(len(decide_s), 1),
        "microseconds": us,
        "ratio_p50": us["decide"]["p50"] / us["get"]["p50"],
        "ratio_p99": us["decide"]["p99"] / us["get"]["p99"],
        "ratio_decide_p99_to_get_p50": us["decide"]["p99"] / us["get"]["p50"],
    }


def _start_service(url: str, edges: list[str], port: int, token: str, workers: int = 1) -> subprocess.Popen:
    # the replay clock: the log's times are history, which the wall clock's window refuses
    cmd = [str(Path(sys.executable).parent / "edgecache"), "serve", "--port", str(port), "--redis-url", url,
           "--clock", "replay", "--workers", str(workers)]
    for e in edges:
        cmd += ["--edge", e]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, EDGECACHE_API_TOKEN=token))
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"edge service did not come up: {proc.stdout.read().decode()[-2000:]}")
            time.sleep(0.2)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "%s"
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/deliver", nil, bodies[i])
end
-- every answer's status, so that fast errors cannot pass for throughput
statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do all[k] = (all[k] or 0) + v end
  end
  for k, v in pairs(all) do io.write(string.format("status %%d %%d\\n", k, v)) end
end
%s
"""
# paced runs: each connection waits this long after a response before its next request
DELAY_LUA = "delay = function() return %d end"
# the reference under the same load: the same server's liveness probe
HEALTHZ_SCRIPT = """
wrk.method = "GET"
%s
"""


def _wrk_start(port: int, bodies: list[str], seconds: float, workdir: Path, token: str, connections: int = 4,
               delay_ms: int = 0):  # noqa: ANN202
    """Start wrk against one service (closed loop; ``delay_ms`` after each response paces
    it); None without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None, seconds, connections
    workdir.mkdir(parents=True, exist_ok=True)
    pace = DELAY_LUA % delay_ms if delay_ms else ""
    if bodies:
        (workdir / "bodies.txt").write_text("\n".join(bodies) + "\n")
        (workdir / "post.lua").write_text(WRK_SCRIPT % (auth_header(token)["Authorization"], workdir / "bodies.txt",
                                                        pace))
        url = f"http://127.0.0.1:{port}"
    else:  # the reference: GET /healthz
        (workdir / "post.lua").write_text(HEALTHZ_SCRIPT % pace)
        url = f"http://127.0.0.1:{port}/healthz"
    # wrk's own timeout is 2 s: a request unanswered by then counts as a timeout
    return subprocess.Popen([wrk, "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "2s",
                             "-s", str(workdir / "post.lua"), url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True), seconds, connections


def _wrk_result(proc, seconds: float, connections: int) -> dict | None:  # noqa: ANN001
    if proc is None:
        return None
    out, _ = proc.communicate(timeout=seconds + 60)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {out[-2000:]}")
    statuses = {int(k): int(v) for k, v in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return {"connections": connections, "seconds": seconds, "throughput_per_second": rate,
            "statuses": statuses,
            "latency_ms": {"p50": ms("50"), "p90": ms("90"), "p99": ms("99")},
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "timeouts": int(errors.group(4)) if errors else 0,
            "socket_errors": sum(int(x) for x in errors.groups()[:3]) if errors else 0}


def split_edges(requests: list, services: int) -> list[list[str]]:
    """Edges dealt to ``services`` groups of about equal request volume (largest first)."""
    volume: dict[str, int] = {}
    for r in requests:
        volume[r.edge_id] = volume.get(r.edge_id, 0) + 1
    groups: list[list[str]] = [[] for _ in range(services)]
    load = [0] * services
    for edge in sorted(volume, key=lambda e: -volume[e]):
        i = load.index(min(load))
        groups[i].append(edge)
        load[i] += volume[edge]
    return [sorted(g) for g in groups if g]


def bench_http(url: str, data_dir: Path, date: str, rate: float, replay_rate: float, seconds: float,
               services: int, workdir: Path) -> dict:
    client = delivery_client(url, timeout=5)
    warm(client, data_dir, date, TTL)
    logs = Layout(data_dir).logs(next_day(date))
    requests, _ = read_logs(logs)
    groups = split_edges(requests, services)
    ports = [free_port() for _ in groups]
    token = secrets.token_urlsafe(32)  # this run's own: the bench never reads a configured one
    procs = [_start_service(url, g, port, token) for g, port in zip(groups, ports)]
    try:
        open_loop = replay([f"http://127.0.0.1:{p}" for p in ports], logs, replay_rate, seconds,
                           max_requests=int(replay_rate * seconds), progress=None, connections_per_edge=4,
                           token=token)
        bodies = {port: [json.dumps({"edge_id": r.edge_id, "user_id": r.user_id, "content_id": r.content_id,
                                     "timestamp": r.timestamp}) for r in requests if r.edge_id in g]
                  for g, port in zip(groups, ports)}
        runs = {}
        # saturated: 4 connections per service, each sends as soon as it has its answer;
        # paced: 12 per service, each pausing so that all of them together offer about --rate
        # (the pause leaves out the ~2 ms an answer takes at this load)
        paced_delay = max(1, round(1000 * 12 * len(ports) / rate) - 2)
        for name, conns, delay in (("saturated", 4, 0), ("paced", 12, paced_delay)):
            warm(client, data_dir, date, TTL)
            started = [_wrk_start(port, bodies[port], seconds, workdir / f"wrk-{name}-{port}", token, conns, delay)
                       for port in ports]
            runs[name] = [_wrk_result(*w) for w in started]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    out = {
        "services": [{"port": p, "edges": g} for p, g in zip(ports, groups)],
        "open_loop": {"driver": "edgecache replay (aiohttp), 4 connections per edge", "rate": replay_rate,
                      **{k: open_loop[k] for k in ("sent", "seconds", "throughput_per_second", "latency_ms",
                                                   "errors", "rejected_4xx", "hit_ratio")}},
    }
    for name, per_service in runs.items():
        if all(c is not None for c in per_service):
            out[f"wrk_{name}"] = {
                "per_service": per_service,
                "throughput_per_second": sum(c["throughput_per_second"] for c in per_service),
                "latency_ms_p50_worst": max(c["latency_ms"]["p50"] for c in per_service),
                "latency_ms_p99_worst": max(c["latency_ms"]["p99"] for c in per_service)}
    return out


def _script_stats(client) -> tuple[int, int]:  # noqa: ANN001
    """Calls of the decision script so far and Redis's microseconds in them."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def bench_connections(url: str, data_dir: Path, date: str, rates: list[float], seconds: float, connections: int,
                      workers: list[int], workdir: Path) -> dict:
    """One service for every edge, with each number of ``workers``, under ``connections``
    concurrent connections: saturated (each connection sends as soon as it has its
    answer) and paced (each waits so that together they offer about each of ``rates``). Beside each,
    the same server's ``/healthz`` under the same load: what the HTTP stack alone costs."""
    client = delivery_client(url, timeout=5)
    logs = Layout(data_dir).logs(next_day(date))
    requests, _ = read_logs(logs)
    edges = sorted({r.edge_id for r in requests})
    bodies = [json.dumps({"edge_id": r.edge_id, "user_id": r.user_id, "content_id": r.content_id,
                          "timestamp": r.timestamp}) for r in requests]
    token = secrets.token_urlsafe(32)
    # each connection's pause: connections / rate, less the ~2 ms an answer takes at this load
    loads = [("saturated", 0)] + [(f"paced_{r:g}", max(1, round(1000 * connections / r) - 2)) for r in rates]
    out: dict = {"connections": connections, "paced_rates": rates, "edges": edges, "by_workers": {}}
    for w in workers:
        port = free_port()
        # warm first: every worker then starts from the warm's state (a worker that started
        # before it takes it up at its next marker check, within a second, and answers 422
        # "no warm yet" until then under the replay clock)
        warm(client, data_dir, date, TTL)
        proc = _start_service(url, edges, port, token, workers=w)
        runs: dict = {}
        try:
            for name, delay in loads:
                warm(client, data_dir, date, TTL)
                before = _script_stats(client)
                deliver = _wrk_result(*_wrk_start(port, bodies, seconds, workdir / f"conn-{w}-{name}", token,
                                                  connections, delay))
                health = _wrk_result(*_wrk_start(port, [], seconds, workdir / f"conn-{w}-{name}-healthz", token,
                                                 connections, delay))
                if deliver is None or health is None:
                    return {"skipped": "wrk is not installed"}
                calls, usec = (a - b for a, b in zip(_script_stats(client), before))
                runs[name] = {"deliver": deliver, "healthz": health,
                              # Redis's own time per decision script: one core of Redis
                              # decides at most 1e6 / this per second
                              "redis_script_us_per_call": usec / calls if calls else None,
                              "ratio_throughput": deliver["throughput_per_second"] / health["throughput_per_second"],
                              "ratio_p99": deliver["latency_ms"]["p99"] / health["latency_ms"]["p99"]}
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        out["by_workers"][str(w)] = runs
        print(json.dumps({f"connections, {w} worker(s)": runs}, indent=2), flush=True)
    if len(workers) > 1:
        lo, hi = (out["by_workers"][str(w)]["saturated"]["deliver"]["throughput_per_second"]
                  for w in (min(workers), max(workers)))
        out["saturated_throughput_scaling"] = hi / lo
    return out


def synthetic_users(data_dir: Path, date: str, users: int) -> None:
    """``users`` viewers' predictions (ten titles each) where the warm reads them."""
    rng = np.random.default_rng(7)
    ids = [f"U{i:07d}" for i in range(users)]
    ranked = rng.integers(1, 10001, size=(users, 10))
    lists = [[f"C{x:05d}" for x in row] for row in ranked]
    path = Layout(data_dir).predictions(date, "users")
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": ids, "edge_id": ["edge-01"] * users,
                             "content_id": [row[0] for row in lists], "ranked": lists}), path / "part-0.parquet")


def redis_benchmark(port: int, n: int) -> dict | None:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    out = subprocess.run([binary, "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-P", "16", "-t", "set",
                          "-n", str(n), "-q"], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"SET:\s+([\d.]+) requests per second", out.replace("\r", "\n")).group(1))
    return {"command": "redis-benchmark -c 1 -P 16 -t set", "requests": n, "sets_per_second": rate}


def bench_warm(url: str, port: int, users: int, workdir: Path) -> dict:
    data_dir = workdir / "warm-data"
    synthetic_users(data_dir, DEFAULT_DATE, users)
    client = delivery_client(url, timeout=30)
    client.flushdb()
    reference = redis_benchmark(port, 2 * users)
    client.flushdb()
    started = time.perf_counter()
    written = warm_users(client, Layout(data_dir), DEFAULT_DATE, TTL)
    seconds = time.perf_counter() - started
    keys = 2 * written
    out = {"users": written, "keys": keys, "seconds": round(seconds, 2), "keys_per_second": keys / seconds,
           "redis_benchmark": reference}
    if reference:
        out["ratio_to_redis_benchmark"] = out["keys_per_second"] / reference["sets_per_second"]
    client.flushdb()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--date", default=DEFAULT_DATE)
    p.add_argument("--data-dir", type=Path, default=Settings.from_env().data_dir)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--replay-rate", type=float, default=1000.0, help="the replay driver's rate")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--services", type=int, default=2, help="edge services the edges are split over")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--connections", type=int, default=200, help="concurrent connections of the 'connections' part")
    p.add_argument("--connections-rate", default="1000,2000,3000",
                   help="requests/s the paced connections offer together, one run each")
    p.add_argument("--workers", default="1,2,3", help="worker processes of the 'connections' part's service")
    p.add_argument("--only", default="inproc,http,connections,warm")
    args = p.parse_args(argv)
    parts = set(args.only.split(","))
    layout = Layout(args.data_dir)
    if parts & {"inproc", "http", "connections"} and (not layout.predictions(args.date, "users").exists()
                                       or not layout.has_logs(next_day(args.date))):
        print(f"need {args.date}'s predictions and {next_day(args.date)}'s logs under {args.data_dir}: "
              "run `make run` first", file=sys.stderr)
        return 2
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="edgecache-bench-") as tmp:
        port = free_port()
        server = EmbeddedRedis(Path(tmp) / "redis", port=port)
        server.start()
        try:
            if "inproc" in parts:
                results["inproc"] = bench_inproc(server.url, args.data_dir, args.date, args.requests)
                print(json.dumps({"inproc": results["inproc"]}, indent=2), flush=True)
            if "http" in parts:
                results["http"] = bench_http(server.url, args.data_dir, args.date, args.rate, args.replay_rate,
                                             args.seconds,
                                             args.services, Path(tmp))
                print(json.dumps({"http": results["http"]}, indent=2), flush=True)
            if "connections" in parts:
                results["connections"] = bench_connections(
                    server.url, args.data_dir, args.date, [float(r) for r in args.connections_rate.split(",") if r.strip()],
                    args.seconds, args.connections,
                    [int(w) for w in args.workers.split(",")], Path(tmp))
            if "warm" in parts:
                results["warm"] = bench_warm(server.url, port, args.users, Path(tmp))
                print(json.dumps({"warm": results["warm"]}, indent=2), flush=True)
        finally:
            server.stop()
    out = HERE / "results" / "delivery.json"
    write_json_atomic(out, results)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
