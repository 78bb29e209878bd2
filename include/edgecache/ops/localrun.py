"""``make run``: one nightly run of the DAG on this machine, then a summary.

Prepares a project-local Airflow home (SQLite, no example DAGs), starts the embedded Redis
unless ``REDIS_URL`` is set, passes the ``spark_default`` and ``redis_default`` connections
as environment variables (JSON form), runs ``airflow dags test predictive_caching <date>``
and prints what the run produced.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from edgecache.layout import Layout, read_json
from edgecache.ops.push_metrics import pushgateway_conn_json, read_reports
from edgecache.ops.redis_server import EmbeddedRedis
from edgecache.pipeline.java import require_java
from edgecache.serving.keys import LAST_WARM_KEY, user_key, user_topk_key
from edgecache.serving.redis_conn import Client, connect, split_cluster_flag
from edgecache.settings import PROJECT_ROOT, Settings

DAG_ID = "predictive_caching"


def spark_conn_json(master: str) -> str:
    # JSON form: the URI form misparses local[*] and the hook then falls back to yarn.
    return json.dumps({"conn_type": "spark", "host": master})


def redis_conn_json(url: str) -> str:
    plain, cluster = split_cluster_flag(url)
    u = urlparse(plain)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must start with redis:// or rediss://, got {url!r}")
    extra: dict[str, Any] = {"db": int(u.path.lstrip("/") or 0)}
    if cluster:  # the Redis provider's hook opens a RedisCluster (database 0 only)
        extra = {"cluster": True}
    if u.scheme == "rediss":
        extra["ssl"] = True
    conn: dict[str, Any] = {
        "conn_type": "redis",
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 6379,
        "extra": extra,
    }
    if u.password:
        conn["password"] = unquote(u.password)
    if u.username:
        conn["login"] = unquote(u.username)
    return json.dumps(conn)


def airflow_env(settings: Settings, redis_url: str, airflow_home: Path) -> dict[str, str]:
    """The environment for Airflow commands: project-local home, DAGs and connections."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "EDGECACHE_DATA_DIR": str(settings.data_dir),
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
        }
    )
    env.setdefault("AIRFLOW_CONN_SPARK_DEFAULT", spark_conn_json(settings.spark_master))
    env.setdefault("AIRFLOW_CONN_REDIS_DEFAULT", redis_conn_json(redis_url))
    if env.get("PUSHGATEWAY_URL"):
        env.setdefault("AIRFLOW_CONN_PUSHGATEWAY_DEFAULT", pushgateway_conn_json(env["PUSHGATEWAY_URL"]))
    return env


def airflow(args: list[str], env: dict[str, str], log: Path | None = None) -> None:
    """Run an ``airflow`` command; on failure show the end of its output and raise."""
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
    if out.returncode != 0:
        tail = "\n".join(text.splitlines()[-60:])
        where = f" (full log: {log})" if log else ""
        raise RuntimeError(f"`airflow {' '.join(args)}` failed with exit {out.returncode}{where}:\n{tail}")


def task_durations(env: dict[str, str], date: str, started: dt.datetime | None = None) -> dict[str, dict[str, Any]]:
    """State and wall time of each task of the DAG run for ``date``, from the metadata DB.

    ``started``: when the run really began. ``airflow dags test`` dates a run's start at its
    logical date, so the UI would show a run of last year as lasting a year; the run's
    start is set to ``started`` instead (when it is earlier than that)."""
    code = f"""
import datetime as dt
import json
from sqlalchemy import select
from airflow.models import DagRun, TaskInstance
from airflow.utils.session import create_session
started = {started.isoformat() if started else None!r}
with create_session() as s:
    run = s.scalars(select(DagRun).where(DagRun.dag_id == {DAG_ID!r})
                    .order_by(DagRun.id.desc())).all()
    run = [r for r in run if r.logical_date and r.logical_date.date().isoformat() == {date!r}][0]
    if started and (run.start_date is None or run.start_date < dt.datetime.fromisoformat(started)):
        run.start_date = dt.datetime.fromisoformat(started)
    tis = s.scalars(select(TaskInstance).where(TaskInstance.dag_id == {DAG_ID!r},
                                               TaskInstance.run_id == run.run_id)).all()
    print(json.dumps({{ti.task_id: {{"state": str(ti.state), "seconds": ti.duration,
                       "start": ti.start_date.isoformat() if ti.start_date else None}} for ti in tis}}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(date: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the DAG once for ``date`` and return the summary's figures."""
    require_java()
    settings = Settings.from_env()
    local = settings.local_dir
    started = time.perf_counter()
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(local / "redis")
        embedded.start()
        redis_url = embedded.url
    env = airflow_env(settings, redis_url, local / "airflow")
    print(f"[run] Airflow home {env['AIRFLOW_HOME']}, Redis {redis_url}, Spark {settings.spark_master}")
    print("[run] preparing the Airflow metadata DB (airflow db migrate)")
    airflow(["db", "migrate"], env, local / "logs" / "db-migrate.log")
    args = ["dags", "test", DAG_ID, date]
    if conf:
        args += ["--conf", json.dumps(conf)]
    log = local / "logs" / f"dags-test-{date}.log"
    print(f"[run] airflow {' '.join(args)}   (log: {log})")
    began = dt.datetime.now(dt.UTC)
    airflow(args, env, log)
    durations = task_durations(env, date, began)
    # One of generate_logs and ingest_logs is skipped by the branch on the source.
    failed = {t: d["state"] for t, d in durations.items() if d["state"] not in ("success", "skipped")}
    if failed:
        raise RuntimeError(f"tasks did not succeed: {failed} (log: {log})")
    summary = collect_summary(settings.data_dir, date, connect(redis_url, decode_responses=True))
    summary["tasks"] = durations
    summary["redis_url"] = redis_url
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    summary["log"] = str(log)
    return summary


def collect_summary(data_dir: Path, date: str, client: Client) -> dict[str, Any]:
    layout = Layout(data_dir)
    reports = read_reports(layout, date)
    gen = reports.get("generate") or reports.get("ingest") or {}
    feat, pred, warm = (reports.get(s, {}) for s in ("features", "predict", "warm"))
    import pyarrow.parquet as pq

    first = pq.read_table(layout.predictions(date, "users"), columns=["user_id"]).column(0)
    sample_user = min(first.to_pylist()) if len(first) else None
    sample = None
    if sample_user is not None:
        sample = {
            "key": user_key(sample_user),
            "value": client.get(user_key(sample_user)),
            "topk": client.get(user_topk_key(sample_user)),
        }
    evaluation = layout.evaluation(date) / "report.json"
    hit_ratios = None
    if evaluation.exists():
        titles = read_json(evaluation)["results"]["titles"]
        pct = "10" if "10" in titles.get("LRU", {}) else next(iter(titles.get("LRU", {})), None)
        hit_ratios = {
            "pct": pct,
            **{n: v[pct]["object_hit_ratio"] for n, v in titles.items() if pct and v.get(pct) is not None},
        }
    return {
        "date": date,
        "hit_ratios": hit_ratios,
        "events": gen.get("lines"),
        "users": gen.get("users"),
        "active_users": feat.get("active_users"),
        "edges": gen.get("edges"),
        "accepted": feat.get("accepted"),
        "quarantined": feat.get("quarantined"),
        "duplicates": feat.get("duplicates"),
        "quarantined_by_reason": feat.get("quarantined_by_reason"),
        "predictions": pred.get("predictions"),
        "model": pred.get("model"),
        "trained_on": (pred.get("training") or {}).get("trained_on"),
        "federated": federated_line((pred.get("training") or {}).get("federated")),
        "gate": gate_line(pred.get("gate")),
        "redis_keys_written": warm.get("keys_written"),
        "last_warm": client.hgetall(LAST_WARM_KEY),
        "sample": sample,
        "outputs": {
            "logs": str(layout.logs(date)),
            "quarantine": str(layout.quarantine(date)),
            "features": str(layout.features(date, "")),
            "predictions": str(layout.predictions(date, "")),
            "reports": str(layout.report(date, "x").parent),
            "metrics": str(layout.metrics_file),
            "evaluation": str(layout.evaluation(date)),
        },
    }


def gate_line(gate: dict[str, Any] | None) -> str | None:
    """One line on the model gate: per stage, what it deployed and each candidate's figure."""
    verdicts = {k: v for k, v in (gate or {}).items() if isinstance(v, dict) and "chosen" in v}
    if not verdicts:
        return (gate or {}).get("skipped")
    parts = []
    for stage, v in verdicts.items():
        figures = ", ".join(f"{m} {x:.3f}" for m, x in sorted(v["figures"].items(), key=lambda kv: -kv[1]))
        rejected = "".join(f"; {m} rejected: {why}" for m, why in v["rejected"].items())
        parts.append(f"{stage}: {v['chosen']} ({v['metric']} {figures}{rejected})")
    return "; ".join(parts)


def federated_line(fed: dict[str, Any] | None) -> str | None:
    """One line on the federated training: rounds, edges, bytes and held-out log-loss."""
    if not fed or not fed.get("rounds"):
        return None
    from edgecache.federated.training import held_out_logloss

    first, last = held_out_logloss(fed["rounds"][0]), held_out_logloss(fed["rounds"][-1])
    line = (
        f"{len(fed['rounds'])} rounds over {len(fed['edges'])} edges, {fed['update_bytes_per_round']} bytes"
        " of updates a round"
    )
    if first is not None and last is not None:
        line += f", held-out log-loss {first:.3f} -> {last:.3f}"
    if fed.get("epsilon_spent") is not None:
        line += f", epsilon {fed['epsilon_spent']:.2f}"
    return line


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        "",
        f"=== predictive_caching run for {s['date']}: done in {s['total_seconds']} s ===",
        f"log lines            {s['events']}  ({s['accepted']} accepted, {s['duplicates']} duplicates, "
        f"{s['quarantined']} quarantined"
        f" {s['quarantined_by_reason']})",
        f"users / edges        {s['users']} users ({s['active_users']} active today) at {s['edges']} edges",
        f"predictions written  {s['predictions']}  (model: {s['model']}"
        + (
            f", trained on the features of {s['trained_on']['features']} against {s['trained_on']['labels']})"
            if s.get("trained_on")
            else ")"
        ),
        f"redis keys written   {s['redis_keys_written']}  at {s['redis_url']}",
    ]
    if s.get("federated"):
        lines.insert(-1, f"federated training   {s['federated']}")
    if s.get("gate"):
        lines.insert(-1, f"model gate           {s['gate']}")
    if s["sample"]:
        lines.append(f"sample               GET {s['sample']['key']} -> {s['sample']['value']!r}")
        lines.append(f"                     GET {s['sample']['key']}:topk -> {s['sample']['topk']}")
    if s.get("hit_ratios"):
        h = dict(s["hit_ratios"])
        pct = h.pop("pct")
        lines.append(
            f"hit ratio next day   at {pct} % of the titles: " + ", ".join(f"{n} {v:.3f}" for n, v in h.items())
        )
    lines.append("wall time per task:")
    for task, d in sorted(s["tasks"].items(), key=lambda kv: kv[1]["start"] or ""):
        secs = d["seconds"]
        lines.append(
            f"  {task:<16} {secs:7.1f} s  {d['state']}" if secs is not None else f"  {task:<16}       -    {d['state']}"
        )
    lines.append("outputs:")
    for name, path in s["outputs"].items():
        lines.append(f"  {name:<12} {path}")
    lines.append(f"airflow log: {s['log']}")
    return "\n".join(lines)
