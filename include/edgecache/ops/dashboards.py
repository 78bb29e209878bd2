"""The two Grafana dashboards, built here and written as JSON for Grafana's provisioning.

    python -m edgecache.ops.dashboards        # rewrites monitoring/grafana/dashboards/*.json

"Edge cache" shows the delivery path (hit ratio, requests, latency, prediction time, active
users, origin traffic); "Pipeline" the nightly DAG (Airflow's run and task figures through
StatsD, the batch metrics from the Pushgateway, the federated rounds). A test checks the
committed files equal this output, and another runs every query against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgecache.settings import PROJECT_ROOT

OUT_DIR = PROJECT_ROOT / "monitoring" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
EDGE = 'edge=~"$edge"'
DAG = 'dag_id=~"$dag_id"'
RI = "$__rate_interval"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "instant": instant,
        "range": not instant,
    }


def panel(
    title: str,
    kind: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    description: str = "",
    **options: Any,
) -> dict[str, Any]:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }
    if options:
        p["options"] = options
    return p


def stat(title: str, expr: str, unit: str = "short", description: str = "", w: int = 6) -> dict[str, Any]:
    return panel(
        title,
        "stat",
        [target(expr, instant=True)],
        unit,
        w=w,
        h=4,
        description=description,
        reduceOptions={"calcs": ["lastNotNull"]},
        colorMode="value",
    )


def quantiles(metric: str, by: str = "") -> list[dict[str, Any]]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        target(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{EDGE}}}[{RI}])))",
            f"p{int(q * 100)}{suffix}",
        )
        for q in (0.5, 0.99)
    ]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at Grafana's 24 columns; give each an id."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g.update({"x": x, "y": y})
        x += g["w"]
        row_h = max(row_h, g["h"])
        p["id"] = i
    return panels


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    time_from: str,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["edgecache"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [],
        "panels": layout(panels),
    }


def edge_dashboard() -> dict[str, Any]:
    hits = f"sum(rate(cache_hits_total{{{EDGE}}}[{RI}]))"
    misses = f"sum(rate(cache_misses_total{{{EDGE}}}[{RI}]))"
    panels = [
        stat(
            "Hit ratio",
            f"{hits} / ({hits} + {misses})",
            "percentunit",
            "Requests served from the edge cache, over all selected edges",
        ),
        stat("Requests / s", f"sum(rate(edgecache_delivery_seconds_count{{{EDGE}}}[{RI}]))", "reqps"),
        stat(
            "Active viewers",
            f"sum(edgecache_active_users{{{EDGE}}})",
            "short",
            "Distinct viewers seen in the last 5 minutes",
        ),
        stat("Origin bytes saved / s", f"sum(rate(edgecache_origin_bytes_saved_total{{{EDGE}}}[{RI}]))", "Bps"),
        panel(
            "Hit ratio per edge (5 min)",
            "timeseries",
            [
                target(f"edge:cache_hit_ratio:rate5m{{{EDGE}}}", "{{edge}}"),
                target("edgecache:cache_hit_ratio:rate5m", "all edges"),
            ],
            "percentunit",
            description="Recording rules edge:cache_hit_ratio:rate5m and edgecache:cache_hit_ratio:rate5m",
        ),
        panel(
            "Requests by edge and source",
            "timeseries",
            [
                target(
                    f"sum by (edge, source) (rate(edgecache_delivery_seconds_count{{{EDGE}}}[{RI}]))",
                    "{{edge}} {{source}}",
                )
            ],
            "reqps",
            description="source=edge: a hit served from the cache; source=origin: a miss",
        ),
        panel(
            "Delivery latency",
            "timeseries",
            quantiles("edgecache_delivery_seconds") + quantiles("edgecache_delivery_seconds", "source"),
            "s",
            description="Time to decide and serve one request (origin fetches include the simulated latency)",
        ),
        panel(
            "Prediction time",
            "timeseries",
            quantiles("edgecache_prediction_seconds"),
            "s",
            description="Time to compute a viewer's fresh prediction on a miss",
        ),
        panel(
            "Active viewers per edge", "timeseries", [target(f"edgecache_active_users{{{EDGE}}}", "{{edge}}")], "short"
        ),
        panel(
            "Origin traffic",
            "timeseries",
            [
                target(f"sum(rate(edgecache_origin_bytes_saved_total{{{EDGE}}}[{RI}]))", "saved (served at the edge)"),
                target(f"sum(rate(edgecache_origin_bytes_total{{{EDGE}}}[{RI}]))", "fetched from the origin"),
            ],
            "Bps",
        ),
        panel(
            "Admissions and evictions",
            "timeseries",
            [
                target(f"sum by (edge) (rate(edgecache_admissions_total{{{EDGE}}}[{RI}]))", "admitted {{edge}}"),
                target(f"sum by (edge) (rate(edgecache_evictions_total{{{EDGE}}}[{RI}]))", "evicted {{edge}}"),
            ],
            "ops",
        ),
        panel(
            "Degraded and rejected requests, Redis errors",
            "timeseries",
            [
                target(f"sum by (edge) (rate(edgecache_degraded_requests_total{{{EDGE}}}[{RI}]))", "degraded {{edge}}"),
                target(
                    f"sum by (reason) (rate(edgecache_rejected_requests_total{{{EDGE}}}[{RI}]))", "rejected: {{reason}}"
                ),
                target(f"sum by (edge) (rate(edgecache_redis_errors_total{{{EDGE}}}[{RI}]))", "Redis errors {{edge}}"),
            ],
            "reqps",
            description="Degraded: served from the origin without a decision while Redis is down",
        ),
        panel(
            "Redis up",
            "stat",
            [target(f"edgecache_redis_up{{{EDGE}}}", "{{edge}}", instant=True)],
            "bool_yes_no",
            w=12,
            h=5,
            reduceOptions={"calcs": ["lastNotNull"]},
            colorMode="background",
        ),
        panel(
            "Predictions served: logical date",
            "stat",
            [target(f"edgecache_delivery_warm_date_seconds{{{EDGE}}} * 1000", "{{edge}}", instant=True)],
            "dateTimeAsIsoNoDateIfToday",
            w=12,
            h=5,
            reduceOptions={"calcs": ["lastNotNull"]},
        ),
    ]
    return dashboard(
        "edgecache-edge",
        "Edge cache",
        "The edge delivery path: cache hits, latency, viewers",
        panels,
        [variable("edge", "Edge", "label_values(cache_hits_total, edge)")],
        "now-1h",
    )


def pipeline_dashboard() -> dict[str, Any]:
    mean = "sum by ({by}) ({m}_sum{{{f}}}) / sum by ({by}) ({m}_count{{{f}}})"
    panels = [
        stat(
            "Last run's logical date",
            "max(edgecache_batch_logical_date_seconds) * 1000",
            "dateTimeAsIso",
            "Pushed by push_metrics at the end of each nightly run",
            w=8,
        ),
        stat("Since the last successful run", "time() - max(edgecache_batch_last_success_seconds)", "s", w=8),
        stat(
            "Warm rate (keys / s)",
            'max(edgecache_batch_redis_keys_warmed) / max(edgecache_batch_stage_duration_seconds{stage="warm"})',
            "short",
            "Keys written by the last warm over its wall time",
            w=8,
        ),
        panel(
            "DAG run duration (mean since the exporter started)",
            "barchart",
            [
                target(
                    mean.format(by="dag_id, state", m="airflow_dagrun_duration_seconds", f=DAG),
                    "{{dag_id}} {{state}}",
                    instant=True,
                )
            ],
            "s",
            description="Airflow StatsD dagrun.duration.<state>",
        ),
        panel(
            "DAG runs by outcome",
            "barchart",
            [
                target(
                    f"sum by (dag_id, state) (airflow_dagrun_duration_seconds_count{{{DAG}}})",
                    "{{dag_id}} {{state}}",
                    instant=True,
                )
            ],
            "short",
        ),
        panel(
            "Task duration (mean since the exporter started)",
            "bargauge",
            [target(mean.format(by="task_id", m="airflow_task_duration_seconds", f=DAG), "{{task_id}}", instant=True)],
            "s",
            description="Airflow StatsD task.duration",
        ),
        panel(
            "Task outcomes",
            "bargauge",
            [
                target(
                    f"sum by (task_id, state) (airflow_ti_finish_total{{{DAG}}})", "{{task_id}} {{state}}", instant=True
                )
            ],
            "short",
            description="Airflow StatsD ti.finish",
        ),
        panel(
            "Stage wall time, last run",
            "bargauge",
            [target("max by (stage) (edgecache_batch_stage_duration_seconds)", "{{stage}}", instant=True)],
            "s",
        ),
        panel(
            "Log records, last run",
            "timeseries",
            [
                target("max(edgecache_batch_events_generated)", "generated"),
                target("max(edgecache_batch_records_accepted)", "accepted"),
                target("sum(edgecache_batch_records_quarantined)", "quarantined"),
            ],
            "short",
        ),
        panel(
            "Quarantined records by reason",
            "bargauge",
            [target("max by (reason) (edgecache_batch_records_quarantined)", "{{reason}}", instant=True)],
            "short",
            description="Lines that failed validation, kept with their reason",
        ),
        panel(
            "Predictions and warmed keys",
            "timeseries",
            [
                target("max(edgecache_batch_predictions)", "viewers with a prediction"),
                target("max(edgecache_batch_redis_keys_warmed)", "Redis keys warmed"),
            ],
            "short",
        ),
        panel(
            "Next day's hit ratio of the caches as deployed",
            "bargauge",
            [target("max by (policy, kind) (edgecache_evaluation_hit_ratio)", "{{policy}} ({{kind}})", instant=True)],
            "percentunit",
            description="The evaluation task: day D+1's requests replayed against the caches D's run deployed",
        ),
        panel(
            "Prefetch set per edge",
            "bargauge",
            [
                target("max by (edge) (edgecache_batch_prefetch_bytes)", "{{edge}} set", instant=True),
                target("max by (edge) (edgecache_batch_prefetch_fill_bytes)", "{{edge}} to load", instant=True),
            ],
            "bytes",
        ),
        panel(
            "Federated rounds: wall time and update bytes",
            "barchart",
            [
                target(
                    "max by (round) (edgecache_federated_round_duration_seconds)", "round {{round}} s", instant=True
                ),
                target(
                    "max by (round) (edgecache_federated_round_update_bytes)", "round {{round}} bytes", instant=True
                ),
            ],
            "short",
        ),
        panel(
            "Federated rounds: global model change",
            "barchart",
            [target("max by (round) (edgecache_federated_round_model_change)", "round {{round}}", instant=True)],
            "short",
            description="L2 norm of the global model's change in each round",
        ),
        panel(
            "Federated validation AUC per edge, by round",
            "timeseries",
            [
                target("max by (edge, round) (edgecache_federated_validation_auc)", "{{edge}} round {{round}}"),
                target("max(edgecache_batch_scorer_auc)", "scorer, training day"),
            ],
            "percentunit",
        ),
        panel(
            "Federated validation log-loss per edge, by round",
            "timeseries",
            [target("max by (edge, round) (edgecache_federated_validation_logloss)", "{{edge}} round {{round}}")],
            "short",
        ),
        panel(
            "Scheduler heartbeats / min",
            "timeseries",
            [target(f"sum(rate(airflow_scheduler_heartbeat_total[{RI}])) * 60", "heartbeats / min")],
            "short",
        ),
        panel(
            "Executor slots and tasks",
            "timeseries",
            [target("sum by (kind) (airflow_executor_tasks)", "{{kind}}")],
            "short",
        ),
        panel(
            "DAG parsing",
            "timeseries",
            [
                target("max(airflow_dag_processing_total_parse_time_seconds)", "parse time of all files (s)"),
                target("max(airflow_dag_processing_import_errors)", "import errors"),
                target("max(airflow_dagbag_size)", "DAGs"),
            ],
            "short",
        ),
    ]
    return dashboard(
        "edgecache-pipeline",
        "Pipeline",
        "The nightly DAG: Airflow runs and tasks, batch metrics, federated rounds",
        panels,
        [variable("dag_id", "DAG", "label_values(airflow_ti_finish_total, dag_id)")],
        "now-7d",
    )


DASHBOARDS = {"edge-cache.json": edge_dashboard, "pipeline.json": pipeline_dashboard}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2) + "\n"


def write(out_dir: Path = OUT_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in DASHBOARDS.items():
        (out_dir / name).write_text(render(build))
        paths.append(out_dir / name)
    return paths


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of a dashboard."""
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


if __name__ == "__main__":
    for path in write():
        print(path)
    sys.exit(0)
