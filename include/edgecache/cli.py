"""The ``edgecache`` command: every pipeline stage on its own, and the whole run.

edgecache generate --date 2025-04-12        # Spark: one day of viewing logs
edgecache ingest --date 2025-04-12 --source DIR [--catalog FILE]   # or your own logs
edgecache features --date 2025-04-12        # Spark SQL: validation and features
edgecache predict  --date 2025-04-12        # Spark: predictions and prefetch sets
edgecache warm     --date 2025-04-12        # Redis: load the predictions
edgecache push-metrics --date 2025-04-12    # Pushgateway or text file
edgecache evaluate --date 2025-04-12        # replay D+1 against D's predictions: hit ratios
edgecache run [--date D]                    # the DAG once via airflow dags test
edgecache serve --edge edge-01              # an edge service: /deliver, /metrics, /docs
edgecache replay --date 2025-04-13 --service http://127.0.0.1:8100   # a day's logs to services
edgecache redis start|stop|status           # the embedded redis-server
edgecache statsd-bridge                     # StatsD in, Prometheus /metrics out
edgecache up | down                         # the whole stack on this machine (make up / make down)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable

from edgecache.pipeline.java import JavaNotFoundError
from edgecache.settings import DEFAULT_DATE, PROJECT_ROOT, Settings

# The CLI's name of each Spark stage, and its module (each has build_parser, run and main).
SPARK_STAGES = {
    "generate": "simulate.generate_logs",
    "ingest": "pipeline.ingest_logs",
    "next-day-logs": "simulate.next_day_logs",
    "features": "pipeline.features",
    "predict": "pipeline.predict",
    "evaluate": "evaluation.evaluate",
}


def _spark_job(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(f"edgecache.{module}").main(argv)

    return run


SPARK_JOBS = {name: _spark_job(module) for name, module in SPARK_STAGES.items()}


def _redis_client(url: str | None):
    from edgecache.ops.redis_server import EmbeddedRedis
    from edgecache.serving.redis_conn import connect

    if url is None:
        server = EmbeddedRedis(Settings.from_env().local_dir / "redis")
        server.start()
        url = server.url
    return connect(url)


def build_parser() -> argparse.ArgumentParser:
    s = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="edgecache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("generate", "generate a day of logs (Spark)"),
        (
            "ingest",
            "copy your own logs for a day (JSON Lines, plain or gzip) and your catalog into the data directory (Spark)",
        ),
        ("next-day-logs", "generate day D+1's logs with day D's workload, for the evaluation (Spark)"),
        ("features", "validate logs and build features (Spark SQL)"),
        ("predict", "predict next titles and prefetch sets (Spark)"),
        (
            "evaluate",
            "replay D+1's requests against D's predictions and classic "
            "cache policies, print the hit-ratio tables (Spark, libCacheSim)",
        ),
    ):
        sub.add_parser(name, help=f"{help_}; see `edgecache {name} --help`", add_help=False)

    w = sub.add_parser("warm", help="load a day's predictions into Redis")
    w.add_argument("--date", required=True, help="logical day D, YYYY-MM-DD")
    w.add_argument("--data-dir", default=str(s.data_dir), help="data directory (default: %(default)s)")
    w.add_argument(
        "--redis-url", default=s.redis_url, help="Redis to warm (default: $REDIS_URL, else the embedded server)"
    )
    w.add_argument("--ttl", type=int, default=s.ttl_seconds, help="seconds keys live (default: %(default)s)")

    m = sub.add_parser("push-metrics", help="push a day's batch metrics")
    m.add_argument("--date", required=True, help="logical day D, YYYY-MM-DD")
    m.add_argument("--data-dir", default=str(s.data_dir), help="data directory (default: %(default)s)")
    m.add_argument(
        "--pushgateway-url",
        default=s.pushgateway_url,
        help="Pushgateway (default: $PUSHGATEWAY_URL, else a text file under metrics/)",
    )

    r = sub.add_parser("run", help="run the DAG once with airflow dags test and print a summary")
    r.add_argument("--date", default=DEFAULT_DATE, help="logical date (default: %(default)s)")
    r.add_argument("--conf", default=None, help="JSON params for the run, e.g. '{\"users\": 200}'")

    sv = sub.add_parser("serve", help="run an edge service (delivery decisions over HTTP)")
    sv.add_argument("--edge", action="append", required=True, help="edge id to serve (repeat for several)")
    sv.add_argument("--port", type=int, default=8100, help="port (default: %(default)s)")
    sv.add_argument("--bind", default="127.0.0.1", help="address to bind (default: %(default)s)")
    sv.add_argument("--redis-url", default=s.redis_url, help="Redis (default: $REDIS_URL, else the embedded server)")
    sv.add_argument(
        "--cache-gb",
        type=float,
        default=s.cache_gb,
        help="capacity of each edge cache in GB (default: %(default)s, as the prefetch)",
    )
    sv.add_argument(
        "--origin-latency-ms",
        type=float,
        default=s.origin_latency_ms,
        help="simulated origin fetch on a miss (default: %(default)s)",
    )
    sv.add_argument("--top-k", type=int, default=s.top_k, help="titles in a fresh prediction (default: %(default)s)")
    sv.add_argument(
        "--ttl", type=int, default=s.ttl_seconds, help="seconds fresh predictions live (default: %(default)s)"
    )
    sv.add_argument(
        "--clock",
        default=s.edge_clock,
        help="which request times are accepted: wall (live traffic: near this server's clock, "
        "see --max-age and --max-ahead) or replay (a day's logs: within a day of each edge's "
        "warm; for `edgecache replay`) (default: $EDGECACHE_CLOCK, else %(default)s)",
    )
    sv.add_argument(
        "--max-age",
        type=float,
        default=3600.0,
        help="wall clock: seconds a request's time may lie in the past (default: %(default)g)",
    )
    sv.add_argument(
        "--max-ahead",
        type=float,
        default=300.0,
        help="wall clock: seconds a request's time may lie in the future (default: %(default)g)",
    )
    sv.add_argument(
        "--rate-limit",
        type=float,
        default=s.rate_limit,
        help="requests per second per client address, 0 for no limit "
        "(default: $EDGECACHE_RATE_LIMIT, else %(default)g)",
    )
    sv.add_argument(
        "--rate-burst",
        type=float,
        default=s.rate_burst,
        help="requests a client may send at once above the rate; 0 means one second's worth "
        "(default: $EDGECACHE_RATE_BURST, else %(default)g)",
    )
    sv.add_argument(
        "--workers",
        type=int,
        default=s.edge_workers,
        help="worker processes sharing the port (one per core scales across cores; the rate "
        "limit is shared out among them) (default: $EDGECACHE_WORKERS, else %(default)s)",
    )
    sv.add_argument("--log-level", default="warning", help="uvicorn log level (default: %(default)s)")

    rp = sub.add_parser("replay", help="send a day's logs to edge services at a bounded rate")
    rp.add_argument("--date", required=True, help="the day whose logs to send, YYYY-MM-DD")
    rp.add_argument(
        "--service",
        action="append",
        required=True,
        help="edge service URL on loopback (repeat for several), e.g. http://127.0.0.1:8100",
    )
    rp.add_argument("--data-dir", default=str(s.data_dir), help="data directory (default: %(default)s)")
    rp.add_argument(
        "--rate", type=float, default=500.0, help="requests per second, at most 20000 (default: %(default)s)"
    )
    rp.add_argument(
        "--duration", type=float, default=60.0, help="stop after this many seconds, at most 3600 (default: %(default)s)"
    )
    rp.add_argument("--max-requests", type=int, default=None, help="stop after this many requests")
    rp.add_argument(
        "--connections-per-edge",
        type=int,
        default=1,
        help="requests in flight per edge; 1 keeps each edge's order (default: %(default)s)",
    )
    rp.add_argument("--json", action="store_true", help="print the summary as JSON")

    rs = sub.add_parser("redis", help="start, stop or check the embedded redis-server")
    rs.add_argument("action", choices=["start", "stop", "status"])

    sb = sub.add_parser(
        "statsd-bridge", help="StatsD (Airflow's metrics) to Prometheus, by a statsd_exporter mapping file"
    )
    sb.add_argument(
        "--mapping",
        default=str(PROJECT_ROOT / "monitoring" / "statsd_mapping.yml"),
        help="statsd_exporter mapping file (default: %(default)s)",
    )
    sb.add_argument("--statsd-port", type=int, default=9125, help="UDP port for StatsD (default: %(default)s)")
    sb.add_argument("--port", type=int, default=9102, help="HTTP port for /metrics (default: %(default)s)")
    sb.add_argument("--bind", default="127.0.0.1", help="address to bind (default: %(default)s)")

    sub.add_parser(
        "up",
        help="start Airflow, the edge services, the metrics bridge, Prometheus and the "
        "Pushgateway on this machine, print their URLs",
    )
    sub.add_parser("down", help="stop everything `edgecache up` started")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SPARK_JOBS:
        return SPARK_JOBS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (JavaNotFoundError, FileNotFoundError) as exc:  # a missing input: one line, not a trace
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # Redis refused the credentials or did not answer (the warm, serve's start-up
        # check): one line naming the server and the problem. redis is imported only here,
        # so commands that never touch it start without it.
        from edgecache.serving.redis_conn import RedisAccessError

        if not isinstance(exc, RedisAccessError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.command == "warm":
        from edgecache.serving.warm_cache import warm_stage

        report = warm_stage(_redis_client(args.redis_url), Path(args.data_dir).resolve(), args.date, args.ttl)
        print(json.dumps(report, indent=2))
    elif args.command == "push-metrics":
        from edgecache.ops.push_metrics import push_metrics

        print(json.dumps(push_metrics(Path(args.data_dir).resolve(), args.date, args.pushgateway_url), indent=2))
    elif args.command == "run":
        from edgecache.ops.localrun import format_summary, run

        print(format_summary(run(args.date, json.loads(args.conf) if args.conf else None)))
    elif args.command == "serve":
        return _serve(args)
    elif args.command == "replay":
        from edgecache.layout import Layout
        from edgecache.serving.delivery.replay import main as replay_main

        return replay_main(
            args.service,
            Layout(Path(args.data_dir).resolve()).logs(args.date),
            args.rate,
            args.duration,
            max_requests=args.max_requests,
            connections_per_edge=args.connections_per_edge,
            as_json=args.json,
        )
    elif args.command == "statsd-bridge":
        from edgecache.ops.statsd_bridge import serve

        try:
            serve(Path(args.mapping), args.statsd_port, args.port, args.bind)
        except KeyboardInterrupt:
            pass
    elif args.command == "up":
        from edgecache.ops.stack import up

        return up()
    elif args.command == "down":
        from edgecache.ops.stack import down

        return down()
    elif args.command == "redis":
        from edgecache.ops.redis_server import EmbeddedRedis

        server = EmbeddedRedis(Settings.from_env().local_dir / "redis")
        if args.action == "start":
            server.start()
            print(f"redis running at {server.url}")
        elif args.action == "stop":
            server.stop()
            print("redis stopped")
        else:
            print(f"redis at {server.url}: {'running' if server.is_running() else 'not running'}")
            return 0 if server.is_running() else 1
    return 0


# The edge service's event loop: asyncio's own. Under uvloop a busy service accepts new
# connections slowly: 100 connections opened at once against a saturated service waited up
# to 2 s for their first answer (wrk counted timeouts), against 57 ms on asyncio's loop at
# the same throughput (bench/delivery.py's connections part).
LOOP = "asyncio"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from edgecache.serving.delivery.auth import TokenError, load_token
    from edgecache.serving.delivery.service import SERVE_CONFIG_ENV, NoDelayHttp, ServeConfig, create_app
    from edgecache.serving.redis_conn import redact

    # Configuration errors are one line and exit 2, before anything starts; the token last,
    # so that a bad flag does not leave a new token file behind.
    try:
        config = ServeConfig(
            args.edge,
            args.redis_url or "",
            int(args.cache_gb * 1e9),
            args.ttl,
            args.top_k,
            args.origin_latency_ms / 1000,
            args.clock,
            args.max_age,
            args.max_ahead,
            args.rate_limit,
            args.rate_burst,
            args.workers,
        )
        token = load_token(create=True)
    except (TokenError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the local token file could not be created
        print(f"error: cannot create the API token file: {exc}", file=sys.stderr)
        return 2
    if args.redis_url is None:
        from edgecache.ops.redis_server import EmbeddedRedis

        server = EmbeddedRedis(Settings.from_env().local_dir / "redis")
        server.start()
        config = dataclasses.replace(config, redis_url=server.url)
    # Built here in every case: wrong credentials are one line and exit 2 before any worker starts.
    delivery = config.delivery()
    limiter = config.limiter()
    limit = (
        f"{limiter.rate:g} requests/s per client, bursts of {limiter.burst:g}"
        + (" in each worker" if config.workers > 1 else "")
        if limiter
        else "no rate limit"
    )
    workers = f"{config.workers} worker processes" if config.workers > 1 else "one process"
    print(
        f"edge service for {', '.join(delivery.edges)} on http://{args.bind}:{args.port} "
        f"(Redis {redact(config.redis_url)}; {config.times().describe()}; {limit}; {workers}; docs at /docs)",
        flush=True,
    )
    if config.workers == 1:
        uvicorn.run(
            create_app(delivery, token=token, times=config.times(), limiter=limiter),
            host=args.bind,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
            loop=LOOP,
            http=NoDelayHttp,
        )
        return 0
    # Several processes accept on one socket (uvicorn's workers). Each builds its own app
    # from the settings in the environment; their metrics meet in a fresh multiprocess folder.
    delivery.client.close()
    with tempfile.TemporaryDirectory(prefix="edgecache-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ[SERVE_CONFIG_ENV] = config.to_env()
        uvicorn.run(
            "edgecache.serving.delivery.service:app_from_env",
            factory=True,
            workers=config.workers,
            host=args.bind,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
            loop=LOOP,
            http=NoDelayHttp,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
