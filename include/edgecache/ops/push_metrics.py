"""Batch metrics of one nightly run, pushed to a Pushgateway or written as a text file."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from edgecache.layout import Layout, read_json

JOB = "edgecache_batch"
# The Airflow connection the DAG pushes to (an HTTP connection: host, port, schema as the
# scheme). Without it the task falls back to $PUSHGATEWAY_URL, then to the text file.
PUSHGATEWAY_CONN_ID = "pushgateway_default"
STAGES = ("generate", "ingest", "next_day_logs", "features", "predict", "warm")


def read_reports(layout: Layout, date: str) -> dict[str, dict[str, Any]]:
    """The stage reports of day ``date`` that exist, and the evaluation's report as
    ``evaluate`` when the evaluation ran (it may not have: with your own logs it waits for
    D+1's)."""
    reports = {s: read_json(layout.report(date, s)) for s in STAGES if layout.report(date, s).exists()}
    evaluation = layout.evaluation(date) / "report.json"
    if evaluation.exists():
        reports["evaluate"] = read_json(evaluation)
    return reports


def batch_registry(reports: dict[str, dict[str, Any]], date: str) -> CollectorRegistry:
    """A registry holding the run's figures as gauges (they describe the last run)."""
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None, **labels: str) -> None:
        if value is None:
            return
        g = Gauge(name, doc, list(labels), registry=reg)
        (g.labels(**labels) if labels else g).set(value)

    gen = reports.get("generate") or reports.get("ingest") or {}
    feat, pred, warm = (reports.get(s, {}) for s in ("features", "predict", "warm"))
    gauge("edgecache_batch_events_generated", "Log lines generated (or ingested) for the day", gen.get("lines"))
    gauge("edgecache_batch_records_accepted", "Log records that passed validation", feat.get("accepted"))
    gauge("edgecache_batch_records_duplicate", "Exact duplicate log records dropped", feat.get("duplicates"))
    q = Gauge("edgecache_batch_records_quarantined", "Log lines quarantined, by reason", ["reason"], registry=reg)
    for reason, n in feat.get("quarantined_by_reason", {}).items():
        q.labels(reason=reason).set(n)
    gauge("edgecache_batch_predictions", "Viewers with a prediction", pred.get("predictions"))
    fill = Gauge(
        "edgecache_batch_prefetch_fill_bytes",
        "Bytes each edge must load for its new prefetch set (titles not in yesterday's)",
        ["edge"],
        registry=reg,
    )
    for edge, f in (pred.get("fill_traffic") or {}).items():
        fill.labels(edge=edge).set(f["fill_bytes"])
    size = Gauge("edgecache_batch_prefetch_bytes", "Bytes of each edge's prefetch set", ["edge"], registry=reg)
    for edge, b in (pred.get("prefetch_bytes_per_edge") or {}).items():
        size.labels(edge=edge).set(b)
    gauge(
        "edgecache_batch_scorer_auc",
        "ROC AUC of the scorer on its training day",
        (pred.get("training") or {}).get("scorer_auc_training_day"),
    )
    federated_gauges(reg, (pred.get("training") or {}).get("federated"))
    gate_gauges(reg, pred.get("gate"))
    gauge("edgecache_batch_redis_keys_warmed", "Redis keys written by the warm", warm.get("keys_written"))
    evaluation_gauges(reg, reports.get("evaluate"))
    d = Gauge("edgecache_batch_stage_duration_seconds", "Wall time of each stage", ["stage"], registry=reg)
    for stage, rep in reports.items():
        if stage in STAGES:
            d.labels(stage=stage).set(rep.get("wall_seconds", 0.0))
    day = dt.datetime.combine(dt.date.fromisoformat(date), dt.time(), tzinfo=dt.UTC)
    gauge("edgecache_batch_logical_date_seconds", "Logical date of the last run (Unix time)", day.timestamp())
    gauge("edgecache_batch_last_success_seconds", "When the last run pushed its metrics", time.time())
    return reg


def evaluation_gauges(reg: CollectorRegistry, report: dict[str, Any] | None) -> None:
    """The evaluation's verdict on the caches as deployed: D+1's requests replayed against
    D's prefetch sets, each policy's object and byte hit ratio, and the requests replayed."""
    deployed = (report or {}).get("deployed") or {}
    if not deployed.get("policies"):
        return
    ratio = Gauge(
        "edgecache_evaluation_hit_ratio",
        "Hit ratio of the caches as deployed on the next day's requests, by policy and kind (object or byte)",
        ["policy", "kind"],
        registry=reg,
    )
    for policy, figures in deployed["policies"].items():
        for kind in ("object", "byte"):
            if figures.get(f"{kind}_hit_ratio") is not None:
                ratio.labels(policy=policy, kind=kind).set(figures[f"{kind}_hit_ratio"])
    if report and report.get("requests_replayed") is not None:
        Gauge("edgecache_evaluation_requests", "Requests of the next day replayed by the evaluation", registry=reg).set(
            report["requests_replayed"]
        )


def gate_gauges(reg: CollectorRegistry, gate: dict[str, Any] | None) -> None:
    """The model gate's choice and figures: ``edgecache_model_selected`` is 1 for the model
    deployed for each stage (prefetch sets, viewer lists) and 0 for every other candidate,
    rejected ones included, so an alert can see the learned model lose."""
    verdicts = {k: v for k, v in (gate or {}).items() if isinstance(v, dict) and "chosen" in v}
    if not verdicts:
        return
    selected = Gauge(
        "edgecache_model_selected",
        "1 for the model the nightly gate deployed, 0 for the other candidates",
        ["stage", "model"],
        registry=reg,
    )
    figure = Gauge(
        "edgecache_gate_validation_score",
        "Each candidate's figure on the latest labelled day (prefetch: object hit ratio at capacity; lists: hit@10)",
        ["stage", "model", "metric"],
        registry=reg,
    )
    rejected = Gauge(
        "edgecache_gate_rejected",
        "1 for a candidate fit rejected as degenerate, by reason",
        ["stage", "model", "reason"],
        registry=reg,
    )
    for stage, v in verdicts.items():
        for model in sorted({*v["figures"], *v["rejected"]}):
            selected.labels(stage=stage, model=model).set(1.0 if model == v["chosen"] else 0.0)
        for model, value in v["figures"].items():
            figure.labels(stage=stage, model=model, metric=v["metric"]).set(value)
        for model, reason in v["rejected"].items():
            rejected.labels(stage=stage, model=model, reason=reason).set(1.0)


def federated_gauges(reg: CollectorRegistry, fed: dict[str, Any] | None) -> None:
    """The federated training's figures: per round its wall time, bytes received and model
    change; per edge, the held-out log-loss and AUC of each round's model; the privacy spent."""
    if not fed:
        return
    labels = {"round": ["round"], "edge": ["round", "edge"]}
    seconds = Gauge(
        "edgecache_federated_round_duration_seconds", "Wall time of each federated round", labels["round"], registry=reg
    )
    sent = Gauge(
        "edgecache_federated_round_update_bytes",
        "Bytes of model updates the server received in each round",
        labels["round"],
        registry=reg,
    )
    change = Gauge(
        "edgecache_federated_round_model_change",
        "L2 norm of the global model's change in each round",
        labels["round"],
        registry=reg,
    )
    loss = Gauge(
        "edgecache_federated_validation_logloss",
        "Held-out log-loss at each edge of the model it was sent in each round",
        labels["edge"],
        registry=reg,
    )
    auc = Gauge(
        "edgecache_federated_validation_auc",
        "Held-out ROC AUC at each edge of the model it was sent in each round",
        labels["edge"],
        registry=reg,
    )
    for r in fed["rounds"]:
        n = str(r["round"])
        seconds.labels(round=n).set(r["seconds"])
        sent.labels(round=n).set(r["update_bytes"])
        change.labels(round=n).set(r["change"])
        for edge, v in r["validation"].items():
            if v.get("logloss") is not None:
                loss.labels(round=n, edge=edge).set(v["logloss"])
            if v.get("auc") is not None:
                auc.labels(round=n, edge=edge).set(v["auc"])
    Gauge("edgecache_federated_rounds", "Federated rounds of the last training", registry=reg).set(len(fed["rounds"]))
    if fed.get("epsilon_spent") is not None:
        Gauge(
            "edgecache_federated_epsilon_spent",
            "Client-level differential privacy epsilon spent (at delta)",
            registry=reg,
        ).set(fed["epsilon_spent"])


def pushgateway_conn_json(url: str) -> str:
    """The Pushgateway at ``url`` as an Airflow connection, in the JSON form that an
    ``AIRFLOW_CONN_PUSHGATEWAY_DEFAULT`` variable takes."""
    u = urlsplit(url)
    if not u.hostname:
        raise ValueError(f"not a Pushgateway URL: {url!r} (expected e.g. http://127.0.0.1:9091)")
    conn: dict[str, Any] = {"conn_type": "http", "host": u.hostname, "schema": u.scheme or "http"}
    if u.port:
        conn["port"] = u.port
    return json.dumps(conn)


def connection_url(host: str, port: int | None, schema: str | None) -> str:
    """The Pushgateway URL an HTTP connection describes (a host given with its scheme is kept)."""
    base = host if "://" in host else f"{schema or 'http'}://{host}"
    return f"{base}:{port}" if port else base


def pushgateway_target() -> str | None:
    """Where the DAG's push goes: the Pushgateway of the Airflow connection
    ``pushgateway_default``, else ``$PUSHGATEWAY_URL``, else None (a text file)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from edgecache.settings import Settings

    try:
        conn = BaseHook.get_connection(PUSHGATEWAY_CONN_ID)
    except AirflowNotFoundException:
        return Settings.from_env().pushgateway_url
    return connection_url(conn.host or "", conn.port, conn.schema)


def push_metrics(data_dir: Path, date: str, pushgateway_url: str | None) -> dict[str, Any]:
    """Push the run's metrics, or write them to ``metrics/batch.prom``; say where they went."""
    layout = Layout(data_dir)
    reports = read_reports(layout, date)
    if not reports:
        raise FileNotFoundError(f"no stage reports for {date} under {layout.root / 'reports'}")
    reg = batch_registry(reports, date)
    if pushgateway_url:
        push_to_gateway(pushgateway_url, job=JOB, registry=reg)
        target = pushgateway_url
    else:
        layout.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(layout.metrics_file), reg)
        target = str(layout.metrics_file)
    return {"stages": sorted(reports), "target": target}
