"""``make up`` / ``make down``: the whole stack on this machine, without Docker.

``up`` starts, each as its own process group with its log under ``.local/up/logs``:

- the embedded Redis (unless ``REDIS_URL`` is set);
- Airflow (``airflow standalone``: api-server with the web UI, scheduler, dag-processor,
  triggerer) with StatsD metrics switched on, tags in InfluxDB form;
- the StatsD bridge (``edgecache statsd-bridge``), which maps them for Prometheus;
- the edge services (``edgecache serve``), the edges split between them;
- the Pushgateway and Prometheus where installed (Debian: ``prometheus-pushgateway``,
  ``prometheus``); without a Pushgateway, the batch metrics exporter instead;
- Grafana, where a ``grafana`` binary is on the PATH (it is not packaged for Debian; the
  compose stack has it).

It waits until each answers, prints the URLs and the Airflow login, and records the
process ids in ``.local/up/pids.json``. ``down`` stops those processes, and only those.
Every service binds to 127.0.0.1. Ports come from ``EDGECACHE_*_PORT`` variables.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgecache.ops.localrun import airflow, airflow_env
from edgecache.ops.push_metrics import pushgateway_conn_json
from edgecache.ops.redis_server import EmbeddedRedis
from edgecache.serving.redis_conn import redact
from edgecache.settings import PROJECT_ROOT, Settings, WorkloadParams
from edgecache.simulate.workload import edge_ids

MONITORING = PROJECT_ROOT / "monitoring"
DAG_ID = "predictive_caching"


@dataclass(frozen=True)
class Ports:
    """Where each service listens (all on 127.0.0.1)."""

    airflow: int = 8080
    edge: int = 8100  # the first edge service; the next ones take the following ports
    statsd: int = 9125
    bridge: int = 9102
    prometheus: int = 9090
    pushgateway: int = 9091
    batch_exporter: int = 8000
    grafana: int = 3000

    @classmethod
    def from_env(cls) -> Ports:
        d = cls()
        return cls(
            **{f: int(os.environ.get(f"EDGECACHE_{f.upper()}_PORT") or getattr(d, f)) for f in d.__dataclass_fields__}
        )


def split_edges(edges: list[str], services: int) -> list[list[str]]:
    """Deal the edges round-robin to ``services`` services (busiest edges come first)."""
    services = max(1, min(services, len(edges)))
    return [edges[i::services] for i in range(services)]


def prometheus_config(
    ports: Ports, edge_services: int, with_pushgateway: bool, scrape_interval: str | None = None
) -> dict[str, Any]:
    """The committed ``monitoring/prometheus/prometheus.yml`` with this run's ports and
    absolute rule paths (Prometheus has no environment variables in its configuration)."""
    doc = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    doc["rule_files"] = [str((MONITORING / "prometheus" / r).resolve()) for r in doc["rule_files"]]
    if scrape_interval:
        doc["global"]["scrape_interval"] = doc["global"]["evaluation_interval"] = scrape_interval
    targets = {
        "edge": [f"127.0.0.1:{ports.edge + i}" for i in range(edge_services)],
        "airflow": [f"127.0.0.1:{ports.bridge}"],
        "pushgateway": [f"127.0.0.1:{ports.pushgateway}"] if with_pushgateway else [],
        "batch": [] if with_pushgateway else [f"127.0.0.1:{ports.batch_exporter}"],
        "prometheus": [f"127.0.0.1:{ports.prometheus}"],
    }
    jobs = []
    for job in doc["scrape_configs"]:
        t = targets[job["job_name"]]
        if t:
            job["static_configs"] = [{"targets": t}]
            jobs.append(job)
    doc["scrape_configs"] = jobs
    return doc


class Stack:
    """The processes of one ``up``, under ``<local_dir>/up``."""

    def __init__(self, settings: Settings | None = None, ports: Ports | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.ports = ports or Ports.from_env()
        self.dir = self.settings.local_dir / "up"
        self.logs = self.dir / "logs"
        self.pidfile = self.dir / "pids.json"
        self.airflow_home = self.settings.local_dir / "airflow"

    # -- process bookkeeping --------------------------------------------------------------
    def recorded(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.pidfile.read_text()) if self.pidfile.exists() else {}

    def _record(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        pids = self.recorded()
        pids[name] = {"pid": proc.pid, "started": _start_time(proc.pid)}
        self.pidfile.write_text(json.dumps(pids, indent=2))

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        self._record(name, proc)

    def running(self) -> dict[str, int]:
        """Recorded processes that are still the ones started (a reused pid is not ours)."""
        return {n: p["pid"] for n, p in self.recorded().items() if _start_time(p["pid"]) == p["started"]}

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM each recorded process group, SIGKILL what is left after ``timeout``."""
        alive = self.running()
        for pid in alive.values():
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_start_time(p) is not None for p in alive.values()):
            time.sleep(0.2)
        for pid in alive.values():
            if _start_time(pid) is not None:
                _signal_group(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return sorted(alive)

    # -- up ---------------------------------------------------------------------------------
    def up(
        self, edge_services: int = 1, scrape_interval: str | None = None, wait_timeout: float = 240.0
    ) -> dict[str, str]:
        """Start everything, wait until it answers and return the URLs."""
        if self.running():
            raise RuntimeError(f"the stack is already up ({', '.join(self.running())}); run `make down` first")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pidfile.unlink(missing_ok=True)
        p = self.ports
        bin_dir = Path(sys.executable).parent
        urls: dict[str, str] = {}
        try:
            redis_url = self.settings.redis_url
            if redis_url is None:
                server = EmbeddedRedis(self.settings.local_dir / "redis")
                server.start()
                redis_url = server.url
            urls["redis"] = redact(redis_url)

            pushgateway = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
            env = self.airflow_environment(redis_url, pushgateway is not None)
            print("[up] preparing the Airflow metadata DB (airflow db migrate)", flush=True)
            airflow(["db", "migrate"], env, self.logs / "db-migrate.log")

            self.start(
                "statsd-bridge",
                [str(bin_dir / "edgecache"), "statsd-bridge", "--statsd-port", str(p.statsd), "--port", str(p.bridge)],
            )
            urls["statsd bridge"] = f"http://127.0.0.1:{p.bridge}/metrics"
            self.start("airflow", [str(bin_dir / "airflow"), "standalone"], env)
            urls["airflow"] = f"http://127.0.0.1:{p.airflow}"

            wp = WorkloadParams.from_env()
            groups = split_edges(edge_ids(wp.edges + wp.new_edges), edge_services)
            for i, edges in enumerate(groups):
                # The URL goes by the environment, not argv, where `ps` would show a password.
                # The replay clock: this stack's traffic is `edgecache replay` of a generated
                # day, whose times the wall clock's window would refuse.
                cmd = [str(bin_dir / "edgecache"), "serve", "--port", str(p.edge + i), "--clock", "replay"]
                for e in edges:
                    cmd += ["--edge", e]
                self.start(f"edge-service-{i + 1}", cmd, dict(env, REDIS_URL=redis_url))
                urls[f"edge service {i + 1} ({', '.join(edges)})"] = f"http://127.0.0.1:{p.edge + i}"

            if pushgateway:
                self.start("pushgateway", [pushgateway, f"--web.listen-address=127.0.0.1:{p.pushgateway}"])
                urls["pushgateway"] = f"http://127.0.0.1:{p.pushgateway}"
            else:
                self.start(
                    "batch-exporter",
                    [sys.executable, str(MONITORING / "start_metrics_server.py"), "--port", str(p.batch_exporter)],
                    dict(env),
                )
                urls["batch metrics"] = f"http://127.0.0.1:{p.batch_exporter}/metrics"

            prometheus = shutil.which("prometheus")
            if prometheus:
                config = self.dir / "prometheus.yml"
                config.write_text(
                    yaml.safe_dump(
                        prometheus_config(p, len(groups), pushgateway is not None, scrape_interval), sort_keys=False
                    )
                )
                self.start(
                    "prometheus",
                    [
                        prometheus,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                        f"--web.listen-address=127.0.0.1:{p.prometheus}",
                    ],
                )
                urls["prometheus"] = f"http://127.0.0.1:{p.prometheus}"

            grafana = shutil.which("grafana")
            if grafana and prometheus:
                self.start(
                    "grafana", [grafana, "server", "--homepath", _grafana_home(grafana)], self.grafana_environment()
                )
                urls["grafana"] = f"http://127.0.0.1:{p.grafana}"

            self.wait(urls, wait_timeout)
        except BaseException:
            self.stop()
            raise
        return urls

    def airflow_environment(self, redis_url: str, with_pushgateway: bool) -> dict[str, str]:
        p = self.ports
        env = airflow_env(self.settings, redis_url, self.airflow_home)
        env.update(
            {
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(p.airflow),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{p.airflow}/execution/",
                # A login of its own: Airflow generates the password into this file on first start.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                "AIRFLOW__METRICS__STATSD_ON": "True",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(p.statsd),
                "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
                # Tags as labels (name,k=v) and no legacy dotted names: one series per metric.
                "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
                "AIRFLOW__METRICS__LEGACY_NAMES_ON": "False",
                "EDGECACHE_GRAFANA_URL": os.environ.get("EDGECACHE_GRAFANA_URL", f"http://127.0.0.1:{p.grafana}"),
            }
        )
        if with_pushgateway:
            url = env.setdefault("PUSHGATEWAY_URL", f"http://127.0.0.1:{p.pushgateway}")
            env.setdefault("AIRFLOW_CONN_PUSHGATEWAY_DEFAULT", pushgateway_conn_json(url))
        return env

    def grafana_environment(self) -> dict[str, str]:
        password = os.environ.get("GRAFANA_ADMIN_PASSWORD")
        if not password:
            raise RuntimeError("set GRAFANA_ADMIN_PASSWORD to start Grafana (it is not given a default)")
        return dict(
            os.environ,
            **{
                "GF_SERVER_HTTP_ADDR": "127.0.0.1",
                "GF_SERVER_HTTP_PORT": str(self.ports.grafana),
                "GF_PATHS_DATA": str(self.dir / "grafana-data"),
                "GF_PATHS_PROVISIONING": str(MONITORING / "grafana" / "provisioning"),
                "GF_SECURITY_ADMIN_PASSWORD": password,
                "GF_USERS_ALLOW_SIGN_UP": "false",
                "GF_AUTH_ANONYMOUS_ENABLED": "false",
                "GF_SECURITY_ALLOW_EMBEDDING": "true",  # the Airflow plugin's DAG tab frames a dashboard
                "PROMETHEUS_URL": f"http://127.0.0.1:{self.ports.prometheus}",
                "EDGECACHE_DASHBOARDS_DIR": str(MONITORING / "grafana" / "dashboards"),
            },
        )

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "passwords.json"

    def airflow_login(self) -> tuple[str, str] | None:
        if not self.passwords_file.exists():
            return None
        return next(iter(json.loads(self.passwords_file.read_text()).items()))

    def wait(self, urls: dict[str, str], timeout: float) -> None:
        """Until every service answers its health check; a process that died is an error."""
        p = self.ports
        checks = {
            "statsd-bridge": f"http://127.0.0.1:{p.bridge}/metrics",
            "airflow": f"http://127.0.0.1:{p.airflow}/api/v2/monitor/health",
        }
        for name in self.recorded():
            if name.startswith("edge-service-"):
                checks[name] = f"http://127.0.0.1:{p.edge + int(name.rsplit('-', 1)[1]) - 1}/healthz"
        extra = {
            "pushgateway": f"http://127.0.0.1:{p.pushgateway}/-/ready",
            "prometheus": f"http://127.0.0.1:{p.prometheus}/-/ready",
            "batch-exporter": f"http://127.0.0.1:{p.batch_exporter}/metrics",
            "grafana": f"http://127.0.0.1:{p.grafana}/api/health",
        }
        checks.update({n: u for n, u in extra.items() if n in self.recorded()})
        deadline = time.monotonic() + timeout
        pending = dict(checks)
        while pending:
            dead = set(self.recorded()) - set(self.running())
            if dead:
                raise RuntimeError(f"{', '.join(sorted(dead))} exited during start-up; see {self.logs}")
            for name, url in list(pending.items()):
                if _answers(url, name == "airflow"):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f} s: {', '.join(pending)}; see {self.logs}")
            time.sleep(1.0)


def _answers(url: str, airflow_health: bool) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if not airflow_health:
                return r.status == 200
            health = json.load(r)
    except (OSError, ValueError):
        return False
    # Every Airflow component reports healthy (the scheduler and the dag-processor included).
    return all(v.get("status") == "healthy" for v in health.values() if isinstance(v, dict) and "status" in v)


def _grafana_home(binary: str) -> str:
    # A tarball install keeps bin/ beside conf/ and public/.
    return os.environ.get("GRAFANA_HOME") or str(Path(binary).resolve().parent.parent)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if it is gone or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def up() -> int:
    """``edgecache up``: start, then print where everything is."""
    stack = Stack()
    services = int(os.environ.get("EDGECACHE_EDGE_SERVICES") or 1)
    print("[up] starting; logs in", stack.logs, flush=True)
    urls = stack.up(edge_services=services, scrape_interval=os.environ.get("EDGECACHE_SCRAPE_INTERVAL") or None)
    login = stack.airflow_login()
    print("\nThe stack is up (all on 127.0.0.1):")
    for name, url in urls.items():
        print(f"  {name:<40} {url}")
    if login:
        print(f"\nAirflow login: {login[0]} / {login[1]}   (from {stack.passwords_file})")
    if "grafana" not in urls:
        print(
            "Grafana: no `grafana` binary on the PATH; `docker compose up` brings Grafana with the dashboards,"
            " or open the panels' queries in Prometheus."
        )
    print(f"Trigger the DAG `{DAG_ID}` in the Airflow UI; stop everything with `make down`.")
    return 0


def down() -> int:
    """``edgecache down``: stop what ``up`` started, then the embedded Redis."""
    stack = Stack()
    stopped = stack.stop()
    if stack.settings.redis_url is None:
        EmbeddedRedis(stack.settings.local_dir / "redis").stop()
        stopped.append("redis")
    print("stopped:", ", ".join(stopped) if stopped else "nothing was running")
    return 0
