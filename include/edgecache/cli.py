"""The ``edgecache`` command: every pipeline stage on its own, and the whole run.

    edgecache generate --date 2025-04-12        # Spark: one day of viewing logs
    edgecache features --date 2025-04-12        # Spark SQL: validation and features
    edgecache predict  --date 2025-04-12        # Spark: predictions and prefetch sets
    edgecache warm     --date 2025-04-12        # Redis: load the predictions
    edgecache push-metrics --date 2025-04-12    # Pushgateway or text file
    edgecache evaluate --date 2025-04-12        # replay D+1 against D's predictions: hit ratios
    edgecache run [--date D]                    # the DAG once via airflow dags test
    edgecache redis start|stop|status           # the embedded redis-server
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from edgecache.java import JavaNotFoundError
from edgecache.settings import DEFAULT_DATE, Settings


def _spark_job(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(f"edgecache.jobs.{module}").main(argv)

    return run


SPARK_JOBS = {name: _spark_job(name) for name in ("generate", "features", "predict", "evaluate")}


def _redis_client(url: str | None):
    import redis

    from edgecache.redis_server import EmbeddedRedis

    if url is None:
        server = EmbeddedRedis(Settings.from_env().local_dir / "redis")
        server.start()
        url = server.url
    return redis.Redis.from_url(url)


def build_parser() -> argparse.ArgumentParser:
    s = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="edgecache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("generate", "generate a day of logs (Spark)"),
                        ("features", "validate logs and build features (Spark SQL)"),
                        ("predict", "predict next titles and prefetch sets (Spark)"),
                        ("evaluate", "replay D+1's requests against D's predictions and classic "
                                     "cache policies, print the hit-ratio tables (Spark, libCacheSim)")):
        sub.add_parser(name, help=help_ + "; see `edgecache %s --help`" % name, add_help=False)

    w = sub.add_parser("warm", help="load a day's predictions into Redis")
    w.add_argument("--date", required=True, help="logical day D, YYYY-MM-DD")
    w.add_argument("--data-dir", default=str(s.data_dir), help="data directory (default: %(default)s)")
    w.add_argument("--redis-url", default=s.redis_url,
                   help="Redis to warm (default: $REDIS_URL, else the embedded server)")
    w.add_argument("--ttl", type=int, default=s.ttl_seconds, help="seconds keys live (default: %(default)s)")

    m = sub.add_parser("push-metrics", help="push a day's batch metrics")
    m.add_argument("--date", required=True, help="logical day D, YYYY-MM-DD")
    m.add_argument("--data-dir", default=str(s.data_dir), help="data directory (default: %(default)s)")
    m.add_argument("--pushgateway-url", default=s.pushgateway_url,
                   help="Pushgateway (default: $PUSHGATEWAY_URL, else a text file under metrics/)")

    r = sub.add_parser("run", help="run the DAG once with airflow dags test and print a summary")
    r.add_argument("--date", default=DEFAULT_DATE, help="logical date (default: %(default)s)")
    r.add_argument("--conf", default=None, help='JSON params for the run, e.g. \'{"users": 200}\'')

    rs = sub.add_parser("redis", help="start, stop or check the embedded redis-server")
    rs.add_argument("action", choices=["start", "stop", "status"])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SPARK_JOBS:
        return SPARK_JOBS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except JavaNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.command == "warm":
        from edgecache.cache import warm_stage

        report = warm_stage(_redis_client(args.redis_url), Path(args.data_dir).resolve(), args.date, args.ttl)
        print(json.dumps(report, indent=2))
    elif args.command == "push-metrics":
        from edgecache.metrics import push_metrics

        print(json.dumps(push_metrics(Path(args.data_dir).resolve(), args.date, args.pushgateway_url), indent=2))
    elif args.command == "run":
        from edgecache.localrun import format_summary, run

        print(format_summary(run(args.date, json.loads(args.conf) if args.conf else None)))
    elif args.command == "redis":
        from edgecache.redis_server import EmbeddedRedis

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


if __name__ == "__main__":
    sys.exit(main())
