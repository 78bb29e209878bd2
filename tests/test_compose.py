"""The Docker Compose stack: the Compose spec, the invariants a reviewer would check by hand,
the image build file, the Prometheus configuration it mounts, and how secrets reach the
containers.

No Docker engine is needed: ``docker-compose config`` validates against the Compose spec
offline, and ``promtool`` checks the Prometheus configuration. Both tools are required, not
optional: a missing one fails the test (Debian: ``apt-get install docker-compose prometheus``).
The placeholder check (``docker/check-secrets.sh``) and the Airflow init script run for real
under ``sh`` and ``bash``, with a stand-in ``airflow`` that records what it was given.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import require_binary

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus" / "prometheus-compose.yml"
CHECK_SCRIPT = ROOT / "docker" / "check-secrets.sh"

# The secrets .env must provide; compose refuses to start without any of them.
REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
)
# Compose secrets (files under ./secrets/, at /run/secrets/<name> in the container) -> the
# variable naming the file, per service that reads it.
FILE_SECRETS = {
    "airflow_admin_password": {"airflow-init": "AIRFLOW_ADMIN_PASSWORD_FILE"},
    "grafana_admin_password": {"grafana": "GF_SECURITY_ADMIN_PASSWORD__FILE"},
    "edgecache_api_token": {"edge-service": "EDGECACHE_API_TOKEN_FILE"},
}
# The placeholder check as the containers see it, and the mount that puts it there.
CHECK_IN_CONTAINER = "/opt/edgecache/check-secrets.sh"
CHECK_MOUNT = f"./docker/check-secrets.sh:{CHECK_IN_CONTAINER}:ro"
# Secret file variables: NAME_FILE (ours, Postgres) or NAME__FILE (Grafana).
FILE_VAR = re.compile(r"^(?P<base>[A-Za-z_][A-Za-z0-9_]*?)_{1,2}FILE$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|KEY|TOKEN|AUTH$")
# ${NAME:?message}: the only acceptable form for a secret.
REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
# Not $${NAME}: that is escaped for compose and expanded in the container at run time.
ANY_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
URL_PASSWORD = re.compile(r"://[^/@\s:]*:([^@\s]*)@")
JSON_PASSWORD = re.compile(r'"password"\s*:\s*"([^"]*)"')
CLI_PASSWORD = re.compile(r"--(?:requirepass|password|pass)[=\s]+(\S+)")
# A flag that takes a secret as its value, whatever the value is: never on a command line.
SECRET_FLAG = re.compile(r"^--?(?:password|passwd|pass|requirepass|token|secret|api-key)(?:=|$)", re.IGNORECASE)
# ${VAR} is filled in by compose, so it lands in the process's arguments; $${VAR} and $$VAR
# are left to the shell in the container.
COMPOSE_REF = re.compile(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)")
RUNTIME_REF = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)")
SHELLS = {"sh", "bash", "ash", "dash"}
# Shell builtins: their arguments never reach a process's argument list.
BUILTINS = {"printf", "echo", "export", "read", "test", "[", "umask", "set"}
CONTROL = {";", "&&", "||", "|", "&", "(", ")"}

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

def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose config -q`` with only ``env_file`` as the source of variables."""
    tool = require_binary("docker-compose", "docker-compose")
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


def is_secret_var(name: str) -> bool:
    """A variable whose value is a secret (not the path of a secret file)."""
    upper = name.upper()
    return bool(SECRET_NAME.search(upper)) and not FILE_VAR.match(upper)


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else shlex.split(str(value))


def shell_commands(script: str) -> Iterator[tuple[list[str], str | None]]:
    """Each simple command of a shell script, as its words, with the operator after it."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in lexer:
            if token in CONTROL:
                if words:
                    yield words, token
                words = []
            else:
                words.append(token)
        if words:
            yield words, None


def program_and_args(words: list[str]) -> tuple[str, list[str]]:
    """The program a simple command runs (after VAR=value prefixes and exec) and its arguments;
    redirections are dropped."""
    i = 0
    while i < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        i += 1
    rest = words[i:]
    if rest[:1] == ["exec"]:
        rest = rest[1:]
    args: list[str] = []
    skip = False
    for word in rest[1:]:
        if skip:
            skip = False
        elif word in (">", ">>", "<", "2>", "2>&1"):
            skip = word != "2>&1"
        else:
            args.append(word)
    return (Path(rest[0]).name if rest else ""), args


@dataclass(frozen=True)
class Command:
    """One command a container runs."""

    program: str
    args: list[str]
    in_shell: bool = False  # a command of a -c script: the shell expands $VAR in its arguments
    then: str | None = None  # the operator after it in the script (&&, |, ...)
    errexit: bool = False  # the script runs under -e


def commands_of(svc: dict[str, Any]) -> Iterator[Command]:
    """Every command a service runs: exec-form argv whole (entrypoint and command together,
    and the health check), and each command of a shell's ``-c`` script."""
    entry = _argv(svc.get("entrypoint"))
    argvs = [entry + _argv(svc.get("command"))] if entry else [_argv(svc.get("command"))]
    test = (svc.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
        argvs.append(["sh", "-c", " ".join(test[1:])])
    elif isinstance(test, list) and test[:1] == ["CMD"]:
        argvs.append(test[1:])
    elif isinstance(test, str):
        argvs.append(["sh", "-c", test])
    for argv in argvs:
        if not argv:
            continue
        yield Command(Path(argv[0]).name, argv[1:])
        for i, arg in enumerate(argv[:-1]):
            # -c, alone or among other one-letter options (-ec)
            if re.fullmatch(r"-[a-z]*c[a-z]*", arg) and any(Path(a).name in SHELLS for a in argv[:i]):
                errexit = any(re.fullmatch(r"-[a-z]*e[a-z]*", a) for a in argv[:i + 1])
                for words, op in shell_commands(argv[i + 1]):
                    program, args = program_and_args(words)
                    if program:
                        yield Command(program, args, in_shell=True, then=op, errexit=errexit)


def argument_problems(name: str, svc: dict[str, Any]) -> list[str]:
    """Secrets that would sit in some process's argument list, where `ps` shows them."""
    problems = []
    for cmd in commands_of(svc):
        for arg in cmd.args:
            for var in COMPOSE_REF.findall(arg):
                if is_secret_var(var):
                    problems.append(f"{name}: compose puts ${{{var}}} on the command line of {cmd.program}")
            if cmd.program in BUILTINS:
                continue
            if SECRET_FLAG.match(arg):
                problems.append(f"{name}: {cmd.program} gets {arg.split('=')[0]} on its command line")
            # outside a shell, $$VAR stays the literal text "$VAR"
            for var in RUNTIME_REF.findall(arg) if cmd.in_shell else []:
                if is_secret_var(var):
                    problems.append(f"{name}: {cmd.program} gets ${var} on its command line")
        if cmd.program == "airflow" and "users" in cmd.args and "-p" in cmd.args:
            problems.append(f"{name}: airflow users gets -p on its command line")
    return problems


def secrets_held(svc: dict[str, Any]) -> set[str]:
    """The secrets a service is given: NAME for $NAME from .env, or for $NAME_FILE / $NAME__FILE."""
    held = set()
    for key, value in env_of(svc).items():
        if (m := FILE_VAR.match(key)) and value.startswith("/run/secrets/"):
            held.add(m["base"])
        elif is_secret_var(key) and REQUIRED_REF.fullmatch(value):
            held.add(key)
    return held


def secrets_checked(svc: dict[str, Any]) -> set[str]:
    """The names a service hands to the placeholder check before it goes on (exec-form, or a
    script command followed by && or run under set -e)."""
    checked: set[str] = set()
    for cmd in commands_of(svc):
        words = [cmd.program, *cmd.args]
        for i, word in enumerate(words):
            if word != CHECK_IN_CONTAINER:
                continue
            names = words[i + 1:]
            execs_the_rest = "--" in names
            names = names[:names.index("--")] if execs_the_rest else names
            if execs_the_rest or (cmd.in_shell and (cmd.then == "&&" or cmd.errexit)):
                checked.update(names)
    return checked


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

        service_secrets = {s if isinstance(s, str) else s.get("source") for s in svc.get("secrets") or []}
        for secret in service_secrets - set(doc.get("secrets") or {}):
            problems.append(f"{name}: uses secret {secret}, which the file does not declare")
        for key, value in env_of(svc).items():
            if FILE_VAR.match(key) and SECRET_NAME.search(key):
                secret = value.removeprefix("/run/secrets/")
                if value == secret or secret not in service_secrets:
                    problems.append(f"{name}: {key} is {value!r}, not one of its secrets under /run/secrets/")
            elif SECRET_NAME.search(key) and not REQUIRED_REF.fullmatch(value):
                problems.append(f"{name}: {key} is not a ${{...:?...}} reference")
        problems.extend(argument_problems(name, svc))
        for text in strings_in([env_of(svc), svc.get("command"), svc.get("entrypoint"), svc.get("healthcheck")]):
            for pattern in (URL_PASSWORD, JSON_PASSWORD, CLI_PASSWORD):
                for secret in pattern.findall(text):
                    if not secret.lstrip("'\"").startswith("$"):
                        problems.append(f"{name}: literal credential {secret!r} in {text[:60]!r}")

        for volume in svc.get("volumes") or []:
            spec = volume if isinstance(volume, str) else f"{volume.get('source')}:{volume.get('target')}"
            if spec.startswith(("./monitoring", "./docker")) and not (
                spec.endswith(":ro") or (isinstance(volume, dict) and volume.get("read_only"))
            ):
                problems.append(f"{name}: {spec} should be mounted read-only")

    # Compose secrets are files kept out of the repository, never values in the compose file.
    for secret, spec in (doc.get("secrets") or {}).items():
        if not isinstance(spec, dict) or set(spec) != {"file"} or not str(spec["file"]).startswith("./secrets/"):
            problems.append(f"secret {secret}: must be a file under ./secrets/, got {spec!r}")
    for secret, readers in FILE_SECRETS.items():
        for service, var in readers.items():
            if env_of(services.get(service, {})).get(var) != f"/run/secrets/{secret}":
                problems.append(f"{service}: {var} is not /run/secrets/{secret}")

    # Every secret a container holds passes the placeholder check before the container's
    # program starts; the Airflow components wait for airflow-init, which checks theirs.
    init_checked = secrets_checked(services.get("airflow-init", {}))
    for name, svc in services.items():
        checked = secrets_checked(svc)
        if name.startswith("airflow-"):
            checked |= init_checked
        for secret in sorted(secrets_held(svc) - checked):
            problems.append(f"{name}: starts without checking {secret} for a placeholder")
        if secrets_checked(svc) and CHECK_MOUNT not in (svc.get("volumes") or []):
            problems.append(f"{name}: runs the placeholder check but does not mount {CHECK_MOUNT}")

    grafana = env_of(services.get("grafana", {}))
    for key in ("GF_USERS_ALLOW_SIGN_UP", "GF_AUTH_ANONYMOUS_ENABLED"):
        if grafana.get(key, "").lower() != "false":
            problems.append(f"grafana: {key} must be false")
    if "GF_SECURITY_ADMIN_PASSWORD" in grafana:
        problems.append("grafana: GF_SECURITY_ADMIN_PASSWORD must come from its secret file")

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
    tool = require_binary("promtool", "prometheus")
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


# airflow-init's command before the admin password left its command line
OLD_AIRFLOW_INIT = """sh /opt/edgecache/check-secrets.sh AIRFLOW_ADMIN_PASSWORD
airflow db migrate
airflow users create --role Admin \\
  --username "$${AIRFLOW_ADMIN_USERNAME}" --password "$${AIRFLOW_ADMIN_PASSWORD}" \\
  --email "$${AIRFLOW_ADMIN_EMAIL}" --firstname Airflow --lastname Admin
"""


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
    # secrets on command lines, however they get there
    (_set("airflow-init/command", ["bash", "-euo", "pipefail", "-c", OLD_AIRFLOW_INIT]),
     "airflow-init: airflow gets --password on its command line"),
    (_set("airflow-init/command", ["bash", "-ec", "airflow users create -u admin -p \"$${admin_password}\""]),
     "airflow-init: airflow gets $admin_password on its command line"),
    (_set("redis/command", ["redis-server", "--requirepass", "${REDIS_PASSWORD:?set it}"]),
     "redis: compose puts ${REDIS_PASSWORD} on the command line of redis-server"),
    (_set("redis/healthcheck/test", ["CMD-SHELL", 'redis-cli -a "$$REDIS_PASSWORD" ping']),
     "redis: redis-cli gets $REDIS_PASSWORD on its command line"),
    (_set("edge-service/command", ["edgecache", "serve", "--token=$${EDGECACHE_API_TOKEN}"]),
     "edge-service: dumb-init gets --token on its command line"),
    # the placeholder check: present, before the program, and mounted
    (_set("grafana/entrypoint", None), "grafana: starts without checking GF_SECURITY_ADMIN_PASSWORD"),
    (_set("postgres/entrypoint", ["docker-entrypoint.sh"]), "postgres: starts without checking POSTGRES_PASSWORD"),
    (_set("redis/command", ["sh", "-c", "sh /opt/edgecache/check-secrets.sh REDIS_PASSWORD; exec redis-server"]),
     "redis: starts without checking REDIS_PASSWORD"),
    (_set("airflow-init/command", ["bash", "-c", "airflow db migrate"]),
     "airflow-scheduler: starts without checking AIRFLOW__CORE__FERNET_KEY"),
    (_set("edge-service/volumes", ["edgecache-data:/opt/edgecache/data:ro"]),
     "does not mount ./docker/check-secrets.sh"),
    (_set("edge-service/volumes", ["./docker/check-secrets.sh:/opt/edgecache/check-secrets.sh"]), "read-only"),
    # compose secrets: files under ./secrets/, mounted where the variables say
    (_set("edge-service/secrets", None), "EDGECACHE_API_TOKEN_FILE is '/run/secrets/edgecache_api_token', not one of"),
    (_set("edge-service/environment/EDGECACHE_API_TOKEN_FILE", None),
     "edge-service: EDGECACHE_API_TOKEN_FILE is not /run/secrets/edgecache_api_token"),
    (_set("edge-service/environment/EDGECACHE_API_TOKEN", "change-me-0123456789"), "EDGECACHE_API_TOKEN is not a"),
    (_set("grafana/environment/GF_SECURITY_ADMIN_PASSWORD", "${GRAFANA_ADMIN_PASSWORD:?set it}"),
     "GF_SECURITY_ADMIN_PASSWORD must come from its secret file"),
    (_set("grafana/secrets", ["grafana_admin_password", "not_declared"]), "uses secret not_declared"),
    (lambda doc: doc["secrets"].update(edgecache_api_token={"environment": "EDGECACHE_API_TOKEN"}),
     "secret edgecache_api_token: must be a file under ./secrets/"),
    (lambda doc: doc["secrets"].update(grafana_admin_password={"file": "./.env"}),
     "secret grafana_admin_password: must be a file under ./secrets/"),
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


# -- tests: the placeholder check, run for real --------------------------------------------

def run_check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """docker/check-secrets.sh under the system's POSIX sh, with only ``env`` set."""
    return subprocess.run(["sh", str(CHECK_SCRIPT), *args], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=30)


GOOD = "0f9c2d7e4b1a8c3f5e6d7a8b9c0d1e2f"


@pytest.mark.parametrize("value", [
    "change-me", "CHANGE-ME", "changeme", "change_me", "", "   ", "short-but-real",
    "change-me-but-long-enough-0123", "replace-me-0123456789abcdef", "your-placeholder-goes-here",
])
def test_the_check_refuses_a_placeholder(value: str) -> None:
    result = run_check({"SECRET_A": value, "SECRET_B": GOOD}, "SECRET_A", "SECRET_B", "--", "echo", "started")
    assert result.returncode == 2
    assert result.stdout == ""  # the container's program never ran
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to start"), result.stderr
    assert "SECRET_A" in lines[0] and "SECRET_B" not in lines[0]
    if value.strip():
        assert value not in lines[0]  # names the variable, never shows the value


def test_the_check_starts_the_program_with_real_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(GOOD + "\n")  # a trailing newline is not part of the secret
    result = run_check({"SECRET_A": GOOD, "SECRET_B_FILE": str(secret_file), "SECRET_C__FILE": str(secret_file)},
                       "SECRET_A", "SECRET_B", "SECRET_C", "--", "sh", "-c", "echo started with $0", "argv0")
    assert (result.returncode, result.stdout, result.stderr) == (0, "started with argv0\n", "")
    assert run_check({"SECRET_A": GOOD}, "SECRET_A").returncode == 0  # no command: just the check


def test_the_check_reads_secret_files_and_names_them(tmp_path: Path) -> None:
    placeholder = tmp_path / "admin_password"
    placeholder.write_text("change-me\n")
    result = run_check({"SECRET_A_FILE": str(placeholder), "SECRET_B__FILE": str(tmp_path / "missing"),
                        "SECRET_C": GOOD}, "SECRET_A", "SECRET_B", "SECRET_C", "--", "echo", "started")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: refusing to start with a missing or placeholder secret: SECRET_A (a placeholder in {placeholder}), "
        f"SECRET_B (cannot read {tmp_path / 'missing'}); see .env.example"]


def test_the_check_refuses_every_secret_of_the_example_env() -> None:
    """A .env copied from the example and not edited starts nothing."""
    values = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    result = run_check({k: values[k] for k in REQUIRED_SECRETS}, *REQUIRED_SECRETS)
    assert result.returncode == 2
    assert all(f"{k} (a placeholder in ${k})" in result.stderr for k in REQUIRED_SECRETS), result.stderr


def test_the_check_evaluates_no_names_it_is_given(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = run_check({}, f"A;touch {marker}")
    assert result.returncode == 2 and "is not a variable name" in result.stderr
    assert not marker.exists()


def test_every_checked_name_is_a_secret_the_service_holds() -> None:
    """A typo in a name handed to the check would check an unset variable and refuse to start."""
    for name, svc in load_compose()["services"].items():
        assert secrets_checked(svc) <= secrets_held(svc), name


# -- tests: airflow-init, run for real with a stand-in airflow -----------------------------

STAND_IN_AIRFLOW = """#!/bin/bash
# Records its arguments, what it reads on stdin and its parent's command line, as `ps` would show them.
{
  printf 'argv:'; printf ' %s' "$@"; printf '\\n'
  printf 'parent:'; tr '\\0' ' ' < /proc/$PPID/cmdline; printf '\\n'
  if [ "$1" = users ]; then printf 'stdin:'; tr '\\n' '|' ; printf '\\n'; fi
} >> "$AIRFLOW_CALLS"
"""


def run_airflow_init(tmp_path: Path, admin_password: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """airflow-init's script as the container runs it: compose's $$ unescaped, the check at the
    repository's path, and ``airflow`` a stand-in that records each call."""
    command = load_compose()["services"]["airflow-init"]["command"]
    assert command[:4] == ["bash", "-euo", "pipefail", "-c"]
    script = command[4].replace("$$", "$").replace(CHECK_IN_CONTAINER, str(CHECK_SCRIPT))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "airflow").write_text(STAND_IN_AIRFLOW)
    (bin_dir / "airflow").chmod(0o755)
    (tmp_path / "airflow_admin_password").write_text(admin_password + "\n")
    calls = tmp_path / "calls.txt"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AIRFLOW_CALLS": str(calls),
        "AIRFLOW_ADMIN_USERNAME": "admin",
        "AIRFLOW_ADMIN_EMAIL": "admin@example.com",
        "AIRFLOW_ADMIN_PASSWORD_FILE": str(tmp_path / "airflow_admin_password"),
        "AIRFLOW__CORE__FERNET_KEY": "8Xc0kXn2e6m0yTq3bK1QfVvQ4m9ZJgk7c5H2a1b3c4d=",
        "AIRFLOW__API_AUTH__JWT_SECRET": GOOD,
        "AIRFLOW__API__SECRET_KEY": GOOD[::-1],
    }
    result = subprocess.run([*command[:4], script], env=env, capture_output=True, text=True, timeout=60)
    return result, calls.read_text() if calls.exists() else ""


def test_airflow_init_gives_the_admin_password_on_stdin_only(tmp_path: Path) -> None:
    password = "s3cret-admin-pw-" + GOOD
    result, calls = run_airflow_init(tmp_path, password)
    assert result.returncode == 0, result.stderr
    argv = [line for line in calls.splitlines() if line.startswith("argv:")]
    assert argv[0] == "argv: db migrate"
    assert argv[1].startswith("argv: users create --role Admin --username admin --email admin@example.com")
    assert argv[2] == "argv: users reset-password --username admin"
    # twice on stdin (the password and its confirmation), for create and for reset
    assert [line for line in calls.splitlines() if line.startswith("stdin:")] == [f"stdin:{password}|{password}|"] * 2
    # neither airflow's arguments nor those of the shell that runs it hold the password
    assert password not in "\n".join(line for line in calls.splitlines() if not line.startswith("stdin:"))
    assert "--password" not in calls


def test_airflow_init_refuses_a_placeholder_admin_password(tmp_path: Path) -> None:
    result, calls = run_airflow_init(tmp_path, "change-me")
    assert result.returncode == 2
    assert calls == ""  # not even the migration ran
    assert result.stderr.strip().splitlines() == [
        f"error: refusing to start with a missing or placeholder secret: AIRFLOW_ADMIN_PASSWORD "
        f"(a placeholder in {tmp_path / 'airflow_admin_password'}); see .env.example"]
