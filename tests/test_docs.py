"""Every command the README and the docs show is checked: run, or parsed by what would run it.

A command is a line of a ``bash`` block, or an inline code span that starts with one of the
programs below and says more than the program's name. Each is checked against the real
thing: ``make`` targets and variables against the Makefile; ``edgecache`` and the Spark jobs
against their own argument parsers; scripts by running their ``--help`` and finding every
flag the docs use; ``airflow`` against Airflow's CLI parser; Compose commands against the
compose file; ``curl`` lines by their URL (loopback, a route that exists) and JSON body;
``redis-cli`` and ``promtool`` by their own help; and the secrets recipe is run for real and
its files passed through ``docker/check-secrets.sh``. A line no check knows fails the test,
so a new kind of command cannot slip in unchecked.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.services import require_binary

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DAY, NEXT = "2025-04-12", "2025-04-13"
# Placeholders the docs write in commands, and a value of the right kind for each.
PLACEHOLDERS = {"<run day + 1>": NEXT, "D+1": NEXT, "D": DAY, "URL": "http://127.0.0.1:8100",
                "<printed password>": "x" * 16}
# Programs that make an inline code span a command (with at least one argument).
PROGRAMS = ("make", "edgecache", ".venv/bin/edgecache", "python", "python3", ".venv/bin/python", ".venv/bin/ruff",
            "spark-submit", "docker", "docker-compose", "curl", "redis-cli", "promtool", "airflow")


def block_commands(block: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments dropped, ``&&`` split."""
    found = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        line = re.sub(r"\s{2,}#.*$", "", line).strip()
        if line and not line.startswith("#"):
            found += [part.strip() for part in line.split(" && ")]
    return found


def commands() -> list[tuple[str, str, bool]]:
    """(doc, command, from a bash block) for every command in the README and docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            found += [(doc.name, command, True) for command in block_commands(block)]
        inline = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", inline):
            words = span.split()
            if len(words) > 1 and words[0] in PROGRAMS:
                found.append((doc.name, span, False))
    return found


COMMANDS = commands()


def words(command: str) -> list[str]:
    """The command's words, placeholders replaced."""
    for placeholder in (p for p in PLACEHOLDERS if " " in p):
        command = command.replace(placeholder, PLACEHOLDERS[placeholder])
    return [PLACEHOLDERS.get(w, w) for w in shlex.split(command)]


def parses(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """None when ``parser`` accepts ``args``, else argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def flags_known(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """For a span that names flags rather than a full command: each flag (or the flag family
    ``--fl-...``) exists. None when they do."""
    known = {s for a in parser._actions for s in a.option_strings}
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        family = flag.rstrip(".")
        if flag not in known and not (flag.endswith("...") and any(k.startswith(family) for k in known)):
            return f"unknown flag {flag}"
    return None


# --- make ---------------------------------------------------------------------------------


@cache
def makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))
    variables = set(re.findall(r"^([A-Z_]+)\s*[?:]?=", text, re.M))
    return targets, variables


def check_make(args: list[str], full: bool) -> str | None:
    targets, variables = makefile()
    for a in args:
        name = a.split("=")[0]
        if "=" in a and name not in variables:
            return f"the Makefile has no variable {name}"
        if "=" not in a and a not in targets:
            return f"the Makefile has no target {a}"
    return None


# --- the edgecache CLI and the Spark jobs -------------------------------------------------


def job_parser(module: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"edgecache.{module}").build_parser()


def check_edgecache(args: list[str], full: bool) -> str | None:
    from edgecache import cli

    if not args:
        return "no subcommand"
    for alternative in args[1].split("|") if len(args) > 1 and "|" in args[1] else [None]:
        argv = [*args[:1], alternative, *args[2:]] if alternative else args
        argv = [a.strip("[]") for a in argv]  # optional parts, as usage lines write them
        argv = [a for a in argv if a not in ("", "...")]
        if argv[0] in cli.SPARK_STAGES:
            parser, rest = job_parser(cli.SPARK_STAGES[argv[0]]), argv[1:]
        else:
            parser, rest = cli.build_parser(), argv
        problem = parses(parser, rest)
        if problem and not full:  # a span naming a subcommand's flags, not a whole command
            sub = parser if argv[0] in cli.SPARK_STAGES else subparser(parser, argv[0])
            problem = "no such subcommand" if sub is None else flags_known(sub, rest[1:] if sub is not parser else rest)
        if problem:
            return problem
    return None


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def check_spark_submit(args: list[str], full: bool) -> str | None:
    script = next((a for a in args if a.endswith(".py")), None)
    if script is None or not (ROOT / script).is_file():
        return f"no such script {script}"
    module = re.search(r"^from edgecache\.([\w.]+) import main$", (ROOT / script).read_text(), re.M)
    if module is None:
        return f"{script} does not call a job's main"
    return parses(job_parser(module.group(1)), args[args.index(script) + 1 :])


# --- scripts and Python tools -------------------------------------------------------------


@cache
def script_help(script: str) -> tuple[int, str]:
    out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def check_python(args: list[str], full: bool) -> str | None:
    if args[:2] == ["-m", "pytest"]:
        markers = {line.split(":")[0].strip() for line in pytest_markers()}
        wanted = [args[i + 1] for i, a in enumerate(args) if a == "-m" and i > 0]
        missing = [m for m in wanted if m not in markers]
        return f"no pytest marker {missing}" if missing else None
    if args[0] == "-m":
        return None if importlib.util.find_spec(args[1]) else f"no module {args[1]}"
    if args[0] == "-c":
        return None
    script = args[0]
    if not (ROOT / script).is_file():
        return f"no such script {script}"
    code, text = script_help(script)
    if code != 0:
        return f"{script} --help failed: {text[-300:]}"
    unknown = [a for a in args[1:] if a.startswith("--") and a.split("=")[0] not in text]
    return f"{script} has no flag {unknown}" if unknown else None


def pytest_markers() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]


def check_ruff(args: list[str], full: bool) -> str | None:
    if args[0] not in ("check", "format"):
        return f"ruff has no command {args[0]}"
    missing = [a for a in args[1:] if not a.startswith("-") and not (ROOT / a).exists()]
    return f"no such paths {missing}" if missing else None


# --- Airflow, Compose, curl, redis-cli, promtool ------------------------------------------


@cache
def airflow_parser() -> argparse.ArgumentParser:
    from airflow.cli import cli_parser

    return cli_parser.get_parser()


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def check_airflow(args: list[str], full: bool) -> str | None:
    text = (ROOT / "docker-compose.yaml").read_text()
    if args[:2] == ["users", "create"]:  # the FAB auth manager's command: the compose stack runs it
        return None if "airflow users create" in text else "the compose file does not run airflow users create"
    problem = parses(airflow_parser(), args)
    if problem and not full:  # a span naming a command without its arguments
        problem = parses(airflow_parser(), [*args, "--help"])
    return problem


def check_docker(args: list[str], full: bool) -> str | None:
    args = args[1:] if args and args[0] == "compose" else args
    services = set(compose()["services"])
    named = [a.split("=")[0] for i, a in enumerate(args) if i > 0 and args[i - 1] == "--scale"]
    if args and args[0] == "exec":
        named.append(args[1])
    missing = [s for s in named if s not in services]
    if missing:
        return f"the compose file has no service {missing}"
    return None if args and args[0] in ("up", "exec", "config", "down") else f"unexpected compose command {args}"


def check_curl(args: list[str], full: bool) -> str | None:
    urls = [a for a in args if re.match(r"(https?://)?(localhost|127\.0\.0\.1)[:/]", a) or a.startswith("http")]
    if not urls:
        return "no URL"
    for url in urls:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.hostname not in ("127.0.0.1", "localhost"):
            return f"{url} is not on loopback"
        service = (ROOT / "include/edgecache/serving/delivery/service.py").read_text()
        if parts.port in (8100, 8101) and f'"{parts.path}"' not in service:
            return f"the edge service has no route {parts.path}"
        if parts.port == 8080 and not parts.path.startswith(("/auth/token", "/api/v2/")):
            return f"{parts.path} is not Airflow's API"
    for i, a in enumerate(args[:-1]):
        if a == "-d":
            try:
                json.loads(PLACEHOLDERS["<printed password>"].join(args[i + 1].split("<printed password>")))
            except ValueError as exc:
                return f"the body is not JSON: {exc}"
    return None


@cache
def tool_help(*argv: str) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def check_redis_cli(args: list[str], full: bool) -> str | None:
    from edgecache.ops.redis_server import DEFAULT_PORT
    from edgecache.serving.redis_conn import redis_cli_binary

    if "-p" in args and args[args.index("-p") + 1] != str(DEFAULT_PORT):
        return f"the embedded redis-server listens on {DEFAULT_PORT}"
    text = tool_help(redis_cli_binary(), "--help")
    unknown = [a for a in args if a.startswith("--") and a not in text]
    return f"redis-cli has no option {unknown}" if unknown else None


def check_promtool(args: list[str], full: bool) -> str | None:
    text = tool_help(require_binary("promtool", "prometheus"), "check", "--help")
    return None if args[0] == "check" and all(a in text for a in args[1:]) else f"promtool has no {args}"


CHECKS: dict[str, Callable[[list[str], bool], str | None]] = {
    "make": check_make,
    "edgecache": check_edgecache,
    ".venv/bin/edgecache": check_edgecache,
    "spark-submit": check_spark_submit,
    "python": check_python,
    "python3": check_python,
    ".venv/bin/python": check_python,
    ".venv/bin/ruff": check_ruff,
    "airflow": check_airflow,
    "docker": check_docker,
    "docker-compose": check_docker,
    "curl": check_curl,
    "redis-cli": check_redis_cli,
    "promtool": check_promtool,
}


def check(command: str, full: bool) -> str | None:
    """None when the command checks out, else what is wrong."""
    if command.startswith("TOKEN=$(curl"):  # a token fetched with curl, read by python3 -c
        return check_curl(words(command[len("TOKEN=$(") : command.index(" | python3")]), full)
    if m := re.fullmatch(r"AIRFLOW_CONN_([A-Z_]+)='(.*)'", command):
        return check_connection(m.group(1).lower(), m.group(2))
    argv = words(command)
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # VAR=value before the program
        argv = argv[1:]
    if argv and argv[0] == "source":
        return None if argv[1] == ".venv/bin/activate" else f"unexpected source {argv[1]}"
    if not argv or argv[0] not in CHECKS:
        return f"no check knows the program {argv[:1]}"
    return CHECKS[argv[0]](argv[1:], full)


def check_connection(conn_id: str, value: str) -> str | None:
    from airflow.models.connection import Connection

    try:
        conn = Connection.from_json(value, conn_id=conn_id)
    except ValueError as exc:
        return f"not a connection: {exc}"
    return None if conn.conn_type == "spark" and conn.host else "not a Spark connection with a host"


def secrets_recipe() -> str:
    """The operations page's recipe for the compose secrets: its bash block up to the
    ``docker compose`` line (which is checked with the other Compose commands)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "mkdir -m 700 secrets" in b)
    return block.split("docker compose")[0]


# Its commands run together in the recipe's own test, not one by one.
RECIPE = set(block_commands(secrets_recipe()))


# --- the tests ----------------------------------------------------------------------------


def test_the_docs_show_commands_of_every_kind():
    kinds = {words(c)[0] for _, c, _ in COMMANDS if not c.startswith(("TOKEN=", "AIRFLOW_CONN_"))}
    assert {"make", "edgecache", "python", "spark-submit", "curl", "airflow", "docker"} <= kinds, kinds
    assert len(COMMANDS) > 100


@pytest.mark.parametrize(("doc", "command", "full"), [c for c in COMMANDS if c[1] not in RECIPE],
                         ids=[f"{d}:{c[:60]}" for d, c, _ in COMMANDS if c not in RECIPE])
def test_every_command_in_the_docs_checks_out(doc, command, full):
    problem = check(command, full)
    assert problem is None, f"{doc}: `{command}`: {problem}"


def test_the_secrets_recipe_runs_and_makes_secrets_the_stack_accepts(tmp_path):
    """The operations page's recipe for the compose secrets, run as written in a scratch
    folder; each file it makes passes docker/check-secrets.sh, and they are the secrets the
    compose file declares."""
    block = secrets_recipe()
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    require_binary("openssl", "openssl")
    out = subprocess.run(["bash", "-euc", block], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    made = sorted(p.name for p in (tmp_path / "secrets").iterdir())
    assert made and set(made) <= set(compose()["secrets"]), made
    assert (tmp_path / ".env").read_text() == (ROOT / ".env.example").read_text()
    env = {f"{name}_FILE": str(tmp_path / "secrets" / name) for name in made}
    checked = subprocess.run(["sh", str(ROOT / "docker" / "check-secrets.sh"), *made], env=env,
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_a_wrong_command_is_caught():
    """The checks can fail: a target, a flag and a route that do not exist."""
    assert check("make nightly", True) == "the Makefile has no target nightly"
    assert "unrecognized arguments" in check("edgecache evaluate --date 2025-04-12 --cache-size 5", True)
    assert "no route" in check("curl -X POST localhost:8100/predict", True)
    assert check("spark-submit spark_jobs/predict.py --date 2025-04-12 --top-k none", True) is not None
    assert check("rsync -a data/ backup/", True) is not None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_and_anchor_in_the_docs_exists():
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md":
                heads = {slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}
                if anchor not in heads:
                    broken.append(f"{doc.name}: {target} (no such heading)")
    assert broken == []
    assert slug("What leaves an edge, model by model") == "what-leaves-an-edge-model-by-model"
