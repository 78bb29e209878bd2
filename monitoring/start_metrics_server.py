"""Start the metrics exporter (the seed tutorial's step 7).

    python monitoring/start_metrics_server.py [--port 8000] [--bind 127.0.0.1]

Serves, on /metrics, the nightly batch metrics from ``$EDGECACHE_DATA_DIR/metrics/batch.prom``
beside the exporter's own process metrics. Binds to loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from prometheus_client import REGISTRY, start_http_server

from edgecache.ops.exporter import TextFileCollector
from edgecache.layout import Layout
from edgecache.settings import Settings


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--metrics-file", default=str(Layout(settings.data_dir).metrics_file),
        help="batch metrics file to serve (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    from pathlib import Path

    REGISTRY.register(TextFileCollector(Path(args.metrics_file)))
    server, thread = start_http_server(args.port, addr=args.bind)
    print(f"serving metrics on http://{args.bind}:{server.server_port}/metrics from {args.metrics_file}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
