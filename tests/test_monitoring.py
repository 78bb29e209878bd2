"""Monitoring as configuration: Prometheus config and rules (promtool), the Grafana dashboards,
the StatsD bridge and its mapping file, and the pieces of `make up` that need no processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from edgecache.ops.dashboards import DASHBOARDS, OUT_DIR, render
from edgecache.serving.redis_conn import redact
from edgecache.ops.stack import Ports, prometheus_config, split_edges
from edgecache.ops.statsd_bridge import BadLine, Bridge, load_mapping, parse_line
from tests.services import require_binary, wait_http

ROOT = Path(__file__).resolve().parents[1]
MON = ROOT / "monitoring"
MAPPING = MON / "statsd_mapping.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool", "prometheus"), *args], capture_output=True, text=True)


# --- Prometheus ------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_promtool_checks_the_committed_configs(config):
    out = promtool("check", "config", str(MON / "prometheus" / config))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_checks_the_rules_and_their_unit_tests():
    rules = sorted(str(p) for p in (MON / "prometheus" / "rules").glob("*.yml"))
    out = promtool("check", "rules", *rules)
    assert out.returncode == 0, out.stdout + out.stderr
    out = promtool("test", "rules", str(MON / "prometheus" / "tests" / "alerts_test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    names = {r.get("alert") for f in rules for g in yaml.safe_load(Path(f).read_text())["groups"] for r in g["rules"]}
    assert {"EdgeCacheHitRatioDrop", "AirflowDagRunFailed", "EdgeDeliveryRedisErrors", "NightlyWarmMissing",
            "LearnedModelLost", "EdgeNotWarm"} <= names


def test_promtool_rejects_a_broken_rule(tmp_path):
    # The check above could pass vacuously if promtool accepted anything.
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - record: a:b\n        expr: sum(rate(x[5m])\n")
    assert promtool("check", "rules", str(bad)).returncode != 0


def test_make_up_config_has_the_ports_in_use_and_passes_promtool(tmp_path):
    ports = Ports(edge=18100, bridge=19102, pushgateway=19091, prometheus=19090)
    doc = prometheus_config(ports, edge_services=2, with_pushgateway=True, scrape_interval="1s")
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert jobs["edge"]["static_configs"][0]["targets"] == ["127.0.0.1:18100", "127.0.0.1:18101"]
    assert jobs["airflow"]["static_configs"][0]["targets"] == ["127.0.0.1:19102"]
    assert jobs["pushgateway"]["honor_labels"] is True and "batch" not in jobs
    assert doc["global"]["scrape_interval"] == "1s"
    assert all(Path(r).is_absolute() and Path(r).exists() for r in doc["rule_files"])
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(doc))
    out = promtool("check", "config", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    without = prometheus_config(ports, 1, with_pushgateway=False)
    assert {j["job_name"] for j in without["scrape_configs"]} == {"edge", "airflow", "batch", "prometheus"}


def test_every_target_is_on_loopback():
    doc = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text())
    targets = [t for j in doc["scrape_configs"] for c in j["static_configs"] for t in c["targets"]]
    assert targets and all(t.startswith("127.0.0.1:") for t in targets)


# --- Grafana -----------------------------------------------------------------------------------

def test_committed_dashboards_are_the_generated_ones():
    for name, build in DASHBOARDS.items():
        assert (OUT_DIR / name).read_text() == render(build), f"run `make dashboards` to refresh {name}"


def test_dashboards_have_the_promised_panels_and_valid_queries():
    edge, pipeline = (json.loads((OUT_DIR / n).read_text()) for n in ("edge-cache.json", "pipeline.json"))
    assert (edge["uid"], edge["title"], pipeline["uid"], pipeline["title"]) == (
        "edgecache-edge", "Edge cache", "edgecache-pipeline", "Pipeline")
    titles = " | ".join(p["title"] for p in edge["panels"]).lower()
    for word in ("hit ratio", "requests", "latency", "prediction time", "active viewers", "origin"):
        assert word in titles
    titles = " | ".join(p["title"] for p in pipeline["panels"]).lower()
    for word in ("dag run", "task duration", "task outcomes", "log records", "quarantined", "predictions",
                 "warm rate", "federated"):
        assert word in titles
    for doc in (edge, pipeline):
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids))
        for p in doc["panels"]:
            assert p["datasource"]["uid"] == "prometheus" and p["targets"]
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_grafana_provisioning_reads_its_urls_from_the_environment():
    ds = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus" and ds["datasources"][0]["url"] == "${PROMETHEUS_URL}"
    prov = yaml.safe_load((MON / "grafana" / "provisioning" / "dashboards" / "edgecache.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "${EDGECACHE_DASHBOARDS_DIR}"


# --- the StatsD bridge ---------------------------------------------------------------------------

def test_parse_line_reads_types_rates_and_both_tag_styles():
    s = parse_line("airflow.ti.finish,dag_id=d,task_id=t,state=success:1|c|@0.5")
    assert (s.name, dict(s.tags), s.kind, s.value) == ("airflow.ti.finish", {"dag_id": "d", "task_id": "t",
                                                                            "state": "success"}, "counter", 2.0)
    assert parse_line("airflow.task.duration:1500|ms").value == 1.5  # milliseconds to seconds
    g = parse_line("airflow.pool.open_slots:-3|g|#pool_name:default")
    assert g.delta and g.value == -3 and dict(g.tags) == {"pool_name": "default"}
    assert not parse_line("airflow.dagbag_size:4|g").delta


@pytest.mark.parametrize("line", ["junk", "a:1", "a:x|c", "a:1|q", "a,k:1|c", "a:1|c|@2", "a:nan|g", ":1|c"])
def test_parse_line_refuses_bad_lines(line):
    with pytest.raises(BadLine):
        parse_line(line)


def test_mapping_gives_names_labels_and_histograms():
    bridge = Bridge(load_mapping(MAPPING))
    for line in ("airflow.dagrun.duration.success,dag_id=d:65000|ms",
                 "airflow.dagrun.duration.failed,dag_id=d:3000|ms",
                 "airflow.ti.finish,dag_id=d,task_id=t,state=success:1|c",
                 "airflow.ti.finish,dag_id=d,task_id=t,state=success:1|c",
                 "airflow.executor.open_slots,executor_class_name=LocalExecutor:32|g",
                 "airflow.some.new_metric:1|c", "not a statsd line"):
        bridge.handle_line(line)
    families = {m.name: m for m in bridge.collect()}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in families.values() for s in m.samples}
    assert samples[("airflow_ti_finish_total", (("dag_id", "d"), ("state", "success"), ("task_id", "t")))] == 2
    assert samples[("airflow_dagrun_duration_seconds_sum", (("dag_id", "d"), ("state", "success")))] == 65
    assert samples[("airflow_dagrun_duration_seconds_bucket", (("dag_id", "d"), ("le", "60.0"),
                                                               ("state", "success")))] == 0
    assert samples[("airflow_dagrun_duration_seconds_bucket", (("dag_id", "d"), ("le", "120.0"),
                                                               ("state", "success")))] == 1
    assert samples[("airflow_executor_tasks", (("executor_class_name", "LocalExecutor"), ("kind", "open_slots")))] == 32
    assert samples[("airflow_some_new_metric_total", ())] == 1  # unmapped: dots become underscores
    assert samples[("statsd_bridge_lines_total", (("outcome", "bad"),))] == 1
    assert samples[("statsd_bridge_lines_total", (("outcome", "ok"),))] == 6


def test_mapping_file_keys_are_all_understood(tmp_path):
    assert len(load_mapping(MAPPING)) >= 20
    bad = tmp_path / "m.yml"
    bad.write_text("mappings:\n  - match: a.*\n    name: a\n    ttl: 5m\n")
    with pytest.raises(ValueError, match="ttl"):
        load_mapping(bad)
    drop = tmp_path / "d.yml"
    drop.write_text("mappings:\n  - match: airflow.*\n    action: drop\n    name: x\n")
    bridge = Bridge(load_mapping(drop))
    bridge.handle_line("airflow.scheduler_heartbeat:1|c")
    assert bridge.lines["dropped"] == 1 and not bridge.families


def test_bridge_process_receives_airflow_statsd_client_metrics(tmp_path):
    """The real bridge process, fed by Airflow's own StatsD logger with tags in InfluxDB form."""
    import statsd

    from airflow._shared.observability.metrics.statsd_logger import get_statsd_logger

    with socket.socket() as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        http_port, udp_port = a.getsockname()[1], b.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "edgecache.cli", "statsd-bridge", "--statsd-port", str(udp_port),
                             "--port", str(http_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{http_port}/metrics"
        wait_http(url)
        logger = get_statsd_logger(stats_class=statsd.StatsClient, host="127.0.0.1", port=udp_port,
                                   prefix="airflow", influxdb_tags_enabled=True, statsd_influxdb_enabled=True)
        tags = {"dag_id": "predictive_caching", "task_id": "spark_features"}
        logger.incr("ti.finish", tags={**tags, "state": "success"})
        logger.timing("task.duration", 2500, tags=tags)
        logger.gauge("dag_processing.import_errors", 0)
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"broken-line", ("127.0.0.1", udp_port))
        deadline = time.monotonic() + 10
        while True:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            if 'outcome="bad"} 1.0' in text and "airflow_task_duration_seconds_count" in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert 'airflow_ti_finish_total{dag_id="predictive_caching",state="success",task_id="spark_features"} 1.0' in text
        assert 'airflow_task_duration_seconds_sum{dag_id="predictive_caching",task_id="spark_features"} 2.5' in text
        assert "airflow_dag_processing_import_errors 0.0" in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- make up's small parts -------------------------------------------------------------------------

def test_split_edges_deals_every_edge_once():
    edges = [f"edge-{i:02d}" for i in range(1, 9)]
    groups = split_edges(edges, 3)
    assert groups == [["edge-01", "edge-04", "edge-07"], ["edge-02", "edge-05", "edge-08"], ["edge-03", "edge-06"]]
    assert split_edges(edges[:2], 5) == [["edge-01"], ["edge-02"]]


def test_ports_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("EDGECACHE_AIRFLOW_PORT", "18080")
    assert Ports.from_env().airflow == 18080 and Ports.from_env().prometheus == 9090


def test_redact_hides_redis_passwords():
    assert redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact("redis://user:pw@h:1/2?cluster=true") == "redis://user:***@h:1/2?cluster=true"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
