"""The whole stack as `make up` starts it, watched from outside.

One `make up` (small workload, free ports, its own Redis and folders) serves every test here:

- a real browser (Debian's chromium, headless, driven by Playwright) signs in to the Airflow
  UI, triggers the DAG from its page and sees the run succeed, and saves a screenshot;
- the edge service then gets replay traffic of the next day, and a real Prometheus, which
  has scraped the edge service, the StatsD bridge (Airflow's metrics during that DAG run)
  and the Pushgateway, answers every query of every Grafana panel with data;
- `make down` stops every process `make up` started.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgecache.ops.dashboards import DASHBOARDS, queries
from tests.services import require_binary

pytestmark = [pytest.mark.e2e, pytest.mark.stack]

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "predictive_caching"
WORKLOAD = {"USERS": 300, "EDGES": 3, "TITLES": 120, "EVENTS": 2000, "SEED": 11, "BAD_RATE": 0.01, "TOP_K": 5,
            "CACHE_GB": 20, "WINDOW_DAYS": 3}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
# Grafana's variables and interval macros, as the panels would get them with "All" selected.
MACROS = {"$__rate_interval": "30s", "$edge": ".*", "$dag_id": ".*"}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make(target: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", target, f"PYTHON={sys.executable}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def listen_addresses(port: int) -> set[str]:
    """Addresses with a TCP socket listening on ``port``, from /proc/net/tcp (IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    six = Path("/proc/net/tcp6")
    for line in (six.read_text().splitlines()[1:] if six.exists() else []):
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            found.add("ipv6:" + local.split(":")[0])
    return found


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Any:
    for binary, package in (("prometheus", "prometheus"), ("prometheus-pushgateway", "prometheus-pushgateway"),
                            ("chromium", "chromium")):
        require_binary(binary, package)
    tmp = tmp_path_factory.mktemp("stack")
    names = ["AIRFLOW", "EDGE", "STATSD", "BRIDGE", "PROMETHEUS", "PUSHGATEWAY", "BATCH_EXPORTER", "GRAFANA"]
    ports = dict(zip(names, free_ports(len(names))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EDGECACHE_"))}
    env.update({f"EDGECACHE_{k}": str(v) for k, v in WORKLOAD.items()})
    env.update({f"EDGECACHE_{k}_PORT": str(v) for k, v in ports.items()})
    env.update({
        "EDGECACHE_DATA_DIR": str(tmp / "data"),
        "EDGECACHE_LOCAL_DIR": str(tmp / "local"),
        "REDIS_URL": redis_server.url.replace("/0", "/3"),  # a database of its own on the session's server
        "EDGECACHE_SCHEDULE": "none",  # only the run the browser triggers
        "EDGECACHE_SCRAPE_INTERVAL": "1s",
        "SPARK_MASTER": "local[2]",
    })
    env.pop("PUSHGATEWAY_URL", None)
    up = make("up", env, timeout=420)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        login = json.loads((tmp / "local" / "airflow" / "passwords.json").read_text())
        yield {"env": env, "ports": ports, "tmp": tmp, "out": up.stdout, "login": next(iter(login.items()))}
    finally:
        pids = json.loads((tmp / "local" / "up" / "pids.json").read_text()) if (
            tmp / "local" / "up" / "pids.json").exists() else {}
        down = make("down", env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        alive = [n for n, p in pids.items() if Path(f"/proc/{p['pid']}").exists()
                 and Path(f"/proc/{p['pid']}/stat").read_text().split(")")[-1].split()[0] != "Z"]
        assert not alive, f"still running after make down: {alive}"
        assert not [n for n, p in ports.items() if n not in ("STATSD", "BATCH_EXPORTER", "GRAFANA")
                    and listening(p)], "a port is still open after make down"


def test_make_up_prints_where_everything_is(stack):
    out, p = stack["out"], stack["ports"]
    for url in (f"http://127.0.0.1:{p['AIRFLOW']}", f"http://127.0.0.1:{p['PROMETHEUS']}",
                f"http://127.0.0.1:{p['PUSHGATEWAY']}", f"http://127.0.0.1:{p['EDGE']}",
                f"http://127.0.0.1:{p['BRIDGE']}/metrics"):
        assert url in out
    user, password = stack["login"]
    assert f"Airflow login: {user} / {password}" in out
    # Loopback only: nothing listens on another address at these ports.
    for port in p.values():
        assert listen_addresses(port) <= {"127.0.0.1"}, (port, listen_addresses(port))


def trigger_from_the_dialog(page, expect, attempts: int = 4) -> None:  # noqa: ANN001
    """Open the DAG's Trigger dialog, tick "Unpause" (the DAG starts paused, and a paused
    DAG's runs wait in the queue) and trigger.

    While the UI refreshes the DAG's details (the dag-processor parses it again, the page
    polls) it can re-render the page under an open dialog, which then closes without
    triggering. Then the dialog is opened again, unless a run has appeared after all."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    dag_url = page.url
    for attempt in range(attempts):
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        unpause = dialog.get_by_role("checkbox", name=re.compile("Unpause"))
        try:  # the dialog can close between any two of these steps (see above)
            # The box renders after the dialog opens, once the UI knows the DAG is paused:
            # wait for it (counting at once could miss it, and the run would wait forever).
            expect(unpause).to_be_visible(timeout=15_000)
            if not unpause.is_checked(timeout=10_000):
                unpause.check(timeout=10_000)
            dialog.get_by_role("button", name="Trigger").click(timeout=30_000)
            expect(dialog).to_be_hidden()
            return
        except (PlaywrightTimeout, AssertionError):
            if attempt == attempts - 1:
                raise
        page.goto(dag_url)
        expect(page.get_by_role("button", name="Trigger").first).to_be_visible()
        try:  # the header's "Latest Run" links to a run once there is one
            expect(page.locator(f"a[href*='/dags/{DAG_ID}/runs/']").first).to_be_visible(timeout=5_000)
            return  # the click went through before the page changed
        except AssertionError:
            pass


@pytest.fixture(scope="module")
def triggered(stack) -> dict[str, Any]:
    """Sign in, trigger the DAG from its page, wait until the UI shows the run succeeded."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # two cores, Airflow and Spark busy: the UI can be slow
    base = f"http://127.0.0.1:{stack['ports']['AIRFLOW']}"
    user, password = stack["login"]
    shot = stack["tmp"] / "airflow-run-success.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_binary("chromium", "chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            try:
                page.goto(base + "/")
                page.get_by_label("Username").fill(user)
                page.get_by_label("Password").fill(password)
                page.get_by_role("button", name="Sign in").click()
                expect(page).not_to_have_url(re.compile(r"/auth/login"))

                # The single-page UI changes its URL without page loads: expect() polls for it.
                page.goto(base + "/dags")
                link = page.get_by_role("link", name=DAG_ID, exact=True).first
                expect(link).to_be_visible(timeout=120_000)  # the dag-processor has parsed it
                link.click()
                expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}(\?.*)?$"))
                trigger_from_the_dialog(page, expect)
                # The UI may open the new run's page, or stay on the DAG's, whose "Latest Run"
                # links to it (the only run there is).
                # Its URL may end with a slash, depending on the link the UI followed.
                run_page = re.compile(rf"/dags/{DAG_ID}/runs/[^/?]+/?$")
                if not run_page.search(page.url):
                    run_link = page.locator(f"a[href*='/dags/{DAG_ID}/runs/']").first
                    expect(run_link).to_be_visible()
                    run_link.click()
                expect(page).to_have_url(run_page)
                run_url = page.url.rstrip("/")
                run_id = urllib.parse.unquote(run_url.rsplit("/", 1)[1])

                # The run's Details tab, every 15 s until its state reads success (or failed).
                # In between the browser rests on a blank page: the live UI costs a core of
                # rendering, which the DAG's Spark jobs need on a 2-core machine.
                triggered_at = time.monotonic()
                deadline = triggered_at + 1200
                state = ""
                while time.monotonic() < deadline:
                    page.goto(run_url + "/details")
                    row = page.get_by_role("row").filter(has=page.get_by_text("State", exact=True)).first
                    expect(row).to_be_visible()
                    state = row.inner_text().split()[-1].lower()
                    if state in ("success", "failed"):
                        break
                    # A paused DAG's run waits in the queue for ever: say so now, not in 20 minutes.
                    if state == "queued" and time.monotonic() > triggered_at + 30:
                        paused = _api(base, f"/api/v2/dags/{DAG_ID}", _token(base, user, password))["is_paused"]
                        assert not paused, "the DAG is still paused 30 s after the trigger: its run cannot start"
                    page.goto("about:blank")
                    time.sleep(15)
                page.goto(run_url)
                expect(page.get_by_text(re.compile(r"^\d+ Task Instances$"))).to_be_visible()
            except Exception:
                page.screenshot(path=str(stack["tmp"] / "airflow-failure.png"), full_page=True)
                raise
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return {"run_id": run_id, "state": state, "screenshot": shot, "base": base}


def test_browser_triggers_the_dag_and_sees_the_run_succeed(stack, triggered):
    assert triggered["state"] == "success", (
        f"the UI shows the run {triggered['run_id']} as {triggered['state']!r}; logs in {stack['tmp'] / 'local'}")
    shot = triggered["screenshot"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # The API agrees: every task ran to success, but ingest_logs, which the branch skips
    # when the logs are generated.
    token = _token(triggered["base"], *stack["login"])
    run = _api(triggered["base"], f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(triggered['run_id'])}", token)
    assert run["state"] == "success" and run["run_type"] == "manual"
    tis = _api(triggered["base"], f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(triggered['run_id'])}"
               "/taskInstances", token)["task_instances"]
    assert {t["task_id"]: t["state"] for t in tis} == {"ingest_logs": "skipped", **{t: "success" for t in (
        "choose_source", "generate_logs", "spark_features", "spark_predict", "warm_cache", "push_metrics",
        "next_day_logs", "evaluate")}}


def test_every_grafana_panel_shows_data(stack, triggered):
    assert triggered["state"] == "success"
    env, p = stack["env"], stack["ports"]
    run_day = dt.date.fromisoformat(re.search(r"\d{4}-\d{2}-\d{2}", triggered["run_id"]).group())
    next_day = (run_day + dt.timedelta(days=1)).isoformat()
    # The next day's requests (the evaluate task generated them) through the edge service,
    # plus a few refused ones, as real traffic has.
    replay = subprocess.run([sys.executable, "-m", "edgecache.cli", "replay", "--date", next_day, "--service",
                             f"http://127.0.0.1:{p['EDGE']}", "--rate", "150", "--duration", "20", "--json"],
                            env=env, capture_output=True, text=True, timeout=120)
    summary = json.loads(replay.stdout)
    # The logs hold malformed lines on purpose (bad_rate): the service refuses those with a 422,
    # and the replay exits 1 when anything was refused. Nothing else may fail.
    assert set(summary["errors"]) <= {"422"}, summary["errors"]
    assert replay.returncode == (1 if summary["errors"] else 0), replay.stderr[-2000:]
    assert summary["sent"] > 1000 and summary["hits"] > 0
    # `edgecache serve` made the stack's token in its local folder, where the replay found it
    token = (stack["tmp"] / "local" / "api_token").read_text().strip()
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {token}"}, 422)):
        bad = urllib.request.Request(f"http://127.0.0.1:{p['EDGE']}/deliver", method="POST",
                                     data=b'{"edge_id": "edge-01", "user_id": "U 1", "content_id": "C1"}',
                                     headers={"Content-Type": "application/json", **headers})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=5)
        assert refused.value.code == status
    time.sleep(5)  # a few more scrapes and rule evaluations

    prom = f"http://127.0.0.1:{p['PROMETHEUS']}"
    targets = _get(prom + "/api/v1/targets")["data"]["activeTargets"]
    assert {t["labels"]["job"] for t in targets if t["health"] == "up"} >= {"edge", "airflow", "pushgateway"}
    empty = []
    checked = 0
    for name, build in DASHBOARDS.items():
        for title, expr in queries(build()):
            q = expr
            for macro, value in MACROS.items():
                q = q.replace(macro, value)
            result = _get(prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            assert result["status"] == "success", (title, q, result)
            checked += 1
            if not result["data"]["result"]:
                empty.append(f"{name} / {title}: {q}")
    assert checked >= 40
    assert not empty, "panels without data:\n" + "\n".join(empty)


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _token(base: str, user: str, password: str) -> str:
    req = urllib.request.Request(base + "/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": user, "password": password}).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["access_token"]


def _api(base: str, path: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
