"""The Docker Compose stack: the Compose spec, the invariants a reviewer would check by hand,
the image build file and the Prometheus configuration it mounts.

No Docker engine is needed: ``docker-compose config`` validates against the Compose spec
offline, and ``promtool`` checks the Prometheus configuration. Both tools are required, not
optional: a missing one fails the test (Debian: ``apt-get install docker-compose prometheus``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus" / "prometheus-compose.yml"

# The secrets .env must provide; compose refuses to start without any of them.
REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|KEY|TOKEN|AUTH$")
# ${NAME:?message}: the only acceptable form for a secret.
REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
# Not $${NAME}: that is escaped for compose and expanded in the container at run time.
ANY_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
URL_PASSWORD = re.compile(r"://[^/@\s:]*:([^@\s]*)@")
JSON_PASSWORD = re.compile(r'"password"\s*:\s*"([^"]*)"')
CLI_PASSWORD = re.compile(r"--(?:requirepass|password|pass)[=\s]+(\S+)")

# Redis database 1 with the password from .env; database 0 is the edge caches'.
CELERY_BROKER = re.compile(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/1")
# Airflow connections (JSON) and the compose service each must point at.
CONNECTION_HOSTS = {"AIRFLOW_CONN_SPARK_DEFAULT": "spark://spark-master", "AIRFLOW_CONN_REDIS_DEFAULT": "redis"}

# Container ports that may be published (web UIs only), per service.
WEB_UIS = {"airflow-apiserver": {8080}, "grafana": {3000}, "prometheus": {9090}, "spark-master": {8080}}
NEVER_PUBLISHED = {5432, 6379}
# PostgreSQL numbers its releases major.minor; every other image pins major.minor.patch.
TWO_PART_VERSIONS = {"postgres"}


# -- helpers ------------------------------------------------------------------------------

def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; it is required for this test "
                    f"(Debian: apt-get install {package})", pytrace=False)
    return path


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose config -q`` with only ``env_file`` as the source of variables."""
    tool = require_tool("docker-compose", "docker-compose")
    clean_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL") if k in os.environ}
    return subprocess.run(
        [tool, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=120,
    )


def load_compose() -> dict[str, Any]:
    """The compose file as written (YAML anchors merged, ${...} left as they are)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def with_defaults(text: str) -> str:
    """Replace ``${VAR:-default}`` by its default (what compose does with VAR unset)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        yield " ".join(str(v) for v in value)  # so `--password X` split over items is seen
        for v in value:
            yield from strings_in(v)


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str | None, int]]:
    """(host address, host port, container port) of each published port."""
    out: list[tuple[str | None, str | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), str(entry.get("published") or "") or None, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 1:
            out.append((None, None, int(parts[0])))
        elif len(parts) == 2:
            out.append((None, parts[0], int(parts[1])))
        else:
            out.append((":".join(parts[:-2]), parts[-2], int(parts[-1])))
    return out


def image_problem(name: str, service: dict[str, Any]) -> str | None:
    image = service.get("image")
    if image is None:
        return None if "build" in service else f"{name}: neither image nor build"
    ref = with_defaults(str(image)).split("@")[0]
    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    if not tag:
        return f"{name}: image {image!r} has no tag"
    if tag == "latest":
        return f"{name}: image {image!r} is not pinned (latest)"
    if "build" in service:
        return None  # built here; the name is a local tag
    parts = 2 if repo.rsplit("/", 1)[-1] in TWO_PART_VERSIONS else 3
    if not re.match(r"v?" + r"\.".join([r"\d+"] * parts) + r"(?![.\d])", tag):
        return f"{name}: image tag {tag!r} is not a specific version"
    return None


# -- the invariants -------------------------------------------------------------------------

def compose_violations(doc: dict[str, Any]) -> list[str]:
    """Every broken invariant of a compose document (empty: all hold)."""
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = doc.get("services") or {}
    raw = yaml.safe_dump(doc)

    # Secrets are ${VAR:?...} references, never literals and never defaults.
    for match in ANY_REF.finditer(raw):
        var, rest = match.groups()
        if SECRET_NAME.search(var) and not rest.startswith(":?"):
            problems.append(f"${{{var}{rest}}}: a secret must be required (${{{var}:?...}}), not defaulted")

    for name, svc in services.items():
        if problem := image_problem(name, svc):
            problems.append(problem)

        one_shot = str(svc.get("restart", "")) == "no"
        health = svc.get("healthcheck") or {}
        if not one_shot and (not health.get("test") or health.get("disable")):
            problems.append(f"{name}: long-running service without a healthcheck")

        if svc.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host bypasses the published-port rules")
        for host_ip, _host_port, target in published_ports(svc):
            if target in NEVER_PUBLISHED or name in ("redis", "postgres"):
                problems.append(f"{name}: publishes {target}, which must stay inside the network")
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {target} is published on {host_ip or 'all interfaces'}, not 127.0.0.1")
            if target not in WEB_UIS.get(name, set()):
                problems.append(f"{name}: publishes {target}, which is not a web UI")

        for key, value in env_of(svc).items():
            if SECRET_NAME.search(key) and not REQUIRED_REF.fullmatch(value):
                problems.append(f"{name}: {key} is not a ${{...:?...}} reference")
        for text in strings_in([env_of(svc), svc.get("command"), svc.get("entrypoint"), svc.get("healthcheck")]):
            for pattern in (URL_PASSWORD, JSON_PASSWORD, CLI_PASSWORD):
                for secret in pattern.findall(text):
                    if not secret.lstrip("'\"").startswith("$"):
                        problems.append(f"{name}: literal credential {secret!r} in {text[:60]!r}")

        for volume in svc.get("volumes") or []:
            spec = volume if isinstance(volume, str) else f"{volume.get('source')}:{volume.get('target')}"
            if spec.startswith("./monitoring") and not (
                spec.endswith(":ro") or (isinstance(volume, dict) and volume.get("read_only"))
            ):
                problems.append(f"{name}: {spec} should be mounted read-only")

    grafana = env_of(services.get("grafana", {}))
    for key in ("GF_USERS_ALLOW_SIGN_UP", "GF_AUTH_ANONYMOUS_ENABLED"):
        if grafana.get(key, "").lower() != "false":
            problems.append(f"grafana: {key} must be false")
    if not REQUIRED_REF.fullmatch(grafana.get("GF_SECURITY_ADMIN_PASSWORD", "")):
        problems.append("grafana: GF_SECURITY_ADMIN_PASSWORD must come from .env")

    airflow = {n: s for n, s in services.items() if n.startswith("airflow-")}
    if not airflow:
        problems.append("no airflow-* services")
    for name, svc in airflow.items():
        env = env_of(svc)
        if env.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
            problems.append(f"{name}: executor is {env.get('AIRFLOW__CORE__EXECUTOR')!r}, not CeleryExecutor")
        if not CELERY_BROKER.fullmatch(env.get("AIRFLOW__CELERY__BROKER_URL", "")):
            problems.append(f"{name}: the Celery broker is not Redis database 1 with the password")
        if not env.get("AIRFLOW__CELERY__RESULT_BACKEND", "").startswith("db+postgresql://"):
            problems.append(f"{name}: the Celery result backend is not Postgres")
        if env.get("AIRFLOW__METRICS__STATSD_ON", "").lower() != "true" \
                or env.get("AIRFLOW__METRICS__STATSD_HOST") != "statsd-exporter" \
                or env.get("AIRFLOW__METRICS__STATSD_PORT") != "9125" \
                or "statsd-exporter" not in services:
            problems.append(f"{name}: StatsD does not go to statsd-exporter:9125")
        if env.get("AIRFLOW__CORE__LOAD_EXAMPLES", "").lower() != "false":
            problems.append(f"{name}: example DAGs are loaded")
        for conn, host in CONNECTION_HOSTS.items():
            try:
                parsed = json.loads(ANY_REF.sub("x", env.get(conn, "")))
            except json.JSONDecodeError:
                problems.append(f"{name}: {conn} is not JSON")
                continue
            if parsed.get("host") != host:
                problems.append(f"{name}: {conn} host is {parsed.get('host')!r}, not {host!r}")
            if conn == "AIRFLOW_CONN_SPARK_DEFAULT" and parsed.get("port") != 7077:
                problems.append(f"{name}: {conn} port is {parsed.get('port')!r}, not 7077")
        if name != "airflow-init":
            dep = (svc.get("depends_on") or {}).get("airflow-init") if isinstance(svc.get("depends_on"), dict) else None
            if not dep or dep.get("condition") != "service_completed_successfully":
                problems.append(f"{name}: does not wait for airflow-init to complete")
    return problems


# -- tests: the real tools ------------------------------------------------------------------

def test_compose_config_is_valid_with_the_example_env() -> None:
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def test_compose_config_fails_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(empty)
    assert result.returncode != 0
    assert "Missing mandatory value" in result.stderr, result.stderr


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_each_secret_is_required(tmp_path: Path, secret: str) -> None:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith(f"{secret}=")]
    assert len(lines) < len(ENV_EXAMPLE.read_text().splitlines()), f"{secret} is missing from .env.example"
    env_file = tmp_path / "partial.env"
    env_file.write_text("\n".join(lines) + "\n")
    result = compose_config(env_file)
    assert result.returncode != 0, f"compose accepted a .env without {secret}"
    assert secret in result.stderr, result.stderr


def test_env_example_holds_placeholders_only() -> None:
    values = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    for secret in REQUIRED_SECRETS:
        assert values.get(secret) == "change-me", f"{secret} in .env.example should be the placeholder change-me"


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    tool = require_tool("promtool", "prometheus")
    result = subprocess.run([tool, "check", "config", str(PROMETHEUS_CONFIG)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- tests: the invariants ------------------------------------------------------------------

def test_compose_file_holds_every_invariant() -> None:
    assert compose_violations(load_compose()) == []


def test_expected_services_are_there() -> None:
    services = set(load_compose()["services"])
    expected = {
        "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer", "airflow-worker", "spark-master", "spark-worker", "edge-service", "statsd-exporter",
        "prometheus", "pushgateway", "grafana",
    }
    assert expected <= services, f"missing: {sorted(expected - services)}"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc["services"]
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return mutate


@pytest.mark.parametrize(("mutate", "expected"), [
    (_set("redis/ports", ["6379:6379"]), "redis: publishes 6379"),
    (_set("postgres/ports", ["127.0.0.1:5432:5432"]), "postgres: publishes 5432"),
    (_set("grafana/ports", ["3000:3000"]), "not 127.0.0.1"),
    (_set("pushgateway/ports", ["127.0.0.1:9091:9091"]), "not a web UI"),
    (_set("grafana/image", "grafana/grafana:latest"), "not pinned"),
    (_set("redis/image", "redis"), "has no tag"),
    (_set("redis/image", "redis:7.4-alpine"), "not a specific version"),
    (_set("prometheus/healthcheck", None), "prometheus: long-running service without a healthcheck"),
    (_set("postgres/environment/POSTGRES_PASSWORD", "hunter2"), "POSTGRES_PASSWORD is not a"),
    (_set("postgres/environment/POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-airflow}"), "must be required"),
    (_set("airflow-worker/environment/AIRFLOW__CELERY__BROKER_URL", "redis://:hunter2@redis:6379/1"),
     "literal credential"),
    (_set("airflow-worker/environment/AIRFLOW_CONN_REDIS_DEFAULT",
          '{"conn_type": "redis", "host": "redis", "password": "hunter2"}'), "literal credential"),
    (_set("redis/command", ["redis-server", "--requirepass", "hunter2"]), "literal credential"),
    (_set("grafana/environment/GF_USERS_ALLOW_SIGN_UP", "true"), "GF_USERS_ALLOW_SIGN_UP must be false"),
    (_set("grafana/environment/GF_AUTH_ANONYMOUS_ENABLED", "true"), "GF_AUTH_ANONYMOUS_ENABLED must be false"),
    (_set("airflow-scheduler/environment/AIRFLOW__CORE__EXECUTOR", "LocalExecutor"), "not CeleryExecutor"),
    (_set("airflow-scheduler/environment/AIRFLOW__METRICS__STATSD_HOST", "localhost"), "statsd-exporter:9125"),
    (_set("airflow-worker/environment/AIRFLOW_CONN_SPARK_DEFAULT", "spark://spark-master:7077"), "is not JSON"),
    (_set("airflow-scheduler/depends_on", {"postgres": {"condition": "service_healthy"}}), "airflow-init"),
    (_set("statsd-exporter/volumes", ["./monitoring/statsd_mapping.yml:/etc/statsd/statsd_mapping.yml"]),
     "read-only"),
])
def test_the_checker_catches_a_broken_copy(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    doc = copy.deepcopy(load_compose())
    # Services share environment dicts through YAML anchors; unshare them before editing one.
    for svc in doc["services"].values():
        if "environment" in svc:
            svc["environment"] = dict(svc["environment"])
    mutate(doc)
    problems = compose_violations(doc)
    assert any(expected in p for p in problems), problems


# -- tests: what the stack mounts and builds -----------------------------------------------

def test_files_mounted_from_the_repository_exist() -> None:
    """Bind mounts from ./monitoring (some written by others) must be in the checkout."""
    missing = []
    for name, svc in load_compose()["services"].items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else str(volume.get("source"))
            if source.startswith("./") and not (ROOT / source).exists():
                missing.append(f"{name}: {source}")
    assert missing == []


def test_prometheus_scrapes_compose_services() -> None:
    services = load_compose()["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"edge", "airflow", "pushgateway", "prometheus"} <= set(jobs)
    assert jobs["pushgateway"].get("honor_labels") is True
    for job in jobs.values():
        for target in (t for sc in job.get("static_configs", []) for t in sc["targets"]):
            host = target.rsplit(":", 1)[0]
            assert host == "localhost" or host in services, f"{job['job_name']}: {target} is not a compose service"
    command = " ".join(services["edge-service"]["command"])
    assert "--bind 0.0.0.0" in command and "--port 8100" in command
    assert jobs["edge"]["static_configs"][0]["targets"] == ["edge-service:8100"]


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    pins = dict(line.split("==", 1) for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    base = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    if base != [f"apache/airflow:{pins['apache-airflow']}-python3.11"]:
        problems.append(f"base image {base} is not apache/airflow:{pins['apache-airflow']}-python3.11")
    for sources in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            if not (ROOT / source).exists():
                problems.append(f"COPY source {source} is not in the repository")
    if "openjdk-17" not in text or "JAVA_HOME" not in text:
        problems.append("no Java 17 for Spark")
    return problems


def test_dockerfile_is_pinned_and_copies_existing_files() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_dockerfile_check_catches_a_floating_base() -> None:
    text = re.sub(r"^FROM .*$", "FROM apache/airflow:latest", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert any("base image" in p for p in dockerfile_problems(text))
